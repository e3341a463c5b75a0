/**
 * Cross-signing: `/keys/device_signing/upload` (first upload without UIA, as MSC3967; replacing
 * keys with the password), `/keys/signatures/upload` with real ed25519 signatures checked by the
 * server, the keys and merged signatures in `/keys/query`, and the device-list changes other
 * users' syncs see. Then matrix-js-sdk with its Rust crypto bootstraps cross-signing, and a
 * second client sees the first user's identity and its device signed by it.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { publicKeyBase64, signJson } from "../src/events/signing.js";
import { quietSdkLogs } from "./helpers/matrix-sdk.js";
import { assertError, ok, User } from "./helpers/rooms.js";
import { SdkClients } from "./helpers/sdk_clients.js";
import { request, startServer, type TestServer } from "./helpers/server.js";

const PASSWORD = "correct horse battery staple";
type Json = Record<string, unknown>;

let server: TestServer;
let n = 0;

before(async () => {
  server = await startServer();
});
after(async () => server?.stop());

const user = () => User.register(server.baseUrl, `xsign${++n}`);

/** An ed25519 key pair as clients hold them: the private key, and the public one in unpadded Base64. */
class Ed25519 {
  readonly privateKey: KeyObject;
  readonly publicKey: string;
  constructor() {
    this.privateKey = generateKeyPairSync("ed25519").privateKey;
    this.publicKey = publicKeyBase64(this.privateKey);
  }
  get keyId(): string {
    return `ed25519:${this.publicKey}`;
  }
  /** `obj` with this key's signature added under `userId` (as `ed25519:<keyName>`, the public key by default). */
  sign<T extends object>(obj: T, userId: string, keyName = this.publicKey): T {
    return signJson(obj, userId, `ed25519:${keyName}`, this.privateKey);
  }
}

/** A user's three cross-signing keys, and the key objects signed as the spec wants. */
class CrossSigning {
  readonly master = new Ed25519();
  readonly selfSigning = new Ed25519();
  readonly userSigning = new Ed25519();
  constructor(readonly userId: string) {}

  keyObject(usage: string, key: Ed25519): Json {
    return { user_id: this.userId, usage: [usage], keys: { [key.keyId]: key.publicKey } };
  }
  get masterKey(): Json {
    return this.keyObject("master", this.master);
  }
  get selfSigningKey(): Json {
    return this.master.sign(this.keyObject("self_signing", this.selfSigning), this.userId);
  }
  get userSigningKey(): Json {
    return this.master.sign(this.keyObject("user_signing", this.userSigning), this.userId);
  }
  get all(): Json {
    return { master_key: this.masterKey, self_signing_key: this.selfSigningKey, user_signing_key: this.userSigningKey };
  }
}

/** Uploads device keys signed by a real device key; returns the key and the uploaded object. */
async function uploadDevice(u: User): Promise<{ key: Ed25519; device: Json }> {
  const key = new Ed25519();
  const device = key.sign(
    {
      user_id: u.userId,
      device_id: u.deviceId,
      algorithms: ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
      keys: { [`curve25519:${u.deviceId}`]: `curve-${u.deviceId}`, [`ed25519:${u.deviceId}`]: key.publicKey },
    },
    u.userId,
    u.deviceId,
  );
  ok(await u.req("POST", "/keys/upload", { device_keys: device }));
  return { key, device };
}

const uploadSigning = (u: User, body: Json) => u.req("POST", "/keys/device_signing/upload", body);
const uploadSignatures = (u: User, body: Json) => u.req("POST", "/keys/signatures/upload", body);

interface QueryResult {
  device_keys: Record<string, Record<string, Json & { signatures: Record<string, Record<string, string>> }>>;
  master_keys: Record<string, Json & { signatures?: Record<string, Record<string, string>> }>;
  self_signing_keys: Record<string, Json>;
  user_signing_keys: Record<string, Json>;
  failures: Json;
}
const query = async (u: User, users: string[]) =>
  ok(await u.req("POST", "/keys/query", { device_keys: Object.fromEntries(users.map((id) => [id, []])) })) as unknown as QueryResult;

