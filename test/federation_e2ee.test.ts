/**
 * End-to-end encryption across servers: two Switchboards (a.test, b.test) over TLS. A user on
 * a queries and claims the keys of a user on b through `/keys/query` and `/keys/claim`, which
 * ask b's `/_matrix/federation/v1/user/keys/*`; forged devices are dropped; unreachable and
 * silent servers land in `failures`. Also `/user/devices`, and room aliases of another server.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import http from "node:http";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { publicKeyBase64, signJson } from "../src/events/signing.js";
import { crossSigningKeyProblem, deviceKeysProblem } from "../src/services/e2ee/device_key_checks.js";
import { signedRequest, signerOf, TestFederation, type FederatedServer } from "./helpers/federation.js";
import { assertError, ok, User } from "./helpers/rooms.js";
import { request } from "./helpers/server.js";

type Json = Record<string, unknown>;

/** A device's real ed25519 identity key, and the signed keys it uploads. */
class Device {
  readonly key = generateKeyPairSync("ed25519");
  readonly publicKey = publicKeyBase64(this.key.privateKey);
  /** The device keys last made, as uploaded. */
  lastKeys: Json | undefined;
  constructor(readonly user: User) {}

  get keyId(): string {
    return `ed25519:${this.user.deviceId}`;
  }

  deviceKeys(extra: Json = {}): Json {
    const keys = {
      user_id: this.user.userId,
      device_id: this.user.deviceId,
      algorithms: ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
      keys: { [`curve25519:${this.user.deviceId}`]: publicKeyBase64(generateKeyPairSync("x25519").privateKey), [this.keyId]: this.publicKey },
      ...extra,
    };
    this.lastKeys = signJson(keys, this.user.userId, this.keyId, this.key.privateKey);
    return this.lastKeys;
  }

  oneTimeKeys(prefix: string, count: number): Json {
    const out: Json = {};
    for (let i = 0; i < count; i++) out[`signed_curve25519:${prefix}${i}`] = signJson({ key: `otk-${prefix}${i}` }, this.user.userId, this.keyId, this.key.privateKey);
    return out;
  }
}

function crossSigningKey(userId: string, usage: string, key: KeyObject, signer?: KeyObject): Json {
  const pk = publicKeyBase64(key);
  const obj = { user_id: userId, usage: [usage], keys: { [`ed25519:${pk}`]: pk } };
  return signer ? signJson(obj, userId, `ed25519:${publicKeyBase64(signer)}`, signer) : obj;
}

