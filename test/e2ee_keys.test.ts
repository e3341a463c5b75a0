/**
 * End-to-end encryption plumbing: `/keys/upload`, `/keys/query`,
 * `/keys/claim`, `/keys/changes`, `/sendToDevice`, and the sync sections that
 * go with them (`to_device`, `device_lists`, `device_one_time_keys_count`,
 * `device_unused_fallback_key_types`). Then two matrix-js-sdk clients with
 * their real (Rust) crypto stack exchange a message in an encrypted room,
 * which needs all of it.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { MatrixClient, MatrixEvent } from "matrix-js-sdk";
import { quietSdkLogs } from "./helpers/matrix-sdk.js";
import { SdkClients } from "./helpers/sdk_clients.js";
import { assertError, ok, User } from "./helpers/rooms.js";
import { request, startServer, type TestServer } from "./helpers/server.js";

const C = "/_matrix/client/v3";

interface SyncBody {
  next_batch: string;
  to_device: { events: { sender: string; type: string; content: Record<string, unknown> }[] };
  device_lists: { changed: string[]; left: string[] };
  device_one_time_keys_count: Record<string, number>;
  device_unused_fallback_key_types: string[];
}

let server: TestServer;
let n = 0;

before(async () => {
  server = await startServer();
});
after(async () => server?.stop());

const user = () => User.register(server.baseUrl, `e2ee${++n}`);

async function sync(u: User, query: Record<string, string | number> = {}): Promise<SyncBody> {
  const qs = new URLSearchParams(Object.entries(query).map(([k, v]): [string, string] => [k, String(v)])).toString();
  return ok(await request(server.baseUrl, "GET", `${C}/sync${qs ? `?${qs}` : ""}`, { token: u.token })) as unknown as SyncBody;
}

function deviceKeys(u: User, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    user_id: u.userId,
    device_id: u.deviceId,
    algorithms: ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
    keys: { [`curve25519:${u.deviceId}`]: `curve-${u.deviceId}`, [`ed25519:${u.deviceId}`]: `ed-${u.deviceId}` },
    signatures: { [u.userId]: { [`ed25519:${u.deviceId}`]: "sig" } },
    ...extra,
  };
}

/** `count` signed one-time keys with IDs `prefix0`, `prefix1`, … */
function oneTimeKeys(prefix: string, count: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i < count; i++) out[`signed_curve25519:${prefix}${i}`] = { key: `otk-${prefix}${i}`, signatures: {} };
  return out;
}

const upload = (u: User, body: Record<string, unknown>) => u.req("POST", "/keys/upload", body);
const query = (u: User, body: Record<string, unknown>) => u.req("POST", "/keys/query", body);
const claim = (u: User, body: Record<string, unknown>) => u.req("POST", "/keys/claim", body);
const sendToDevice = (u: User, type: string, txnId: string, messages: Record<string, unknown>) =>
  u.req("PUT", `/sendToDevice/${encodeURIComponent(type)}/${encodeURIComponent(txnId)}`, { messages });