const passwordAuth = (u: User, session: string) => ({
  type: "m.login.password",
  identifier: { type: "m.id.user", user: u.userId },
  password: PASSWORD,
  session,
});

describe("uploading cross-signing keys", () => {
  test("the first upload needs no UIA; the keys show in /keys/query, the user-signing key only to its owner", async () => {
    const alice = await user();
    const bob = await user();
    const cs = new CrossSigning(alice.userId);
    assert.deepEqual(ok(await uploadSigning(alice, cs.all)), {});

    const own = await query(alice, [alice.userId]);
    assert.deepEqual(own.master_keys[alice.userId], cs.masterKey);
    assert.deepEqual(own.self_signing_keys[alice.userId], cs.selfSigningKey);
    assert.deepEqual(own.user_signing_keys[alice.userId], cs.userSigningKey);

    const seen = await query(bob, [alice.userId, bob.userId]);
    assert.deepEqual(seen.master_keys, { [alice.userId]: cs.masterKey });
    assert.deepEqual(seen.self_signing_keys, { [alice.userId]: cs.selfSigningKey });
    assert.deepEqual(seen.user_signing_keys, {}, "another user's user-signing key is private");
  });

  test("the same keys again need no UIA; new keys need the password, and then replace the old ones", async () => {
    const alice = await user();
    const first = new CrossSigning(alice.userId);
    ok(await uploadSigning(alice, first.all));
    assert.deepEqual(ok(await uploadSigning(alice, first.all)), {}, "a retried upload");

    const second = new CrossSigning(alice.userId);
    const challenge = await uploadSigning(alice, second.all);
    assert.equal(challenge.status, 401);
    assert.deepEqual(challenge.body.flows, [{ stages: ["m.login.password"] }]);
    const session = challenge.body.session as string;
    assert.equal(typeof session, "string");

    const wrong = await uploadSigning(alice, { ...second.all, auth: { ...passwordAuth(alice, session), password: "wrong" } });
    assertError(wrong, 401, "M_FORBIDDEN");
    assert.deepEqual((await query(alice, [alice.userId])).master_keys[alice.userId], first.masterKey, "nothing replaced yet");

    ok(await uploadSigning(alice, { ...second.all, auth: passwordAuth(alice, session) }));
    const after = await query(alice, [alice.userId]);
    assert.deepEqual(after.master_keys[alice.userId], second.masterKey);
    assert.deepEqual(after.user_signing_keys[alice.userId], second.userSigningKey);
  });

  test("of two concurrent first uploads one is stored; the other then needs UIA", async () => {
    const alice = await user();
    const a = new CrossSigning(alice.userId);
    const b = new CrossSigning(alice.userId);
    const replies = await Promise.all([uploadSigning(alice, a.all), uploadSigning(alice, b.all)]);
    assert.deepEqual(replies.map((r) => r.status).sort(), [200, 401]);
    const winner = replies[0]!.status === 200 ? a : b;
    const stored = await query(alice, [alice.userId]);
    assert.deepEqual(stored.master_keys[alice.userId], winner.masterKey);
    assert.deepEqual(stored.self_signing_keys[alice.userId], winner.selfSigningKey, "keys of one upload, not a mix");
  });

  test("bad uploads: no master key, bad signatures, someone else's or malformed keys, no token", async () => {
    const alice = await user();
    const cs = new CrossSigning(alice.userId);
    assertError(await uploadSigning(alice, { self_signing_key: cs.selfSigningKey }), 400, "M_MISSING_PARAM");
    const other = new CrossSigning(alice.userId);
    assertError(await uploadSigning(alice, { master_key: cs.masterKey, self_signing_key: other.selfSigningKey }), 400, "M_INVALID_SIGNATURE");
    assertError(await uploadSigning(alice, { master_key: cs.keyObject("master", cs.selfSigning), user_signing_key: cs.keyObject("user_signing", cs.userSigning) }), 400, "M_INVALID_SIGNATURE");
    assertError(await uploadSigning(alice, { master_key: { ...cs.masterKey, user_id: "@bob:localhost" } }), 400, "M_INVALID_PARAM");
    assertError(await uploadSigning(alice, { master_key: { ...cs.masterKey, usage: ["self_signing"] } }), 400, "M_INVALID_PARAM");
    assertError(
      await uploadSigning(alice, { master_key: { ...cs.masterKey, keys: { [cs.master.keyId]: cs.master.publicKey, [cs.selfSigning.keyId]: cs.selfSigning.publicKey } } }),
      400,
      "M_INVALID_PARAM",
    );
    assertError(await uploadSigning(alice, { master_key: { ...cs.masterKey, keys: { "ed25519:abc": "abc" } } }), 400, "M_INVALID_PARAM");
    assertError(await uploadSigning(alice, { master_key: "not an object" }), 400, "M_BAD_JSON");
    assertError(await request(server.baseUrl, "POST", "/_matrix/client/v3/keys/device_signing/upload", { body: cs.all }), 401, "M_MISSING_TOKEN");
    assertError(await request(server.baseUrl, "POST", "/_matrix/client/v3/keys/signatures/upload", { body: {} }), 401, "M_MISSING_TOKEN");
    assertError(await uploadSignatures(alice, { [alice.userId]: { DEV: "not an object" } }), 400, "M_BAD_JSON");
    // Nothing of the refused uploads was stored.
    assert.deepEqual((await query(alice, [alice.userId])).master_keys, {});
  });
});

