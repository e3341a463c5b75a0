/**
 * Push-rule evaluation as clients see it: notification and highlight counts in `/sync`, cleared
 * by read receipts (threaded and not), and `GET /notifications`.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { assertError, enc, ok, startWithUsers, User } from "./helpers/rooms.js";
import { request, startServer, type TestServer } from "./helpers/server.js";

let server: TestServer;
let alice: User;
let bob: User;
let carol: User;

before(async () => {
  ({ server, users: [alice, bob, carol] } = await startWithUsers("alice", "bob", "carol"));
});
after(async () => server?.stop());

interface Counts {
  notification_count: number;
  highlight_count: number;
}

async function syncRoom(user: User, roomId: string, filter?: Record<string, unknown>) {
  const qs = filter ? `?filter=${enc(JSON.stringify(filter))}` : "";
  const body = ok(await user.req("GET", `/sync${qs}`)) as {
    rooms: { join: Record<string, { unread_notifications: Counts; unread_thread_notifications?: Record<string, Counts> }> };
  };
  const room = body.rooms.join[roomId];
  assert.ok(room, `${roomId} is in ${user.userId}'s sync`);
  return room;
}

const counts = async (user: User, roomId: string) => (await syncRoom(user, roomId)).unread_notifications;

async function receipt(user: User, roomId: string, eventId: string, type = "m.read", threadId?: string) {
  ok(await user.req("POST", `/rooms/${enc(roomId)}/receipt/${type}/${enc(eventId)}`, threadId ? { thread_id: threadId } : {}));
}

describe("notification counts", () => {
  test("messages count, mentions highlight, the sender's own and notices do not; a read receipt clears them", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    await carol.join(roomId);
    assert.deepEqual(await counts(bob, roomId), { notification_count: 0, highlight_count: 0 });
    await alice.send(roomId, "hello all");
    await alice.send(roomId, { msgtype: "m.notice", body: "a bot speaks" });
    const mention = await alice.send(roomId, { msgtype: "m.text", body: "Bob, look", "m.mentions": { user_ids: [bob.userId] } });
    assert.deepEqual(await counts(bob, roomId), { notification_count: 2, highlight_count: 1 });
    assert.deepEqual(await counts(carol, roomId), { notification_count: 2, highlight_count: 0 });
    assert.deepEqual(await counts(alice, roomId), { notification_count: 0, highlight_count: 0 });
    // A private receipt clears as well as a public one; events after it count again.
    await receipt(bob, roomId, mention, "m.read.private");
    assert.deepEqual(await counts(bob, roomId), { notification_count: 0, highlight_count: 0 });
    await alice.send(roomId, "more");
    assert.deepEqual(await counts(bob, roomId), { notification_count: 1, highlight_count: 0 });
    // An incremental sync brings the room with its new counts when only a receipt changed.
    const first = ok(await carol.req("GET", "/sync")) as { next_batch: string };
    const last = await alice.send(roomId, "the last");
    await receipt(carol, roomId, last);
    const next = ok(await carol.req("GET", `/sync?since=${enc(first.next_batch)}`)) as { rooms: { join: Record<string, { unread_notifications: Counts }> } };
    assert.deepEqual(next.rooms.join[roomId]?.unread_notifications, { notification_count: 0, highlight_count: 0 });
  });

  test("a room mention highlights only from a sender allowed to notify the room", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    await carol.join(roomId);
    // Carol has power level 0, below `notifications.room` (50): her @room is a plain message.
    await carol.send(roomId, { msgtype: "m.text", body: "@room hi", "m.mentions": { room: true } });
    assert.deepEqual(await counts(bob, roomId), { notification_count: 1, highlight_count: 0 });
    await alice.send(roomId, { msgtype: "m.text", body: "@room hi", "m.mentions": { room: true } });
    assert.deepEqual(await counts(bob, roomId), { notification_count: 2, highlight_count: 1 });
  });

  test("a change of power levels decides the room mentions sent after it, not before", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    await carol.join(roomId);
    const path = `/rooms/${enc(roomId)}/state/m.room.power_levels/`;
    const levels = ok(await alice.req("GET", path)) as Record<string, unknown>;
    const mention = { msgtype: "m.text", body: "@room hi", "m.mentions": { room: true } };
    await carol.send(roomId, mention);
    assert.deepEqual(await counts(bob, roomId), { notification_count: 1, highlight_count: 0 });
    // Anyone may now notify the room: Carol's next @room highlights.
    ok(await alice.req("PUT", path, { ...levels, notifications: { room: 0 } }));
    await carol.send(roomId, mention);
    assert.deepEqual(await counts(bob, roomId), { notification_count: 2, highlight_count: 1 });
    // And no longer: the room is back to its old rule for the mention after.
    ok(await alice.req("PUT", path, { ...levels, notifications: { room: 100 } }));
    await carol.send(roomId, mention);
    assert.deepEqual(await counts(bob, roomId), { notification_count: 3, highlight_count: 1 });
  });

  test("thread replies count in their thread when the client asks; a threaded receipt clears only its thread", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    const root = await alice.send(roomId, "a thread starts");
    const inThread = { msgtype: "m.text", body: "reply", "m.relates_to": { rel_type: "m.thread", event_id: root } };
    await alice.send(roomId, inThread);
    await alice.send(roomId, inThread);
    const threaded = { room: { timeline: { unread_thread_notifications: true } } };
    let room = await syncRoom(bob, roomId, threaded);
    assert.deepEqual(room.unread_notifications, { notification_count: 1, highlight_count: 0 });
    assert.deepEqual(room.unread_thread_notifications, { [root]: { notification_count: 2, highlight_count: 0 } });
    // Without asking, the thread counts towards the room.
    assert.deepEqual(await counts(bob, roomId), { notification_count: 3, highlight_count: 0 });
    await receipt(bob, roomId, root, "m.read", "main");
    room = await syncRoom(bob, roomId, threaded);
    assert.deepEqual(room.unread_notifications, { notification_count: 0, highlight_count: 0 });
    assert.deepEqual(room.unread_thread_notifications, { [root]: { notification_count: 2, highlight_count: 0 } });
  });

  test("an invite notifies the invitee; an encrypted message in a room of two notifies", async () => {
    const roomId = await alice.createRoom({ preset: "private_chat", invite: [bob.userId] });
    const res = ok(await bob.req("GET", "/notifications")) as { notifications: { room_id: string; event: { type: string; state_key?: string } }[] };
    assert.ok(res.notifications.some((n) => n.room_id === roomId && n.event.type === "m.room.member" && n.event.state_key === bob.userId));
    await bob.join(roomId);
    // As in Synapse, /sync counts from the join when there is no receipt: the invite that
    // notified no longer counts once Bob is in (the push badge still counts it; see pushers).
    assert.deepEqual(await counts(bob, roomId), { notification_count: 0, highlight_count: 0 });
    await alice.send(roomId, { algorithm: "m.megolm.v1.aes-sha2", ciphertext: "xyz", sender_key: "k", session_id: "s", device_id: "D" }, "m.room.encrypted");
    assert.deepEqual(await counts(bob, roomId), { notification_count: 1, highlight_count: 0 });
  });
});

describe("MatrixRTC ringing rules", () => {
  const ring = (mentions: Record<string, unknown>) => ({
    slot_id: "m.call#ROOM",
    notification_type: "ring",
    "m.mentions": mentions,
    sender_ts: Date.now(),
    lifetime: 30_000,
  });
  const TYPE = "org.matrix.msc4075.rtc.notification";

  test("a ring that mentions the room, from a member allowed to, rings; with the rules off it is a room mention", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    await alice.send(roomId, ring({ room: true }), TYPE);
    const [n] = (ok(await bob.req("GET", "/notifications?limit=1")) as { notifications: { actions: unknown[]; event: { type: string } }[] }).notifications;
    assert.equal(n?.event.type, TYPE);
    assert.deepEqual(n?.actions, ["notify", { set_tweak: "sound", value: "ring" }]);

    const off = await startServer({ experimental_features: { msc4075_call_rules: false } });
    try {
      const [a, b] = [await User.register(off.baseUrl, "alice"), await User.register(off.baseUrl, "bob")];
      const room = await a.createRoom({ preset: "public_chat" });
      await b.join(room);
      await a.send(room, ring({ room: true }), TYPE);
      const [m] = (ok(await b.req("GET", "/notifications")) as { notifications: { actions: unknown[] }[] }).notifications;
      assert.deepEqual(m?.actions, ["notify", { set_tweak: "highlight" }]);
    } finally {
      await off.stop();
    }
  });
});

describe("GET /notifications", () => {
  test("newest first, with read flags, read plain notifications gone, highlights only on request, paged with next_token", async () => {
    const dana = await User.register(server.baseUrl, "dana");
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await dana.join(roomId);
    const sent: string[] = [];
    for (let i = 0; i < 5; i++) sent.push(await alice.send(roomId, { msgtype: "m.text", body: `m${i}`, ...(i === 1 ? { "m.mentions": { user_ids: [dana.userId] } } : {}) }));
    await receipt(dana, roomId, sent[2]!);
    // The receipt covers m0..m2: their plain notifications go (as in Synapse); the mention in m1
    // is a highlight, and stays, marked read.
    const page1 = ok(await dana.req("GET", "/notifications?limit=2")) as {
      notifications: { event: { event_id: string }; read: boolean; room_id: string; ts: number; actions: unknown[] }[];
      next_token?: string;
    };
    assert.deepEqual(page1.notifications.map((n) => n.event.event_id), [sent[4], sent[3]]);
    assert.deepEqual(page1.notifications.map((n) => n.read), [false, false]);
    assert.equal(page1.notifications[0]?.room_id, roomId);
    assert.ok(page1.next_token);
    const page2 = ok(await dana.req("GET", `/notifications?limit=2&from=${enc(page1.next_token)}`)) as typeof page1;
    assert.deepEqual(page2.notifications.map((n) => n.event.event_id), [sent[1]]);
    assert.deepEqual(page2.notifications.map((n) => n.read), [true]);
    assert.equal(page2.next_token, undefined);
    const highlights = ok(await dana.req("GET", "/notifications?only=highlight")) as typeof page1;
    assert.deepEqual(highlights.notifications.map((n) => n.event.event_id), [sent[1]]);
    assertError(await dana.req("GET", "/notifications?from=not-a-token"), 400, "M_INVALID_PARAM");
    assertError(await dana.req("GET", "/notifications?limit=lots"), 400, "M_INVALID_PARAM");
    assertError(await request(server.baseUrl, "GET", "/_matrix/client/v3/notifications"), 401, "M_MISSING_TOKEN");
  });
});