describe("keys: upload, query, claim", () => {
  test("upload reports one-time key counts; sync reports them and the unused fallback key", async () => {
    const alice = await user();
    // signed_curve25519 is always reported, with 0 before any upload.
    assert.deepEqual(ok(await upload(alice, {})), { one_time_key_counts: { signed_curve25519: 0 } });
    const res = ok(
      await upload(alice, {
        device_keys: deviceKeys(alice),
        one_time_keys: oneTimeKeys("A", 3),
        fallback_keys: { "signed_curve25519:F1": { key: "fallback-1", fallback: true, signatures: {} } },
      }),
    );
    assert.deepEqual(res, { one_time_key_counts: { signed_curve25519: 3 } });
    // The same keys again change nothing.
    assert.deepEqual(ok(await upload(alice, { one_time_keys: oneTimeKeys("A", 3) })), { one_time_key_counts: { signed_curve25519: 3 } });
    const s = await sync(alice);
    assert.deepEqual(s.device_one_time_keys_count, { signed_curve25519: 3 });
    assert.deepEqual(s.device_unused_fallback_key_types, ["signed_curve25519"]);
    assert.deepEqual(s.to_device, { events: [] });
  });

  test("bad uploads: another user's or device's keys, a reused one-time key ID, a malformed key ID", async () => {
    const alice = await user();
    const bob = await user();
    assertError(await upload(alice, { device_keys: deviceKeys(alice, { user_id: bob.userId }) }), 400, "M_INVALID_PARAM");
    assertError(await upload(alice, { device_keys: deviceKeys(alice, { device_id: "OTHER" }) }), 400, "M_INVALID_PARAM");
    ok(await upload(alice, { one_time_keys: { "signed_curve25519:K": { key: "one" } } }));
    assertError(await upload(alice, { one_time_keys: { "signed_curve25519:K": { key: "two" } } }), 400, "M_INVALID_PARAM");
    assertError(await upload(alice, { one_time_keys: { nocolon: "x" } }), 400, "M_INVALID_PARAM");
    assertError(await query(alice, { device_keys: "no" }), 400, "M_BAD_JSON");
    // Nothing of the refused uploads was stored.
    assert.deepEqual((await sync(alice)).device_one_time_keys_count, { signed_curve25519: 1 });
  });

  test("query returns device keys with the display name in unsigned; other servers are failures", async () => {
    const alice = await user();
    const second = await alice.newDevice();
    ok(await alice.req("PUT", `/devices/${alice.deviceId}`, { display_name: "Alice's laptop" }));
    ok(await upload(alice, { device_keys: deviceKeys(alice) }));
    ok(await upload(second, { device_keys: deviceKeys(second) }));
    const bob = await user();

    const all = ok(await query(bob, { device_keys: { [alice.userId]: [], "@someone:elsewhere.example": [] } })) as {
      device_keys: Record<string, Record<string, Record<string, unknown>>>;
      failures: Record<string, unknown>;
    };
    assert.deepEqual(Object.keys(all.device_keys[alice.userId]!).sort(), [alice.deviceId, second.deviceId].sort());
    assert.deepEqual(all.device_keys[alice.userId]![alice.deviceId], { ...deviceKeys(alice), unsigned: { device_display_name: "Alice's laptop" } });
    assert.ok("elsewhere.example" in all.failures);

    const one = ok(await query(bob, { device_keys: { [alice.userId]: [second.deviceId] } })) as { device_keys: Record<string, Record<string, unknown>> };
    assert.deepEqual(Object.keys(one.device_keys[alice.userId]!), [second.deviceId]);

    // A deleted device's keys go with it.
    ok(await second.req("POST", "/logout", {}));
    const after = ok(await query(bob, { device_keys: { [alice.userId]: [] } })) as { device_keys: Record<string, Record<string, unknown>> };
    assert.deepEqual(Object.keys(after.device_keys[alice.userId]!), [alice.deviceId]);
  });

  test("claim takes one-time keys once each, then hands out the fallback key until it is replaced", async () => {
    const alice = await user();
    const bob = await user();
    ok(
      await upload(alice, {
        device_keys: deviceKeys(alice),
        one_time_keys: oneTimeKeys("B", 2),
        fallback_keys: { "signed_curve25519:F1": { key: "fallback-1", fallback: true } },
      }),
    );
    const ask = { one_time_keys: { [alice.userId]: { [alice.deviceId]: "signed_curve25519" } } };
    const claimed: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = ok(await claim(bob, ask)) as { one_time_keys: Record<string, Record<string, Record<string, unknown>>> };
      claimed.push(...Object.keys(r.one_time_keys[alice.userId]![alice.deviceId]!));
    }
    assert.deepEqual(claimed.sort(), ["signed_curve25519:B0", "signed_curve25519:B1"]);
    assert.deepEqual((await sync(alice)).device_one_time_keys_count, { signed_curve25519: 0 });

    for (let i = 0; i < 2; i++) {
      const r = ok(await claim(bob, ask)) as { one_time_keys: Record<string, Record<string, Record<string, unknown>>> };
      assert.deepEqual(r.one_time_keys[alice.userId]![alice.deviceId], { "signed_curve25519:F1": { key: "fallback-1", fallback: true } });
    }
    assert.deepEqual((await sync(alice)).device_unused_fallback_key_types, [], "the fallback key has been used");
    ok(await upload(alice, { fallback_keys: { "signed_curve25519:F2": { key: "fallback-2", fallback: true } } }));
    assert.deepEqual((await sync(alice)).device_unused_fallback_key_types, ["signed_curve25519"]);

    // Nothing to give: the device is left out; another server's user is a failure.
    const none = ok(await claim(bob, { one_time_keys: { [bob.userId]: { [bob.deviceId]: "signed_curve25519" }, "@x:elsewhere.example": { D: "signed_curve25519" } } })) as {
      one_time_keys: Record<string, unknown>;
      failures: Record<string, unknown>;
    };
    assert.deepEqual(none.one_time_keys, {});
    assert.ok("elsewhere.example" in none.failures);
  });
});