describe("uploading signatures", () => {
  test("a device signed by the self-signing key and the master key signed by the device show in /keys/query", async () => {
    const alice = await user();
    const bob = await user();
    const { key, device } = await uploadDevice(alice);
    const cs = new CrossSigning(alice.userId);
    ok(await uploadSigning(alice, cs.all));

    const signedDevice = cs.selfSigning.sign(device, alice.userId);
    const signedMaster = key.sign(cs.masterKey, alice.userId, alice.deviceId);
    const res = ok(await uploadSignatures(alice, { [alice.userId]: { [alice.deviceId]: signedDevice, [cs.master.publicKey]: signedMaster } }));
    assert.deepEqual(res, { failures: {} });

    const seen = await query(bob, [alice.userId]);
    assert.deepEqual(seen.device_keys[alice.userId]![alice.deviceId]!.signatures[alice.userId], {
      [`ed25519:${alice.deviceId}`]: (device.signatures as Record<string, Record<string, string>>)[alice.userId]![`ed25519:${alice.deviceId}`],
      [cs.selfSigning.keyId]: (signedDevice.signatures as Record<string, Record<string, string>>)[alice.userId]![cs.selfSigning.keyId],
    });
    assert.deepEqual(seen.master_keys[alice.userId], signedMaster);
  });

  test("each bad signature fails its own key in `failures`; the good ones are stored", async () => {
    const alice = await user();
    const { key, device } = await uploadDevice(alice);
    const second = await alice.newDevice();
    const { device: secondDevice } = await uploadDevice(second);
    const cs = new CrossSigning(alice.userId);

    // No self-signing key yet: the device cannot be signed.
    const early = ok(await uploadSignatures(alice, { [alice.userId]: { [alice.deviceId]: cs.selfSigning.sign(device, alice.userId) } }));
    assert.equal((early.failures as Record<string, Record<string, Json>>)[alice.userId]![alice.deviceId]!.errcode, "M_NOT_FOUND");
    ok(await uploadSigning(alice, cs.all));

    const stranger = new Ed25519();
    const res = ok(
      await uploadSignatures(alice, {
        [alice.userId]: {
          [alice.deviceId]: stranger.sign(device, alice.userId, cs.selfSigning.publicKey), // signed by the wrong key
          [second.deviceId]: cs.selfSigning.sign({ ...secondDevice, algorithms: ["changed"] }, alice.userId), // not the stored device
          NOSUCHDEVICE: cs.selfSigning.sign({ ...device, device_id: "NOSUCHDEVICE" }, alice.userId),
          [cs.master.publicKey]: stranger.sign(cs.masterKey, alice.userId, alice.deviceId), // not the device's key
        },
      }),
    ) as { failures: Record<string, Record<string, Json>> };
    const codes = Object.fromEntries(Object.entries(res.failures[alice.userId]!).map(([k, v]) => [k, v.errcode]));
    assert.deepEqual(codes, {
      [alice.deviceId]: "M_INVALID_SIGNATURE",
      [second.deviceId]: "M_INVALID_PARAM",
      NOSUCHDEVICE: "M_NOT_FOUND",
      [cs.master.publicKey]: "M_INVALID_SIGNATURE",
    });
    for (const f of Object.values(res.failures[alice.userId]!)) assert.equal(typeof f.error, "string");
    const unsigned = ok(await uploadSignatures(alice, { [alice.userId]: { [alice.deviceId]: device } })) as { failures: Record<string, Record<string, Json>> };
    assert.equal(unsigned.failures[alice.userId]![alice.deviceId]!.errcode, "M_INVALID_SIGNATURE", "no signature by the uploader");

    // A good signature next to a bad one is stored.
    const mixed = ok(
      await uploadSignatures(alice, {
        [alice.userId]: { [alice.deviceId]: cs.selfSigning.sign(device, alice.userId), [second.deviceId]: stranger.sign(secondDevice, alice.userId, cs.selfSigning.publicKey) },
      }),
    ) as { failures: Record<string, Record<string, Json>> };
    assert.deepEqual(Object.keys(mixed.failures[alice.userId]!), [second.deviceId]);
    const seen = await query(alice, [alice.userId]);
    assert.ok(cs.selfSigning.keyId in seen.device_keys[alice.userId]![alice.deviceId]!.signatures[alice.userId]!);
    assert.ok(!(cs.selfSigning.keyId in seen.device_keys[alice.userId]![second.deviceId]!.signatures[alice.userId]!));
    void key;
  });

  test("another user's master key signed by the user-signing key is seen only by the signer", async () => {
    const alice = await user();
    const bob = await user();
    const carol = await user();
    const aliceCs = new CrossSigning(alice.userId);
    const bobCs = new CrossSigning(bob.userId);
    ok(await uploadSigning(bob, bobCs.all));

    // Without a user-signing key of her own, Alice cannot sign.
    const early = ok(await uploadSignatures(alice, { [bob.userId]: { [bobCs.master.publicKey]: aliceCs.userSigning.sign(bobCs.masterKey, alice.userId) } }));
    assert.equal((early.failures as Record<string, Record<string, Json>>)[bob.userId]![bobCs.master.publicKey]!.errcode, "M_NOT_FOUND");
    ok(await uploadSigning(alice, aliceCs.all));

    const bad = ok(
      await uploadSignatures(alice, {
        [bob.userId]: { [bobCs.selfSigning.publicKey]: aliceCs.userSigning.sign(bobCs.selfSigningKey, alice.userId) },
        [carol.userId]: { SOMEKEY: aliceCs.userSigning.sign({ user_id: carol.userId }, alice.userId) },
      }),
    ) as { failures: Record<string, Record<string, Json>> };
    assert.equal(bad.failures[bob.userId]![bobCs.selfSigning.publicKey]!.errcode, "M_NOT_FOUND", "only master keys are signed");
    assert.equal(bad.failures[carol.userId]!.SOMEKEY!.errcode, "M_NOT_FOUND", "Carol has no master key");
    const forged = ok(await uploadSignatures(alice, { [bob.userId]: { [bobCs.master.publicKey]: new Ed25519().sign(bobCs.masterKey, alice.userId, aliceCs.userSigning.publicKey) } }));
    assert.equal((forged.failures as Record<string, Record<string, Json>>)[bob.userId]![bobCs.master.publicKey]!.errcode, "M_INVALID_SIGNATURE");

    const signed = aliceCs.userSigning.sign(bobCs.masterKey, alice.userId);
    assert.deepEqual(ok(await uploadSignatures(alice, { [bob.userId]: { [bobCs.master.publicKey]: signed } })), { failures: {} });
    assert.deepEqual((await query(alice, [bob.userId])).master_keys[bob.userId], signed);
    assert.deepEqual((await query(carol, [bob.userId])).master_keys[bob.userId], bobCs.masterKey, "Carol does not see whom Alice verified");
    assert.deepEqual((await query(bob, [bob.userId])).master_keys[bob.userId], bobCs.masterKey);
  });
});