/** A TCP server that takes connections and never says a word. */
async function silentServer(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Keys as a hostile server might answer: some fine, some forged or not asked for. */
function evilAnswers(): { query: Json; claim: Json } {
  const eveKey = generateKeyPairSync("ed25519").privateKey;
  const device = (deviceId: string, userId = "@eve:evil.test") =>
    signJson(
      { user_id: userId, device_id: deviceId, algorithms: ["m.megolm.v1.aes-sha2"], keys: { [`ed25519:${deviceId}`]: publicKeyBase64(eveKey) } },
      userId,
      `ed25519:${deviceId}`,
      eveKey,
    );
  const masterKey = generateKeyPairSync("ed25519").privateKey;
  const otherKey = generateKeyPairSync("ed25519").privateKey;
  return {
    query: {
      device_keys: {
        "@eve:evil.test": { GOOD: device("GOOD"), RENAMED: device("GOOD"), THEIRS: device("THEIRS", "@mallory:evil.test") },
        "@mallory:evil.test": { M: device("M", "@mallory:evil.test") },
        "@alice:a.test": { A: device("A", "@alice:a.test") },
        "@eve2:evil.test": "not an object",
      },
      master_keys: {
        "@eve:evil.test": crossSigningKey("@mallory:evil.test", "master", masterKey),
        "@eve2:evil.test": crossSigningKey("@eve2:evil.test", "master", masterKey),
        "@alice:a.test": crossSigningKey("@alice:a.test", "master", masterKey),
      },
      self_signing_keys: {
        "@eve:evil.test": crossSigningKey("@eve:evil.test", "self_signing", otherKey, masterKey),
        "@eve2:evil.test": crossSigningKey("@eve2:evil.test", "self_signing", otherKey, otherKey),
      },
      user_signing_keys: { "@eve:evil.test": crossSigningKey("@eve:evil.test", "user_signing", otherKey, masterKey) },
    },
    claim: {
      one_time_keys: {
        "@eve:evil.test": { GOOD: { "signed_curve25519:1": { key: "k" }, "curve25519:2": "other algorithm" }, NOTASKED: { "signed_curve25519:3": { key: "k3" } } },
        "@alice:a.test": { A: { "signed_curve25519:4": { key: "k4" } } },
      },
    },
  };
}

/** evil.test's federation listener: answers key requests with `evilAnswers`, without checking who asks. */
async function evilServer(): Promise<{ url: string; close: () => Promise<void> }> {
  const answers = evilAnswers();
  const server = http.createServer((req, res) => {
    req.resume();
    const body = req.url === "/_matrix/federation/v1/user/keys/query" ? answers.query : req.url === "/_matrix/federation/v1/user/keys/claim" ? answers.claim : undefined;
    res.writeHead(body ? 200 : 404, { "content-type": "application/json" });
    res.end(JSON.stringify(body ?? { errcode: "M_UNRECOGNIZED", error: "no" }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe("E2EE across servers", () => {
  const fed = new TestFederation(["a.test", "b.test", "evil.test"]);
  let evil: Awaited<ReturnType<typeof evilServer>>;
  let silent: Awaited<ReturnType<typeof silentServer>>;
  let a: FederatedServer;
  let b: FederatedServer;
  let alice: User;
  let bob: User;
  let bobPhone: Device;
  let forged: User;
  const master = generateKeyPairSync("ed25519").privateKey;
  const selfSigning = generateKeyPairSync("ed25519").privateKey;

  before(async () => {
    silent = await silentServer();
    fed.extraAddresses["silent.test:8448"] = { address: "127.0.0.1", port: silent.port };
    await fed.frontsUp();
    evil = await evilServer();
    fed.fronts.get("evil.test")!.target = evil.url;
    a = await fed.start("a.test");
    b = await fed.start("b.test");
    alice = await User.register(a.server.baseUrl, "alice");
    bob = await User.register(b.server.baseUrl, "bob");
    bobPhone = new Device(bob);
    ok(await bob.req("PUT", `/devices/${encodeURIComponent(bob.deviceId)}`, { display_name: "Bob's phone" }));
    ok(await bob.req("POST", "/keys/upload", { device_keys: bobPhone.deviceKeys(), one_time_keys: bobPhone.oneTimeKeys("A", 2) }));
    ok(await bob.req("POST", "/keys/upload", { fallback_keys: { "signed_curve25519:F": { key: "fallback", fallback: true } } }));
    ok(
      await bob.req("POST", "/keys/device_signing/upload", {
        master_key: crossSigningKey(bob.userId, "master", master),
        self_signing_key: crossSigningKey(bob.userId, "self_signing", selfSigning, master),
      }),
    );
    // Bob's self-signing key vouches for his phone, uploaded separately as clients do.
    const { signatures: _s, ...phoneKeys } = bobPhone.lastKeys!;
    const bySsk = signJson(phoneKeys, bob.userId, `ed25519:${publicKeyBase64(selfSigning)}`, selfSigning);
    const failures = ok(await bob.req("POST", "/keys/signatures/upload", { [bob.userId]: { [bob.deviceId]: bySsk } }));
    assert.deepEqual(failures, { failures: {} });
    // A second device of Bob's whose keys carry a signature its own key did not make.
    forged = await bob.newDevice();
    const forgedDevice = new Device(forged);
    const { signatures: _f, ...forgedKeys } = forgedDevice.deviceKeys();
    const other = generateKeyPairSync("ed25519").privateKey;
    ok(await forged.req("POST", "/keys/upload", { device_keys: signJson(forgedKeys, bob.userId, forgedDevice.keyId, other) }));
  });
  after(async () => {
    await fed.close();
    await silent?.close();
    await evil?.close();
  });

  test("a hostile server's answers: only the users, devices and keys asked for, and only those that check", async () => {
    const res = ok(await alice.req("POST", "/keys/query", { device_keys: { "@eve:evil.test": [], "@eve2:evil.test": [] } })) as {
      device_keys: Record<string, Record<string, Json>>;
      master_keys: Record<string, Json>;
      self_signing_keys: Record<string, Json>;
      user_signing_keys: Record<string, Json>;
      failures: Json;
    };
    assert.deepEqual(res.failures, {});
    // RENAMED is GOOD's keys under another ID; THEIRS is another user's device.
    assert.deepEqual(Object.keys(res.device_keys).sort(), ["@eve2:evil.test", "@eve:evil.test"]);
    assert.deepEqual(Object.keys(res.device_keys["@eve:evil.test"]!), ["GOOD"]);
    assert.deepEqual(res.device_keys["@eve2:evil.test"], {});
    // Eve's master key names Mallory; Eve2's self-signing key is not signed by her master key.
    assert.deepEqual(Object.keys(res.master_keys), ["@eve2:evil.test"]);
    assert.deepEqual(res.self_signing_keys, {});
    assert.deepEqual(res.user_signing_keys, {});
    const claimed = ok(await alice.req("POST", "/keys/claim", { one_time_keys: { "@eve:evil.test": { GOOD: "signed_curve25519", GONE: "signed_curve25519" } } }));
    assert.deepEqual(claimed, { one_time_keys: { "@eve:evil.test": { GOOD: { "signed_curve25519:1": { key: "k" } } } }, failures: {} });
  });

  test("keys/query: a remote user's devices and cross-signing keys, checked; the forged device is dropped", async () => {
    const res = ok(await alice.req("POST", "/keys/query", { device_keys: { [bob.userId]: [], [alice.userId]: [] } })) as {
      device_keys: Record<string, Record<string, Json>>;
      master_keys: Record<string, Json>;
      self_signing_keys: Record<string, Json>;
      failures: Json;
    };
    assert.deepEqual(res.failures, {});
    assert.deepEqual(Object.keys(res.device_keys[bob.userId]!), [bob.deviceId], "only the self-signed device");
    const phone = res.device_keys[bob.userId]![bob.deviceId]!;
    assert.equal(deviceKeysProblem(phone, bob.userId, bob.deviceId), undefined);
    assert.deepEqual((phone.keys as Json)[bobPhone.keyId], bobPhone.publicKey);
    assert.deepEqual(phone.unsigned, { device_display_name: "Bob's phone" });
    // The self-signing key's signature made on b reaches a's client.
    assert.ok((phone.signatures as Record<string, Json>)[bob.userId]![`ed25519:${publicKeyBase64(selfSigning)}`]);
    assert.equal(crossSigningKeyProblem(res.master_keys[bob.userId], bob.userId, "master"), undefined);
    assert.equal(crossSigningKeyProblem(res.self_signing_keys[bob.userId], bob.userId, "self_signing", publicKeyBase64(master)), undefined);
    assert.deepEqual(res.device_keys[alice.userId], {});
    // Asking for one device gives only that one.
    const one = ok(await alice.req("POST", "/keys/query", { device_keys: { [bob.userId]: [forged.deviceId] } })) as { device_keys: Record<string, Json> };
    assert.deepEqual(one.device_keys[bob.userId], {});
  });

  test("keys/claim: one-time keys of a remote device, then its fallback key", async () => {
    const claim = async () =>
      ok(await alice.req("POST", "/keys/claim", { one_time_keys: { [bob.userId]: { [bob.deviceId]: "signed_curve25519", NOPE: "signed_curve25519" } } })) as {
        one_time_keys: Record<string, Record<string, Json>>;
        failures: Json;
      };
    const first = await claim();
    assert.deepEqual(first.failures, {});
    const [keyId, key] = Object.entries(first.one_time_keys[bob.userId]![bob.deviceId]!)[0]!;
    assert.match(keyId, /^signed_curve25519:A[01]$/);
    assert.deepEqual(key, bobPhone.oneTimeKeys("A", 2)[keyId]);
    const second = await claim();
    assert.notEqual(Object.keys(second.one_time_keys[bob.userId]![bob.deviceId]!)[0], keyId);
    const third = await claim();
    assert.deepEqual(third.one_time_keys[bob.userId]![bob.deviceId], { "signed_curve25519:F": { key: "fallback", fallback: true } });
  });

  test("an unreachable server, and one that never answers, land in failures; the rest still answers", async () => {
    const res = ok(
      await alice.req("POST", "/keys/query", {
        device_keys: { [bob.userId]: [], "@x:nowhere.test": [], "@y:silent.test": [] },
        timeout: 1000,
      }),
    ) as { device_keys: Record<string, Json>; failures: Record<string, { status: number; message: string }> };
    assert.deepEqual(Object.keys(res.failures).sort(), ["nowhere.test", "silent.test"]);
    assert.equal(res.failures["nowhere.test"]!.status, 503);
    assert.equal(res.failures["silent.test"]!.status, 503);
    assert.ok(res.device_keys[bob.userId]![bob.deviceId]);
    const claimed = ok(
      await alice.req("POST", "/keys/claim", { one_time_keys: { "@x:nowhere.test": { D: "signed_curve25519" } }, timeout: 1000 }),
    ) as { one_time_keys: Json; failures: Json };
    assert.deepEqual(claimed.one_time_keys, {});
    assert.deepEqual(Object.keys(claimed.failures), ["nowhere.test"]);
  });

  test("federation /user/devices: keys, display names, stream_id, cross-signing keys; local users only", async () => {
    const uri = `/_matrix/federation/v1/user/devices/${encodeURIComponent(bob.userId)}`;
    const res = await signedRequest(b, signerOf(a), "GET", uri);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.user_id, bob.userId);
    assert.equal(typeof res.body.stream_id, "number");
    const devices = res.body.devices as { device_id: string; keys: Json; device_display_name?: string }[];
    const phone = devices.find((d) => d.device_id === bob.deviceId)!;
    assert.equal(phone.device_display_name, "Bob's phone");
    assert.equal(phone.keys.unsigned, undefined);
    assert.equal(deviceKeysProblem(phone.keys, bob.userId, bob.deviceId), undefined);
    assert.ok(devices.some((d) => d.device_id === forged.deviceId), "served as stored: checking is the asker's job");
    assert.equal(crossSigningKeyProblem(res.body.master_key, bob.userId, "master"), undefined);
    assert.ok(res.body.self_signing_key);
    const other = await signedRequest(b, signerOf(a), "GET", `/_matrix/federation/v1/user/devices/${encodeURIComponent(alice.userId)}`);
    assert.equal(other.status, 400);
    const unsigned = await request(b.server.baseUrl, "GET", uri);
    assert.equal(unsigned.status, 401);
  });

  test("federation /user/keys/query and /user/keys/claim: local users only; no user-signing keys", async () => {
    const q = await signedRequest(b, signerOf(a), "POST", "/_matrix/federation/v1/user/keys/query", { body: { device_keys: { [bob.userId]: [] } } });
    assert.equal(q.status, 200);
    assert.deepEqual(Object.keys(q.body).sort(), ["device_keys", "master_keys", "self_signing_keys"]);
    const mixed = await signedRequest(b, signerOf(a), "POST", "/_matrix/federation/v1/user/keys/query", { body: { device_keys: { [bob.userId]: [], [alice.userId]: [] } } });
    assert.equal(mixed.status, 400);
    const bad = await signedRequest(b, signerOf(a), "POST", "/_matrix/federation/v1/user/keys/query", { body: { device_keys: "x" } });
    assert.equal(bad.status, 400);
    const c = await signedRequest(b, signerOf(a), "POST", "/_matrix/federation/v1/user/keys/claim", {
      body: { one_time_keys: { [alice.userId]: { X: "signed_curve25519" }, [bob.userId]: { NOPE: "signed_curve25519" } } },
    });
    assert.equal(c.status, 200);
    assert.deepEqual(c.body, { one_time_keys: {} });
  });

  test("room aliases of another server: resolved there, 404 when it says so, 502 when unreachable", async () => {
    const roomId = await bob.createRoom({ room_alias_name: "lobby" });
    const alias = encodeURIComponent("#lobby:b.test");
    const found = ok(await alice.req("GET", `/directory/room/${alias}`));
    assert.equal(found.room_id, roomId);
    assert.ok((found.servers as string[]).includes("b.test"));
    assertError(await alice.req("GET", `/directory/room/${encodeURIComponent("#nothing:b.test")}`), 404, "M_NOT_FOUND");
    assertError(await alice.req("GET", `/directory/room/${encodeURIComponent("#x:nowhere.test")}`), 502, "M_UNKNOWN");
    // The federation side, directly.
    const direct = await signedRequest(b, signerOf(a), "GET", `/_matrix/federation/v1/query/directory?room_alias=${alias}`);
    assert.deepEqual(direct.body, { room_id: roomId, servers: ["b.test"] });
    const notHere = await signedRequest(b, signerOf(a), "GET", `/_matrix/federation/v1/query/directory?room_alias=${encodeURIComponent("#lobby:a.test")}`);
    assert.equal(notHere.status, 400);
    const unknown = await signedRequest(b, signerOf(a), "GET", `/_matrix/federation/v1/query/directory?room_alias=${encodeURIComponent("#nope:b.test")}`);
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.errcode, "M_NOT_FOUND");
  });
});

describe("device key checks (pure)", () => {
  const key = generateKeyPairSync("ed25519").privateKey;
  const pk = publicKeyBase64(key);
  const keys = (userId: string, deviceId: string, extra: Json = {}) =>
    signJson({ user_id: userId, device_id: deviceId, algorithms: ["m.olm.v1.curve25519-aes-sha2"], keys: { [`ed25519:${deviceId}`]: pk }, ...extra }, userId, `ed25519:${deviceId}`, key);

  test("a device must be the one it is listed as, of that user, signed by itself", () => {
    assert.equal(deviceKeysProblem(keys("@u:x", "D"), "@u:x", "D"), undefined);
    assert.match(deviceKeysProblem(keys("@u:x", "D"), "@v:x", "D")!, /user_id/);
    assert.match(deviceKeysProblem(keys("@u:x", "D"), "@u:x", "E")!, /device_id/);
    assert.match(deviceKeysProblem({ ...keys("@u:x", "D"), algorithms: ["x", "y"] }, "@u:x", "D")!, /not signed/);
    assert.match(deviceKeysProblem({ ...keys("@u:x", "D"), keys: {} }, "@u:x", "D")!, /no valid/);
    assert.match(deviceKeysProblem("x", "@u:x", "D")!, /not an object/);
    // unsigned is not covered by the signature.
    assert.equal(deviceKeysProblem({ ...keys("@u:x", "D"), unsigned: { device_display_name: "n" } }, "@u:x", "D"), undefined);
  });

  test("cross-signing keys: user, usage, one key, the master's signature", () => {
    const masterKey = generateKeyPairSync("ed25519").privateKey;
    const m = crossSigningKey("@u:x", "master", masterKey);
    assert.equal(crossSigningKeyProblem(m, "@u:x", "master"), undefined);
    assert.match(crossSigningKeyProblem(m, "@v:x", "master")!, /user_id/);
    assert.match(crossSigningKeyProblem(m, "@u:x", "self_signing")!, /usage/);
    const ssk = crossSigningKey("@u:x", "self_signing", key, masterKey);
    assert.equal(crossSigningKeyProblem(ssk, "@u:x", "self_signing", publicKeyBase64(masterKey)), undefined);
    const unsignedSsk = crossSigningKey("@u:x", "self_signing", key);
    assert.match(crossSigningKeyProblem(unsignedSsk, "@u:x", "self_signing", publicKeyBase64(masterKey))!, /master key/);
  });
});
