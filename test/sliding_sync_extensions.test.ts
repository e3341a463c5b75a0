/**
 * Sliding-sync extensions over raw HTTP: to_device (acknowledged by `since`), e2ee, account_data
 * (with m.push_rules), receipts, typing and MSC4354 sticky events; each must also wake a
 * waiting long-poll.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { assertError, enc, ok, User, type Ev } from "./helpers/rooms.js";
import { request, startServer, type TestServer } from "./helpers/server.js";

const PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
const STICKY = "org.matrix.msc4354.sticky_duration_ms";
const STICKY_EXT = "org.matrix.msc4354.sticky_events";

let server: TestServer;
let n = 0;
before(async () => {
  server = await startServer();
});
after(async () => server?.stop());

const user = () => User.register(server.baseUrl, `ssx${++n}`);

type Ext = Record<string, Record<string, unknown> & { rooms?: Record<string, unknown> }>;
interface Body {
  pos: string;
  rooms: Record<string, { timeline?: Ev[] }>;
  extensions: Ext;
}

async function ss(u: User, body: Record<string, unknown>, query: { pos?: string; timeout?: number } = {}): Promise<Body> {
  const qs = new URLSearchParams();
  if (query.pos !== undefined) qs.set("pos", query.pos);
  if (query.timeout !== undefined) qs.set("timeout", String(query.timeout));
  return ok(await request(server.baseUrl, "POST", `${PATH}?${qs}`, { token: u.token, body })) as unknown as Body;
}

const roomsList = { all: { ranges: [[0, 9]], timeline_limit: 1, required_state: [] } };

describe("sliding sync extensions", () => {
  test("to_device: messages arrive, wake a long-poll and are deleted once acknowledged by since", async () => {
    const [alice, bob] = [await user(), await user()];
    const body = (since?: string) => ({ conn_id: "encryption", extensions: { to_device: { enabled: true, ...(since ? { since } : {}) } } });
    const first = await ss(bob, body());
    assert.deepEqual(first.extensions.to_device!.events, []);
    const since = first.extensions.to_device!.next_batch as string;
    const waiting = ss(bob, body(since), { pos: first.pos, timeout: 30_000 });
    ok(await alice.req("PUT", "/sendToDevice/org.example.ping/t1", { messages: { [bob.userId]: { [bob.deviceId]: { n: 1 } } } }));
    const got = await waiting;
    assert.deepEqual(got.extensions.to_device!.events, [{ sender: alice.userId, type: "org.example.ping", content: { n: 1 } }]);
    const again = await ss(bob, body(since), { pos: got.pos });
    assert.equal((again.extensions.to_device!.events as unknown[]).length, 1, "not acknowledged yet: sent again");
    const acked = await ss(bob, body(got.extensions.to_device!.next_batch as string), { pos: got.pos });
    assert.deepEqual(acked.extensions.to_device!.events, []);
  });

  test("e2ee: one-time key counts, fallback key types and device-list changes of room members", async () => {
    const [alice, bob] = [await user(), await user()];
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    ok(await alice.req("POST", "/keys/upload", { one_time_keys: { "signed_curve25519:A1": { key: "k", signatures: {} } } }));
    const body = { conn_id: "encryption", extensions: { e2ee: { enabled: true } } };
    const first = await ss(alice, body);
    assert.deepEqual(first.extensions.e2ee!.device_one_time_keys_count, { signed_curve25519: 1 });
    assert.deepEqual(first.extensions.e2ee!.device_unused_fallback_key_types, []);
    assert.equal(first.extensions.e2ee!.device_lists, undefined, "a new connection has no device-list changes");
    const waiting = ss(alice, body, { pos: first.pos, timeout: 30_000 });
    const keys = {
      user_id: bob.userId,
      device_id: bob.deviceId,
      algorithms: ["m.olm.v1.curve25519-aes-sha2"],
      keys: { [`curve25519:${bob.deviceId}`]: "c", [`ed25519:${bob.deviceId}`]: "e" },
      signatures: {},
    };
    ok(await bob.req("POST", "/keys/upload", { device_keys: keys }));
    const changed = await waiting;
    assert.deepEqual(changed.extensions.e2ee!.device_lists, { changed: [bob.userId], left: [] });
  });

  test("e2ee: a user who joins a shared room is changed, one who leaves the last shared room is left", async () => {
    const [alice, bob] = [await user(), await user()];
    const roomId = await alice.createRoom({ preset: "public_chat" });
    const body = { conn_id: "encryption", extensions: { e2ee: { enabled: true } } };
    const first = await ss(alice, body);
    const joining = ss(alice, body, { pos: first.pos, timeout: 30_000 });
    await bob.join(roomId);
    const joined = await joining;
    assert.deepEqual(joined.extensions.e2ee!.device_lists, { changed: [bob.userId], left: [] });
    const leaving = ss(alice, body, { pos: joined.pos, timeout: 30_000 });
    ok(await bob.leave(roomId));
    const left = await leaving;
    assert.deepEqual(left.extensions.e2ee!.device_lists, { changed: [], left: [bob.userId] });
  });

  test("account_data: global data with m.push_rules first, then changes; room data; wakes a long-poll", async () => {
    const alice = await user();
    const roomId = await alice.createRoom({});
    ok(await alice.req("PUT", `/user/${enc(alice.userId)}/account_data/org.example.a`, { v: 1 }));
    ok(await alice.req("PUT", `/user/${enc(alice.userId)}/rooms/${enc(roomId)}/account_data/org.example.r`, { v: 2 }));
    const body = { lists: roomsList, extensions: { account_data: { enabled: true } } };
    const first = await ss(alice, body);
    const global = first.extensions.account_data!.global as { type: string; content: Record<string, unknown> }[];
    assert.deepEqual(global.find((e) => e.type === "org.example.a")?.content, { v: 1 });
    const rules = global.find((e) => e.type === "m.push_rules")?.content as { global?: Record<string, unknown> } | undefined;
    assert.ok(Array.isArray(rules?.global?.override), "m.push_rules holds the ruleset");
    assert.deepEqual(first.extensions.account_data!.rooms, { [roomId]: [{ type: "org.example.r", content: { v: 2 } }] });
    const waiting = ss(alice, body, { pos: first.pos, timeout: 30_000 });
    ok(await alice.req("PUT", `/user/${enc(alice.userId)}/account_data/org.example.b`, { v: 3 }));
    const next = await waiting;
    assert.deepEqual(next.extensions.account_data!.global, [{ type: "org.example.b", content: { v: 3 } }]);
    assert.deepEqual(next.extensions.account_data!.rooms, {});
  });

  test("receipts and typing of rooms in range, waking a long-poll", async () => {
    const [alice, bob] = [await user(), await user()];
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    const eventId = await alice.send(roomId, "read me");
    const body = { lists: roomsList, extensions: { receipts: { enabled: true, rooms: ["*"] }, typing: { enabled: true } } };
    const first = await ss(alice, body);
    assert.deepEqual(first.extensions.typing!.rooms, {});
    const waiting = ss(alice, body, { pos: first.pos, timeout: 30_000 });
    ok(await bob.req("POST", `/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, {}));
    let next = await waiting;
    const receipt = next.extensions.receipts!.rooms![roomId] as { type: string; content: Record<string, Record<string, Record<string, unknown>>> };
    assert.equal(receipt.type, "m.receipt");
    assert.ok(receipt.content[eventId]!["m.read"]![bob.userId]);
    const typingWait = ss(alice, body, { pos: next.pos, timeout: 30_000 });
    ok(await bob.req("PUT", `/rooms/${enc(roomId)}/typing/${enc(bob.userId)}`, { typing: true, timeout: 30_000 }));
    next = await typingWait;
    assert.deepEqual(next.extensions.typing!.rooms, { [roomId]: { type: "m.typing", content: { user_ids: [bob.userId] } } });
  });

  test("sticky events: live ones of every room in a list, paginated by since, without those in the timeline", async () => {
    const [alice, bob] = [await user(), await user()];
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    const sticky = ok(await bob.req("PUT", `/rooms/${enc(roomId)}/send/org.example.member/s1?${STICKY}=60000`, { k: 1 })).event_id as string;
    await bob.send(roomId, "after");
    const body = (since?: string) => ({
      lists: { all: { ranges: [[0, 0]], timeline_limit: 1, required_state: [] } },
      extensions: { [STICKY_EXT]: { enabled: true, limit: 100, ...(since ? { since } : {}) } },
    });
    const first = await ss(alice, body());
    const ext = first.extensions[STICKY_EXT]!;
    assert.deepEqual((ext.rooms![roomId] as { events: Ev[] }).events.map((e) => e.event_id), [sticky]);
    assert.match(ext.next_batch as string, /^sticky_[0-9]+$/);
    const waiting = ss(alice, body(ext.next_batch as string), { pos: first.pos, timeout: 30_000 });
    const second = ok(await bob.req("PUT", `/rooms/${enc(roomId)}/send/org.example.member/s2?${STICKY}=60000`, { k: 2 })).event_id as string;
    const next = await waiting;
    assert.deepEqual(next.rooms[roomId]!.timeline!.map((e) => e.event_id), [second]);
    // The timeline carries the event, so the extension does not repeat it; but it still moves
    // next_batch past it (as Synapse does): without that the client would ask from its old
    // since again and get the same event a second time.
    const nextExt = next.extensions[STICKY_EXT]!;
    assert.deepEqual(nextExt.rooms, {}, "an event the timeline carries is not repeated");
    assert.match(nextExt.next_batch as string, /^sticky_[0-9]+$/);
    assert.notEqual(nextExt.next_batch, ext.next_batch);
    const later = await ss(alice, body(nextExt.next_batch as string), { pos: next.pos });
    assert.equal(later.extensions[STICKY_EXT], undefined, "nothing new: the event is not sent again");
  });

  test("sticky events: a since ahead of every position answers 400 M_UNKNOWN_POS, as Synapse does", async () => {
    const alice = await user();
    await alice.createRoom({});
    const body = { lists: roomsList, extensions: { [STICKY_EXT]: { enabled: true, since: "sticky_999999999999" } } };
    assertError(await request(server.baseUrl, "POST", PATH, { token: alice.token, body }), 400, "M_UNKNOWN_POS");
  });
});
