/**
 * Account data, typing, receipts, read markers and push rules: their
 * endpoints, and how each reaches other clients through `/sync`.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { registerUser, request, startServer, type TestServer } from "./helpers/server.js";
import { createRoom, joinRoom, sendMessage, sync, type Ev, type Login } from "./helpers/sync.js";

const C = "/_matrix/client/v3";
const enc = encodeURIComponent;

describe("user data in /sync", () => {
  let server: TestServer;
  let base: string;
  let n = 0;
  const user = async (): Promise<Login> => registerUser(base, `ud${++n}`);
  const put = (u: Login, path: string, body: unknown) => request(base, "PUT", C + path, { token: u.access_token, body });
  const post = (u: Login, path: string, body: unknown) => request(base, "POST", C + path, { token: u.access_token, body });
  const get = (u: Login, path: string) => request(base, "GET", C + path, { token: u.access_token });

  before(async () => {
    server = await startServer();
    base = server.baseUrl;
  });
  after(async () => server?.stop());

  test("account data: global and per room, read back, and delivered by sync once", async () => {
    const alice = await user();
    const roomId = await createRoom(base, alice);
    const first = await sync(base, alice);

    assert.equal((await put(alice, `/user/${enc(alice.user_id)}/account_data/org.example.settings`, { theme: "dark" })).status, 200);
    assert.equal((await put(alice, `/user/${enc(alice.user_id)}/rooms/${enc(roomId)}/account_data/m.tag`, { tags: { fav: {} } })).status, 200);
    assert.deepEqual((await get(alice, `/user/${enc(alice.user_id)}/account_data/org.example.settings`)).body, { theme: "dark" });
    assert.deepEqual((await get(alice, `/user/${enc(alice.user_id)}/rooms/${enc(roomId)}/account_data/m.tag`)).body, { tags: { fav: {} } });

    const inc = await sync(base, alice, { since: first.next_batch });
    assert.deepEqual(inc.account_data.events, [{ type: "org.example.settings", content: { theme: "dark" } }]);
    assert.deepEqual(inc.rooms.join[roomId]!.account_data!.events, [{ type: "m.tag", content: { tags: { fav: {} } } }]);
    const again = await sync(base, alice, { since: inc.next_batch });
    assert.deepEqual(again.account_data.events, []);
    assert.deepEqual(again.rooms.join, {});

    // An update replaces the value, and a long-polling sync wakes for it.
    const polling = sync(base, alice, { since: inc.next_batch, timeout: 30000 });
    await new Promise((r) => setTimeout(r, 50));
    await put(alice, `/user/${enc(alice.user_id)}/account_data/org.example.settings`, { theme: "light" });
    assert.deepEqual((await polling).account_data.events, [{ type: "org.example.settings", content: { theme: "light" } }]);

    const initial = await sync(base, alice);
    assert.ok(initial.account_data.events.some((e) => e.type === "org.example.settings" && e.content.theme === "light"));
  });

  test("room account data set before joining arrives with the room", async () => {
    const alice = await user();
    const bob = await user();
    const roomId = await createRoom(base, alice, { preset: "public_chat" });
    const first = await sync(base, bob);
    await put(bob, `/user/${enc(bob.user_id)}/rooms/${enc(roomId)}/account_data/org.example.note`, { note: 1 });
    const mid = await sync(base, bob, { since: first.next_batch });
    await joinRoom(base, bob, roomId);
    const res = await sync(base, bob, { since: mid.next_batch });
    assert.deepEqual(res.rooms.join[roomId]!.account_data!.events, [{ type: "org.example.note", content: { note: 1 } }]);
  });

  test("typing: start and stop reach the room's other members as m.typing", async () => {
    const alice = await user();
    const bob = await user();
    const roomId = await createRoom(base, alice, { preset: "public_chat" });
    await joinRoom(base, bob, roomId);
    const first = await sync(base, alice);
    const typingPath = `/rooms/${enc(roomId)}/typing/${enc(bob.user_id)}`;

    const polling = sync(base, alice, { since: first.next_batch, timeout: 30000 });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal((await put(bob, typingPath, { typing: true, timeout: 30000 })).status, 200);
    const started = await polling;
    assert.deepEqual(started.rooms.join[roomId]!.ephemeral!.events, [{ type: "m.typing", content: { user_ids: [bob.user_id] } }]);

    // A new initial sync shows who types now.
    const initial = await sync(base, alice);
    assert.ok(initial.rooms.join[roomId]!.ephemeral!.events.some((e) => e.type === "m.typing"));

    assert.equal((await put(bob, typingPath, { typing: false })).status, 200);
    const stopped = await sync(base, alice, { since: started.next_batch });
    assert.deepEqual(stopped.rooms.join[roomId]!.ephemeral!.events, [{ type: "m.typing", content: { user_ids: [] } }]);
  });

  test("a member who leaves stops typing", async () => {
    const alice = await user();
    const bob = await user();
    const roomId = await createRoom(base, alice, { preset: "public_chat" });
    await joinRoom(base, bob, roomId);
    await put(bob, `/rooms/${enc(roomId)}/typing/${enc(bob.user_id)}`, { typing: true, timeout: 60000 });
    const typing = await sync(base, alice);
    assert.deepEqual(typing.rooms.join[roomId]!.ephemeral!.events[0]!.content, { user_ids: [bob.user_id] });
    assert.equal((await post(bob, `/rooms/${enc(roomId)}/leave`, {})).status, 200);
    const after = await sync(base, alice, { since: typing.next_batch });
    assert.deepEqual(after.rooms.join[roomId]!.ephemeral!.events, [{ type: "m.typing", content: { user_ids: [] } }]);
  });

  test("typing expires after its timeout", async () => {
    const alice = await user();
    const roomId = await createRoom(base, alice);
    const first = await sync(base, alice);
    await put(alice, `/rooms/${enc(roomId)}/typing/${enc(alice.user_id)}`, { typing: true, timeout: 1500 });
    const started = await sync(base, alice, { since: first.next_batch });
    assert.deepEqual(started.rooms.join[roomId]!.ephemeral!.events[0]!.content, { user_ids: [alice.user_id] });
    const expired = await sync(base, alice, { since: started.next_batch, timeout: 30000 });
    assert.deepEqual(expired.rooms.join[roomId]!.ephemeral!.events[0]!.content, { user_ids: [] });
  });

  test("receipts: m.read is shared, m.read.private only with yourself, thread_id is kept", async () => {
    const alice = await user();
    const bob = await user();
    const roomId = await createRoom(base, alice, { preset: "public_chat" });
    await joinRoom(base, bob, roomId);
    const eventId = await sendMessage(base, alice, roomId, "read me");
    const aliceFirst = await sync(base, alice);
    const bobFirst = await sync(base, bob);

    assert.equal((await post(bob, `/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, { thread_id: "main" })).status, 200);
    assert.equal((await post(bob, `/rooms/${enc(roomId)}/receipt/m.read.private/${enc(eventId)}`, {})).status, 200);

    const receiptOf = (events: Ev[] | undefined) => events?.find((e) => e.type === "m.receipt")?.content;
    const seenByAlice = receiptOf((await sync(base, alice, { since: aliceFirst.next_batch })).rooms.join[roomId]?.ephemeral?.events);
    assert.deepEqual(Object.keys((seenByAlice![eventId] as Record<string, unknown>) ?? {}), ["m.read"]);
    const aliceView = (seenByAlice![eventId] as Record<string, Record<string, Record<string, unknown>>>)["m.read"]![bob.user_id]!;
    assert.equal(aliceView.thread_id, "main");
    assert.equal(typeof aliceView.ts, "number");

    const seenByBob = receiptOf((await sync(base, bob, { since: bobFirst.next_batch })).rooms.join[roomId]?.ephemeral?.events);
    assert.deepEqual(Object.keys(seenByBob![eventId] as Record<string, unknown>).sort(), ["m.read", "m.read.private"]);

    // An initial sync includes the room's receipts.
    const initial = receiptOf((await sync(base, alice)).rooms.join[roomId]!.ephemeral!.events);
    assert.ok(initial![eventId]);
  });

  test("read markers: m.fully_read becomes room account data; m.read a receipt", async () => {
    const alice = await user();
    const roomId = await createRoom(base, alice);
    const eventId = await sendMessage(base, alice, roomId, "marker");
    const first = await sync(base, alice);
    const res = await post(alice, `/rooms/${enc(roomId)}/read_markers`, { "m.fully_read": eventId, "m.read": eventId });
    assert.equal(res.status, 200);
    const inc = await sync(base, alice, { since: first.next_batch });
    const room = inc.rooms.join[roomId]!;
    assert.deepEqual(room.account_data!.events, [{ type: "m.fully_read", content: { event_id: eventId } }]);
    assert.ok(room.ephemeral!.events.some((e) => e.type === "m.receipt"));
    assert.deepEqual((await get(alice, `/user/${enc(alice.user_id)}/rooms/${enc(roomId)}/account_data/m.fully_read`)).body, {
      event_id: eventId,
    });

    // The receipt endpoint's m.fully_read does the same.
    const second = await sendMessage(base, alice, roomId, "later");
    assert.equal((await post(alice, `/rooms/${enc(roomId)}/receipt/m.fully_read/${enc(second)}`, {})).status, 200);
    const again = await sync(base, alice, { since: inc.next_batch });
    assert.deepEqual(again.rooms.join[roomId]!.account_data!.events, [{ type: "m.fully_read", content: { event_id: second } }]);
  });

  test("push rules: the server-default ruleset", async () => {
    const alice = await user();
    const res = await get(alice, "/pushrules/");
    assert.equal(res.status, 200);
    const global = res.body.global as Record<string, { rule_id: string; default: boolean; enabled: boolean }[]>;
    for (const kind of ["override", "content", "room", "sender", "underride"]) assert.ok(Array.isArray(global[kind]), kind);
    assert.equal(global.override![0]!.rule_id, ".m.rule.master");
    assert.equal(global.override![0]!.enabled, false);
    assert.ok(global.underride!.some((r) => r.rule_id === ".m.rule.message"));
    const content = global.content![0] as unknown as { pattern: string };
    assert.equal(content.pattern, alice.user_id.slice(1).split(":")[0]);

    assert.deepEqual((await get(alice, "/pushrules")).body, res.body, "with or without the trailing slash");
    const globalOnly = await get(alice, "/pushrules/global/");
    assert.deepEqual(globalOnly.body, global);
    const one = await get(alice, "/pushrules/global/underride/.m.rule.message");
    assert.equal(one.body.rule_id, ".m.rule.message");
    assert.deepEqual((await get(alice, "/pushrules/global/override/.m.rule.master/enabled")).body, { enabled: false });
    assert.deepEqual((await get(alice, "/pushrules/global/underride/.m.rule.message/actions")).body, { actions: ["notify"] });
  });
});