describe("device lists", () => {
  test("a contact's new or deleted device shows in device_lists.changed and /keys/changes, once", async () => {
    const alice = await user();
    const bob = await user();
    const stranger = await user();
    const roomId = await alice.createRoom({ invite: [bob.userId] });
    await bob.join(roomId);
    const first = await sync(bob);

    const laptop = await alice.newDevice();
    ok(await upload(laptop, { device_keys: deviceKeys(laptop) }));
    ok(await upload(stranger, { device_keys: deviceKeys(stranger) }));
    const second = await sync(bob, { since: first.next_batch });
    assert.deepEqual(second.device_lists.changed, [alice.userId], "only users who share a room");
    assert.deepEqual((await sync(bob, { since: second.next_batch })).device_lists.changed, []);
    const changes = ok(await bob.req("GET", `/keys/changes?from=${first.next_batch}&to=${second.next_batch}`));
    assert.deepEqual(changes, { changed: [alice.userId], left: [] });

    // Deleting the device (its keys go with it) is a change too.
    ok(await laptop.req("POST", "/logout", {}));
    const third = await sync(bob, { since: second.next_batch });
    assert.deepEqual(third.device_lists.changed, [alice.userId]);
  });

  test("device_lists: users who come to share a room are changed; users who share none any more are left", async () => {
    const [alice, bob, carol, dave] = [await user(), await user(), await user(), await user()];
    const roomId = await alice.createRoom({ preset: "public_chat" });
    const other = await alice.createRoom({ preset: "public_chat" });
    const davesRoom = await dave.createRoom({ preset: "public_chat" });
    let since = (await sync(alice)).next_batch;
    const next = async () => {
      const res = await sync(alice, { since });
      since = res.next_batch;
      return { changed: [...res.device_lists.changed].sort(), left: [...res.device_lists.left].sort() };
    };

    await bob.join(roomId);
    assert.deepEqual(await next(), { changed: [bob.userId], left: [] }, "bob joined one of alice's rooms");
    ok(await bob.putStateRaw(roomId, "m.room.member", bob.userId, { membership: "join", displayname: "Bob" }));
    assert.deepEqual(await next(), { changed: [], left: [] }, "a profile change is no join");
    ok(await bob.leave(roomId));
    assert.deepEqual(await next(), { changed: [], left: [bob.userId] }, "bob left the only room they shared");

    await carol.join(roomId);
    await carol.join(other);
    assert.deepEqual(await next(), { changed: [carol.userId], left: [] });
    ok(await alice.act("kick", roomId, carol.userId));
    assert.deepEqual(await next(), { changed: [], left: [] }, "kicked from one room, carol still shares the other");
    ok(await alice.act("ban", other, carol.userId));
    assert.deepEqual(await next(), { changed: [], left: [carol.userId] }, "banned from the last shared room");

    await alice.join(davesRoom);
    assert.deepEqual(await next(), { changed: [dave.userId], left: [] }, "alice joined a room of dave's");
    ok(await alice.leave(davesRoom));
    assert.deepEqual(await next(), { changed: [], left: [dave.userId] }, "alice left the only room they shared");
    // A rejected invite never made anyone share a room.
    ok(await alice.act("invite", roomId, bob.userId));
    ok(await bob.leave(roomId));
    assert.deepEqual(await next(), { changed: [], left: [] });
  });

  test("a long-polling sync wakes for a contact's new device keys", async () => {
    const alice = await user();
    const bob = await user();
    const roomId = await alice.createRoom({ invite: [bob.userId] });
    await bob.join(roomId);
    const first = await sync(bob);
    const pending = sync(bob, { since: first.next_batch, timeout: 30_000 });
    const laptop = await alice.newDevice();
    ok(await upload(laptop, { device_keys: deviceKeys(laptop) }));
    assert.deepEqual((await pending).device_lists.changed, [alice.userId]);
  });
});

