/**
 * Server-side key backup (`/room_keys/version`, `/room_keys/keys` in its three scopes) over raw
 * HTTP, every error path included; the answers Element X's encryption bootstrap expects around
 * login; then matrix-js-sdk with its Rust crypto resetting the backup and backing up the room
 * key of a message it sends.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { quietSdkLogs } from "./helpers/matrix-sdk.js";
import { assertError, ok, User } from "./helpers/rooms.js";
import { SdkClients } from "./helpers/sdk_clients.js";
import { request, startServer, type TestServer } from "./helpers/server.js";

type Json = Record<string, unknown>;
const ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2";

let server: TestServer;
let n = 0;

before(async () => {
  server = await startServer();
});
after(async () => server?.stop());

const user = () => User.register(server.baseUrl, `backup${++n}`);
const enc = encodeURIComponent;

const createVersion = async (u: User, authData: Json = { public_key: "pk" }) =>
  (ok(await u.req("POST", "/room_keys/version", { algorithm: ALGORITHM, auth_data: authData })) as { version: string }).version;

function keyData(firstMessageIndex: number, forwardedCount: number, isVerified: boolean, tag = "x"): Json {
  return { first_message_index: firstMessageIndex, forwarded_count: forwardedCount, is_verified: isVerified, session_data: { ciphertext: tag } };
}

const sessionPath = (version: string, roomId: string, sessionId: string) => `/room_keys/keys/${enc(roomId)}/${enc(sessionId)}?version=${version}`;

describe("backup versions", () => {
  test("with no backup every read answers 404 M_NOT_FOUND", async () => {
    const alice = await user();
    assertError(await alice.req("GET", "/room_keys/version"), 404, "M_NOT_FOUND");
    assertError(await alice.req("GET", "/room_keys/version/1"), 404, "M_NOT_FOUND");
    assertError(await alice.req("GET", "/room_keys/version/notanumber"), 404, "M_NOT_FOUND");
    assertError(await alice.req("PUT", "/room_keys/version/1", { algorithm: ALGORITHM, auth_data: {} }), 404, "M_NOT_FOUND");
    assertError(await alice.req("DELETE", "/room_keys/version/1"), 404, "M_NOT_FOUND");
    assertError(await alice.req("GET", "/room_keys/keys?version=1"), 404, "M_NOT_FOUND");
    assertError(await alice.req("PUT", "/room_keys/keys?version=1", { rooms: {} }), 404, "M_NOT_FOUND");
    assertError(await alice.req("DELETE", "/room_keys/keys?version=1"), 404, "M_NOT_FOUND");
  });

  test("create, read (latest and by number), update auth_data, delete; numbers are never reused", async () => {
    const alice = await user();
    const bob = await user();
    assert.equal(await createVersion(alice, { public_key: "one" }), "1");
    const latest = ok(await alice.req("GET", "/room_keys/version"));
    assert.deepEqual(latest, { algorithm: ALGORITHM, auth_data: { public_key: "one" }, count: 0, etag: "0", version: "1" });
    assert.deepEqual(ok(await alice.req("GET", "/room_keys/version/1")), latest);
    assertError(await bob.req("GET", "/room_keys/version"), 404, "M_NOT_FOUND");

    assert.equal(await createVersion(alice, { public_key: "two" }), "2");
    assert.equal((ok(await alice.req("GET", "/room_keys/version")) as { version: string }).version, "2");
    assert.deepEqual(ok(await alice.req("PUT", "/room_keys/version/2", { algorithm: ALGORITHM, auth_data: { public_key: "two", signatures: {} } })), {});
    assert.deepEqual((ok(await alice.req("GET", "/room_keys/version/2")) as Json).auth_data, { public_key: "two", signatures: {} });
    ok(await alice.req("PUT", "/room_keys/version/2", { algorithm: ALGORITHM, auth_data: {}, version: "2" }));
    assertError(await alice.req("PUT", "/room_keys/version/2", { algorithm: "org.example.other", auth_data: {} }), 400, "M_INVALID_PARAM");
    assertError(await alice.req("PUT", "/room_keys/version/2", { algorithm: ALGORITHM, auth_data: {}, version: "1" }), 400, "M_INVALID_PARAM");
    assertError(await alice.req("PUT", "/room_keys/version/9", { algorithm: ALGORITHM, auth_data: {} }), 404, "M_NOT_FOUND");
    assertError(await bob.req("DELETE", "/room_keys/version/2"), 404, "M_NOT_FOUND");

    assert.deepEqual(ok(await alice.req("DELETE", "/room_keys/version/2")), {});
    assertError(await alice.req("GET", "/room_keys/version/2"), 404, "M_NOT_FOUND");
    assertError(await alice.req("DELETE", "/room_keys/version/2"), 404, "M_NOT_FOUND");
    assert.equal((ok(await alice.req("GET", "/room_keys/version")) as { version: string }).version, "1", "the older version is current again");
    assert.equal(await createVersion(alice), "3");
  });

  test("bad requests: missing or malformed fields, no token", async () => {
    const alice = await user();
    assertError(await alice.req("POST", "/room_keys/version", { auth_data: {} }), 400, "M_MISSING_PARAM");
    assertError(await alice.req("POST", "/room_keys/version", { algorithm: ALGORITHM, auth_data: "no" }), 400, "M_BAD_JSON");
    const raw = await request(server.baseUrl, "POST", "/_matrix/client/v3/room_keys/version", { token: alice.token, body: "{not json" });
    assertError(raw, 400, "M_NOT_JSON");
    assertError(await request(server.baseUrl, "GET", "/_matrix/client/v3/room_keys/version"), 401, "M_MISSING_TOKEN");
    const version = await createVersion(alice);
    assertError(await alice.req("GET", "/room_keys/keys"), 400, "M_MISSING_PARAM");
    assertError(await alice.req("PUT", "/room_keys/keys", { rooms: {} }), 400, "M_MISSING_PARAM");
    const path = sessionPath(version, "!r:localhost", "s");
    assertError(await alice.req("PUT", path, { ...keyData(0, 0, false), is_verified: "yes" }), 400, "M_BAD_JSON");
    assertError(await alice.req("PUT", path, { ...keyData(0, 0, false), first_message_index: -1 }), 400, "M_BAD_JSON");
    assertError(await alice.req("PUT", path, { first_message_index: 0, forwarded_count: 0, is_verified: false }), 400, "M_MISSING_PARAM");
    assertError(await alice.req("PUT", `/room_keys/keys?version=${version}`, { rooms: { "!r:localhost": { sessions: { s: "no" } } } }), 400, "M_BAD_JSON");
  });
});

describe("backed-up keys", () => {
  test("keys go only into the current version: 403 M_WRONG_ROOM_KEYS_VERSION with the current one otherwise", async () => {
    const alice = await user();
    await createVersion(alice);
    const current = await createVersion(alice);
    const body = { rooms: { "!r:localhost": { sessions: { s1: keyData(0, 0, false) } } } };
    const wrong = await alice.req("PUT", "/room_keys/keys?version=1", body);
    assertError(wrong, 403, "M_WRONG_ROOM_KEYS_VERSION");
    assert.equal(wrong.body.current_version, current);
    assertError(await alice.req("PUT", "/room_keys/keys?version=7", body), 403, "M_WRONG_ROOM_KEYS_VERSION");
    assertError(await alice.req("PUT", sessionPath("1", "!r:localhost", "s1"), keyData(0, 0, false)), 403, "M_WRONG_ROOM_KEYS_VERSION");
    assert.deepEqual(ok(await alice.req("PUT", `/room_keys/keys?version=${current}`, body)), { etag: "1", count: 1 });
    // An older version can still be read (it is empty) but not written.
    assert.deepEqual(ok(await alice.req("GET", "/room_keys/keys?version=1")), { rooms: {} });
    assertError(await alice.req("GET", "/room_keys/keys?version=9"), 404, "M_NOT_FOUND");
  });

  test("the three scopes: put, get and delete a session, a room, everything; etag and count follow", async () => {
    const alice = await user();
    const v = await createVersion(alice);
    const r1 = "!one:localhost";
    const r2 = "!two:localhost";
    assert.deepEqual(ok(await alice.req("PUT", sessionPath(v, r1, "a"), keyData(0, 0, false, "a"))), { etag: "1", count: 1 });
    assert.deepEqual(ok(await alice.req("PUT", `/room_keys/keys/${enc(r1)}?version=${v}`, { sessions: { b: keyData(1, 0, false, "b") } })), {
      etag: "2",
      count: 2,
    });
    assert.deepEqual(
      ok(await alice.req("PUT", `/room_keys/keys?version=${v}`, { rooms: { [r2]: { sessions: { c: keyData(2, 1, true, "c"), d: keyData(0, 0, false, "d") } } } })),
      { etag: "3", count: 4 },
    );
    assert.deepEqual(ok(await alice.req("GET", sessionPath(v, r1, "a"))), keyData(0, 0, false, "a"));
    assert.deepEqual(ok(await alice.req("GET", `/room_keys/keys/${enc(r1)}?version=${v}`)), { sessions: { a: keyData(0, 0, false, "a"), b: keyData(1, 0, false, "b") } });
    assert.deepEqual(ok(await alice.req("GET", `/room_keys/keys?version=${v}`)), {
      rooms: {
        [r1]: { sessions: { a: keyData(0, 0, false, "a"), b: keyData(1, 0, false, "b") } },
        [r2]: { sessions: { c: keyData(2, 1, true, "c"), d: keyData(0, 0, false, "d") } },
      },
    });
    assert.deepEqual(ok(await alice.req("GET", `/room_keys/keys/${enc("!none:localhost")}?version=${v}`)), { sessions: {} });
    assertError(await alice.req("GET", sessionPath(v, r1, "nosuch")), 404, "M_NOT_FOUND");
    const info = ok(await alice.req("GET", "/room_keys/version")) as { etag: string; count: number };
    assert.deepEqual([info.etag, info.count], ["3", 4]);

    assert.deepEqual(ok(await alice.req("DELETE", sessionPath(v, r1, "a"))), { etag: "4", count: 3 });
    assert.deepEqual(ok(await alice.req("DELETE", `/room_keys/keys/${enc(r2)}?version=${v}`)), { etag: "5", count: 1 });
    assert.deepEqual(ok(await alice.req("GET", `/room_keys/keys?version=${v}`)), { rooms: { [r1]: { sessions: { b: keyData(1, 0, false, "b") } } } });
    assert.deepEqual(ok(await alice.req("DELETE", `/room_keys/keys?version=${v}`)), { etag: "6", count: 0 });
    assertError(await alice.req("DELETE", "/room_keys/keys?version=99"), 404, "M_NOT_FOUND");
    // Deleting the version deletes its keys.
    ok(await alice.req("PUT", sessionPath(v, r1, "e"), keyData(0, 0, false)));
    ok(await alice.req("DELETE", `/room_keys/version/${v}`));
    assertError(await alice.req("GET", `/room_keys/keys?version=${v}`), 404, "M_NOT_FOUND");
  });

  test("a stored key is replaced only by a better one: verified, then lower first index, then lower forwarded count", async () => {
    const alice = await user();
    const v = await createVersion(alice);
    const path = sessionPath(v, "!r:localhost", "s");
    const put = async (data: Json) => ok(await alice.req("PUT", path, data)) as { etag: string; count: number };
    const stored = async () => ok(await alice.req("GET", path));

    await put(keyData(5, 2, false, "first"));
    const cases: [Json, string][] = [
      [keyData(5, 2, false, "tie"), "first"], // equal on everything: kept
      [keyData(6, 0, false, "later index"), "first"], // a higher index decrypts less
      [keyData(5, 3, false, "more forwarded"), "first"],
      [keyData(5, 1, false, "less forwarded"), "less forwarded"],
      [keyData(4, 9, false, "lower index"), "lower index"], // the index counts before the forwarded count
      [keyData(9, 9, true, "verified"), "verified"], // verified beats everything
      [keyData(0, 0, false, "unverified"), "verified"], // an unverified key never replaces a verified one
      [keyData(8, 9, true, "verified, lower index"), "verified, lower index"],
    ];
    let etag = (await put(keyData(5, 2, false, "first"))).etag;
    for (const [data, expected] of cases) {
      const res = await put(data);
      assert.equal(((await stored()).session_data as Json).ciphertext, expected, JSON.stringify(data));
      assert.equal(res.count, 1);
      // The etag moves exactly when the stored key changed.
      assert.equal(res.etag !== etag, expected === (data.session_data as Json).ciphertext, `etag for ${JSON.stringify(data)}`);
      etag = res.etag;
    }
  });

  test("concurrent writers: every upload lands and counts the etag up once; concurrent creations get distinct numbers", async () => {
    const alice = await user();
    const v = await createVersion(alice);
    const replies = await Promise.all(
      Array.from({ length: 12 }, (_, i) => alice.req("PUT", sessionPath(v, "!r:localhost", `s${i}`), keyData(0, 0, false))),
    );
    const etags = replies.map((r) => (ok(r) as { etag: string }).etag);
    assert.equal(new Set(etags).size, 12, "each upload changed the version once");
    assert.deepEqual(
      [...etags].map(Number).sort((a, b) => a - b),
      Array.from({ length: 12 }, (_, i) => i + 1),
    );
    const info = ok(await alice.req("GET", "/room_keys/version")) as { etag: string; count: number };
    assert.deepEqual([info.etag, info.count], ["12", 12]);

    const bob = await user();
    const versions = await Promise.all(Array.from({ length: 6 }, () => createVersion(bob)));
    assert.deepEqual([...versions].sort((a, b) => Number(a) - Number(b)), ["1", "2", "3", "4", "5", "6"]);
  });
});

describe("what Element X asks around login", () => {
  test("password login listed, OAuth discovery unrecognised, missing account data not found", async () => {
    const alice = await user();
    const flows = ok(await request(server.baseUrl, "GET", "/_matrix/client/v3/login")) as { flows: { type: string }[] };
    assert.ok(flows.flows.some((f) => f.type === "m.login.password"));
    for (const path of [
      "/_matrix/client/v1/auth_metadata",
      "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
      "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer",
    ]) {
      assertError(await request(server.baseUrl, "GET", path), 404, "M_UNRECOGNIZED");
      assertError(await request(server.baseUrl, "GET", path, { token: alice.token }), 404, "M_UNRECOGNIZED");
    }
    for (const type of ["m.secret_storage.default_key", "m.key_backup", "m.org.matrix.custom.backup_disabled"]) {
      assertError(await alice.req("GET", `/user/${enc(alice.userId)}/account_data/${type}`), 404, "M_NOT_FOUND");
    }
    ok(await alice.req("PUT", `/user/${enc(alice.userId)}/account_data/m.key_backup`, { enabled: true }));
    assert.deepEqual(ok(await alice.req("GET", `/user/${enc(alice.userId)}/account_data/m.key_backup`)), { enabled: true });
  });

  test("capabilities, profile and members answer as the reference lists", async () => {
    const alice = await user();
    const caps = (ok(await alice.req("GET", "/capabilities")) as { capabilities: Record<string, Json> }).capabilities;
    for (const name of ["m.change_password", "m.set_displayname", "m.set_avatar_url"]) assert.equal(caps[name]!.enabled, true, name);
    const versions = caps["m.room_versions"] as { default: string; available: Record<string, string> };
    assert.equal(versions.available[versions.default], "stable");
    ok(await alice.req("PUT", `/profile/${enc(alice.userId)}/displayname`, { displayname: "Alice" }));
    assert.equal((ok(await alice.req("GET", `/profile/${enc(alice.userId)}`)) as Json).displayname, "Alice");
    assertError(await alice.req("GET", `/profile/${enc("@nobody:localhost")}`), 404, "M_NOT_FOUND");
    const roomId = await alice.createRoom();
    const members = ok(await alice.req("GET", `/rooms/${enc(roomId)}/members`)) as { chunk: { state_key: string; content: Json }[] };
    assert.deepEqual(members.chunk.map((m) => [m.state_key, m.content.membership]), [[alice.userId, "join"]]);
  });
});

describe("matrix-js-sdk with Rust crypto", () => {
  let clients: SdkClients | undefined;
  after(() => clients?.stopAll());

  test("resetKeyBackup creates a signed backup; the room key of a sent message is backed up", async () => {
    clients = await SdkClients.create(server.baseUrl);
    await quietSdkLogs(["error"]);
    // The backup loop waits a random time (up to 10 s) before uploading, to spread clients out; not here.
    const { RustBackupManager } = await import("matrix-js-sdk/lib/rust-crypto/backup.js");
    Object.defineProperty(RustBackupManager, "maxBackupLoopStartDelayMillis", { value: 0 });
    const alice = await user();
    const ca = await clients.start({ user_id: alice.userId, access_token: alice.token, device_id: alice.deviceId }, { rustCrypto: true });
    const crypto = ca.getCrypto()!;
    await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: async (makeRequest) => void (await makeRequest(null)) });

    await crypto.resetKeyBackup();
    const version = await crypto.getActiveSessionBackupVersion();
    assert.ok(version);
    const info = ok(await alice.req("GET", "/room_keys/version")) as { version: string; algorithm: string; auth_data: { public_key: string; signatures: Json } };
    assert.equal(info.version, version);
    assert.equal(info.algorithm, ALGORITHM);
    assert.ok(alice.userId in info.auth_data.signatures, "signed by the user's device and master key");
    const check = await crypto.checkKeyBackupAndEnable();
    assert.equal(check?.backupInfo.version, version);
    assert.equal(check?.trustInfo.trusted, true);

    // A second reset deletes the old version (DELETE until 404) and makes a new one.
    await crypto.resetKeyBackup();
    const second = await crypto.getActiveSessionBackupVersion();
    assert.notEqual(second, version);
    assertError(await alice.req("GET", `/room_keys/version/${version}`), 404, "M_NOT_FOUND");

    const roomId = await alice.createRoom({
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await clients.until(ca, "the encrypted room", () => ca.getRoom(roomId)?.hasEncryptionStateEvent() === true);
    await ca.sendTextMessage(roomId, "kept in the backup");
    await clients.untilAsync(ca, "the room key in the backup", async () => {
      const keys = ok(await alice.req("GET", `/room_keys/keys/${enc(roomId)}?version=${second}`)) as { sessions: Json };
      return Object.keys(keys.sessions).length === 1;
    });
    const stored = (ok(await alice.req("GET", `/room_keys/keys/${enc(roomId)}?version=${second}`)) as { sessions: Record<string, Json> }).sessions;
    const [data] = Object.values(stored);
    assert.equal(data!.first_message_index, 0);
    assert.equal(typeof (data!.session_data as Json).ciphertext, "string");
    assert.equal((ok(await alice.req("GET", "/room_keys/version")) as { count: number }).count, 1);
  });
});