describe("device-list changes", () => {
  test("new cross-signing keys and signatures show in a contact's device_lists.changed", async () => {
    const alice = await user();
    const bob = await user();
    const roomId = await alice.createRoom({ invite: [bob.userId] });
    await bob.join(roomId);
    const { device } = await uploadDevice(alice);
    const sync = async (since?: string) =>
      ok(await bob.req("GET", `/sync${since ? `?since=${since}` : ""}`)) as { next_batch: string; device_lists: { changed: string[] } };
    const first = await sync();

    // A long-polling sync wakes for the keys.
    const pending = bob.req("GET", `/sync?since=${first.next_batch}&timeout=30000`);
    const cs = new CrossSigning(alice.userId);
    ok(await uploadSigning(alice, cs.all));
    const second = ok(await pending) as { next_batch: string; device_lists: { changed: string[] } };
    assert.deepEqual(second.device_lists.changed, [alice.userId]);

    ok(await uploadSignatures(alice, { [alice.userId]: { [alice.deviceId]: cs.selfSigning.sign(device, alice.userId) } }));
    const third = await sync(second.next_batch);
    assert.deepEqual(third.device_lists.changed, [alice.userId]);
    assert.deepEqual((await sync(third.next_batch)).device_lists.changed, []);
  });
});

describe("matrix-js-sdk with Rust crypto", () => {
  let clients: SdkClients | undefined;
  after(() => clients?.stopAll());

  test("bootstraps cross-signing without UIA; another client sees the identity and the device signed by it", async () => {
    clients = await SdkClients.create(server.baseUrl);
    await quietSdkLogs(["error"]);
    const alice = await user();
    const bob = await user();
    const login = (u: User) => ({ user_id: u.userId, access_token: u.token, device_id: u.deviceId });
    // Bob's crypto tracks the members of encrypted rooms he is in, and hears of Alice's new keys
    // through device-list changes.
    const roomId = await alice.createRoom({
      invite: [bob.userId],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await bob.join(roomId);
    const ca = await clients.start(login(alice), { rustCrypto: true });
    const cb = await clients.start(login(bob), { rustCrypto: true });
    const aliceCrypto = ca.getCrypto()!;

    let uiaRounds = 0;
    await aliceCrypto.bootstrapCrossSigning({
      authUploadDeviceSigningKeys: async (makeRequest) => {
        uiaRounds++;
        // As Element X does: no auth, which the first upload does not need.
        await makeRequest(null);
      },
    });
    assert.equal(uiaRounds, 1);
    assert.equal(await aliceCrypto.isCrossSigningReady(), true);
    const masterKey = await aliceCrypto.getCrossSigningKeyId();
    assert.ok(masterKey);
    // Not at once: CI once saw her device unsigned right after the bootstrap (PostgreSQL, two test
    // files at a time). Most likely her client's own /keys/query about herself, answered before the
    // signatures were stored, was processed after them; the device-list change that the signature
    // upload announces makes it query again, and then the device shows signed.
    await clients.untilAsync(ca, "Alice's device signed by her self-signing key", async () =>
      (await aliceCrypto.getDeviceVerificationStatus(alice.userId, alice.deviceId))?.crossSigningVerified === true,
    );

    const bobCrypto = cb.getCrypto()!;
    await clients.untilAsync(cb, "Alice's device signed by her identity", async () => {
      await bobCrypto.getUserDeviceInfo([alice.userId], true);
      return (await bobCrypto.getDeviceVerificationStatus(alice.userId, alice.deviceId))?.signedByOwner === true;
    });
    const identity = await bobCrypto.getUserVerificationStatus(alice.userId);
    assert.equal(identity.isCrossSigningVerified(), false, "Bob has not verified Alice");
    const seen = await query(bob, [alice.userId]);
    assert.deepEqual(Object.values((seen.master_keys[alice.userId]!.keys as Record<string, string>)), [masterKey]);

    // A second bootstrap with keys already there changes nothing and asks for nothing.
    await aliceCrypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: async () => assert.fail("no UIA expected") });
    assert.equal(await aliceCrypto.getCrossSigningKeyId(), masterKey);
  });
});