describe("send-to-device", () => {
  test("a message reaches one device, or every device with *; the sync after acknowledges it", async () => {
    const alice = await user();
    const bob = await user();
    const bobPhone = await bob.newDevice();
    ok(await sendToDevice(alice, "org.example.ping", "t1", { [bob.userId]: { [bob.deviceId]: { n: 1 } } }));
    ok(await sendToDevice(alice, "org.example.ping", "t2", { [bob.userId]: { "*": { n: 2 } } }));

    const s1 = await sync(bob);
    assert.deepEqual(s1.to_device.events, [
      { sender: alice.userId, type: "org.example.ping", content: { n: 1 } },
      { sender: alice.userId, type: "org.example.ping", content: { n: 2 } },
    ]);
    assert.deepEqual((await sync(bobPhone)).to_device.events.map((e) => e.content), [{ n: 2 }]);
    // Not acknowledged yet: an initial sync again gets them again.
    assert.equal((await sync(bob)).to_device.events.length, 2);
    // Syncing past them acknowledges (and deletes) them.
    const s2 = await sync(bob, { since: s1.next_batch });
    assert.deepEqual(s2.to_device.events, []);
    assert.deepEqual((await sync(bob)).to_device.events, []);
  });

  test("a transaction is delivered once however often it is retried; other servers' users are dropped", async () => {
    const alice = await user();
    const bob = await user();
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(
        ok(await sendToDevice(alice, "org.example.once", "same", { [bob.userId]: { [bob.deviceId]: { i } }, "@x:elsewhere.example": { D: { i } } })),
        {},
      );
    }
    assert.deepEqual((await sync(bob)).to_device.events.map((e) => e.content), [{ i: 0 }]);
    // The transaction ID is the sender device's: another device may use it.
    const alice2 = await alice.newDevice();
    ok(await sendToDevice(alice2, "org.example.once", "same", { [bob.userId]: { [bob.deviceId]: { i: 9 } } }));
    assert.deepEqual((await sync(bob)).to_device.events.map((e) => e.content), [{ i: 0 }, { i: 9 }]);
    assertError(await sendToDevice(alice, "org.example.bad", "b1", { [bob.userId]: { [bob.deviceId]: "not an object" } }), 400, "M_BAD_JSON");
  });

  test("at most 100 per response; the rest come next; a long-poll wakes for a message", async () => {
    const alice = await user();
    const bob = await user();
    for (let i = 0; i < 150; i++) ok(await sendToDevice(alice, "org.example.bulk", `m${i}`, { [bob.userId]: { [bob.deviceId]: { i } } }));
    const s1 = await sync(bob);
    assert.equal(s1.to_device.events.length, 100);
    const s2 = await sync(bob, { since: s1.next_batch });
    assert.deepEqual(
      s2.to_device.events.map((e) => e.content.i),
      Array.from({ length: 50 }, (_, k) => 100 + k),
    );
    const pending = sync(bob, { since: s2.next_batch, timeout: 30_000 });
    ok(await sendToDevice(alice, "org.example.wake", "w", { [bob.userId]: { [bob.deviceId]: { wake: true } } }));
    assert.deepEqual((await pending).to_device.events.map((e) => e.type), ["org.example.wake"]);
  });
});

async function knowsDevice(client: MatrixClient, other: User): Promise<boolean> {
  const devices = await client.getCrypto()?.getUserDeviceInfo([other.userId], true);
  return devices?.get(other.userId)?.has(other.deviceId) ?? false;
}

describe("matrix-js-sdk with its Rust crypto stack", () => {
  let clients: SdkClients | undefined;
  after(() => clients?.stopAll());

  test("two clients exchange a message in an encrypted room (keys uploaded, queried, claimed; the room key sent to-device)", async () => {
    clients = await SdkClients.create(server.baseUrl);
    const sdk = clients.sdk;
    // Errors only: without key backup on this server, the SDK warns (with a stack) that it found none.
    await quietSdkLogs(["error"]);
    const alice = await user();
    const bob = await user();
    const login = (u: User) => ({ user_id: u.userId, access_token: u.token, device_id: u.deviceId });
    const ca = await clients.start(login(alice), { rustCrypto: true });
    const cb = await clients.start(login(bob), { rustCrypto: true });
    const roomId = await alice.createRoom({
      invite: [bob.userId],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await bob.join(roomId);
    // Both clients must know the room, and both members, before the room key is shared.
    const bothJoined = (c: MatrixClient) =>
      c.getRoom(roomId)?.getMember(alice.userId)?.membership === "join" && c.getRoom(roomId)?.getMember(bob.userId)?.membership === "join";
    await clients.until(ca, "both members", () => bothJoined(ca));
    await clients.until(cb, "both members", () => bothJoined(cb));
    // The room key goes only to devices the sender knows when it sends: wait until each
    // client has fetched the other's device keys (uploaded by its own start, concurrently).
    await clients.untilAsync(ca, "Bob's device keys", async () => knowsDevice(ca, bob));
    await clients.untilAsync(cb, "Alice's device keys", async () => knowsDevice(cb, alice));

    // The first decryption attempt may run before the room key's to-device message is
    // processed; the SDK then decrypts again when the key arrives. Take the first success.
    const received = new Promise<MatrixEvent>((resolve, reject) => {
      const settle = (event: MatrixEvent) => {
        if (!event.isDecryptionFailure() && event.getType() === "m.room.message") resolve(event);
      };
      cb.on(sdk.MatrixEventEvent.Decrypted, (event) => {
        if (event.getRoomId() === roomId) settle(event);
      });
      cb.on(sdk.RoomEvent.Timeline, (event) => {
        if (event.getRoomId() !== roomId || !event.isEncrypted()) return;
        // Once settled, a late failure (the clients stopping mid-decryption) changes nothing
        // and is not left unhandled.
        cb.decryptEventIfNeeded(event).then(() => settle(event), reject);
      });
    });
    await ca.sendTextMessage(roomId, "only for Bob");
    const event = await clients.within(cb, "a decrypted message", received);
    assert.equal(event.isDecryptionFailure(), false);
    assert.equal(event.getContent().body, "only for Bob");
    assert.equal(event.getWireType(), "m.room.encrypted", "it travelled encrypted");
  });
});
