/**
 * `/sync` over plain HTTP: initial and incremental responses, state
 * semantics, long-polling, full_state, filters and MSC4222 state_after.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { registerUser, request, startServer, until, type TestServer } from "./helpers/server.js";
import {
  bodies,
  createRoom,
  ids,
  joinRoom,
  sendMessage,
  setState,
  stateAfter,
  sync,
  type Ev,
  type Login,
} from "./helpers/sync.js";

const C = "/_matrix/client/v3";
const enc = encodeURIComponent;
const limitFilter = (limit: number, extra: Record<string, unknown> = {}) => JSON.stringify({ room: { timeline: { limit, ...extra } } });
const types = (events: Ev[] | undefined) => (events ?? []).map((e) => `${e.type}|${e.state_key ?? ""}`);

describe("/sync", () => {
  let server: TestServer;
  let base: string;
  let n = 0;
  const user = async (): Promise<Login> => registerUser(base, `sync${++n}`);

  before(async () => {
    server = await startServer();
    base = server.baseUrl;
  });
  after(async () => server?.stop());

  test("initial sync: limited timeline, state at its start, prev_batch that /messages pages back from", async () => {
    const alice = await user();
    const roomId = await createRoom(base, alice, { name: "Initial", topic: "first topic" });
    for (let i = 1; i <= 4; i++) await sendMessage(base, alice, roomId, `m${i}`);

    const res = await sync(base, alice, { filter: limitFilter(2) });
    assert.match(res.next_batch, /.+/);
    const room = res.rooms.join[roomId]!;
    assert.ok(room, "the joined room is in rooms.join");
    assert.deepEqual(bodies(room.timeline.events), ["m3", "m4"]);
    assert.equal(room.timeline.limited, true);
    const state = room.state!.events;
    for (const t of ["m.room.create|", "m.room.name|", "m.room.topic|", `m.room.member|${alice.user_id}`, "m.room.power_levels|"]) {
      assert.ok(types(state).includes(t), `state has ${t}`);
    }
    const timelineIds = new Set(ids(room.timeline.events));
    assert.ok(state.every((e) => !timelineIds.has(e.event_id)), "state holds nothing the timeline has");
    assert.equal(room.summary?.["m.joined_member_count"], 1);
    assert.deepEqual(room.unread_notifications, { notification_count: 0, highlight_count: 0 });
    assert.deepEqual(room.ephemeral, { events: [] });
    assert.deepEqual(room.account_data, { events: [] });

    const page = await request(base, "GET", `${C}/rooms/${enc(roomId)}/messages?dir=b&limit=2&from=${enc(room.timeline.prev_batch)}`, {
      token: alice.access_token,
    });
    assert.equal(page.status, 200);
    assert.deepEqual(bodies(page.body.chunk as Ev[]), ["m2", "m1"]);
  });

  test("incremental sync holds only new events, and a state change inside an unlimited timeline is not repeated in state", async () => {
    const alice = await user();
    const roomId = await createRoom(base, alice);
    const first = await sync(base, alice);
    await sendMessage(base, alice, roomId, "hello");
    const topicId = await setState(base, alice, roomId, "m.room.topic", "", { topic: "new" });
    const next = await sync(base, alice, { since: first.next_batch });
    const room = next.rooms.join[roomId]!;
    assert.deepEqual(bodies(room.timeline.events), ["hello"]);
    assert.ok(ids(room.timeline.events).includes(topicId));
    assert.equal(room.timeline.limited, false);
    assert.deepEqual(room.state, { events: [] });

    const quiet = await sync(base, alice, { since: next.next_batch, timeout: 0 });
    assert.deepEqual(quiet.rooms.join, {}, "nothing new: no room entry");
    assert.equal(quiet.next_batch, next.next_batch);
  });

  test("limited incremental sync: state holds what changed between since and the timeline's start", async () => {
    const alice = await user();
    const roomId = await createRoom(base, alice);
    const first = await sync(base, alice);
    const topicId = await setState(base, alice, roomId, "m.room.topic", "", { topic: "changed in the gap" });
    for (let i = 1; i <= 5; i++) await sendMessage(base, alice, roomId, `g${i}`);
    const next = await sync(base, alice, { since: first.next_batch, filter: limitFilter(2) });
    const room = next.rooms.join[roomId]!;
    assert.equal(room.timeline.limited, true);
    assert.deepEqual(bodies(room.timeline.events), ["g4", "g5"]);
    assert.deepEqual(ids(room.state!.events), [topicId]);
  });

  test("a long-polling incremental sync wakes with the event that arrives", async () => {
    const alice = await user();
    const bob = await user();
    const roomId = await createRoom(base, alice, { preset: "public_chat" });
    await joinRoom(base, bob, roomId);
    const first = await sync(base, bob);
    const polling = sync(base, bob, { since: first.next_batch, timeout: 30000 });
    // Give the request time to reach the server and start waiting; the assertion does not depend on it.
    await new Promise((r) => setTimeout(r, 100));
    const eventId = await sendMessage(base, alice, roomId, "wake up");
    const woken = await polling;
    assert.deepEqual(ids(woken.rooms.join[roomId]!.timeline.events), [eventId]);
  });

  test("a long-poll with nothing to report answers empty when its timeout ends", async () => {
    const alice = await user();
    await createRoom(base, alice);
    const first = await sync(base, alice);
    const res = await sync(base, alice, { since: first.next_batch, timeout: 50 });
    assert.deepEqual(res.rooms.join, {});
    assert.equal(res.next_batch, first.next_batch);
  });

  // The long-polls below would wait ten minutes if the abort did not end them; the test's own
  // timeout turns such a hang into a failure.
  test("a long-poll ends when the client goes away", { timeout: 20_000 }, async () => {
    const alice = await user();
    await createRoom(base, alice);
    const first = await sync(base, alice);
    const requester = (await server.homeserver.services.auth.authenticate(alice.access_token))!;
    const controller = new AbortController();
    const polling = server.homeserver.services.sync.sync(requester, {
      since: first.next_batch,
      timeoutMs: 600_000,
      fullState: false,
      stateAfter: "none",
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(), 50);
    const res = await polling;
    assert.deepEqual(res.rooms.join, {});
    assert.equal(res.next_batch, first.next_batch);

    // Over HTTP: the client aborts; the server must not be left holding the request.
    const aborted = new AbortController();
    const req = fetch(`${base}${C}/sync?since=${enc(first.next_batch)}&timeout=600000`, {
      headers: { authorization: `Bearer ${alice.access_token}` },
      signal: aborted.signal,
    });
    setTimeout(() => aborted.abort(), 50);
    await assert.rejects(req);
  });

  test("stopping the server answers the long-polls in flight", { timeout: 20_000 }, async () => {
    const other = await startServer();
    try {
      const alice = await registerUser(other.baseUrl, "stopper");
      const first = await sync(other.baseUrl, alice);
      // Stop only once the long-poll is waiting inside the server, however slow the machine.
      const notifier = other.homeserver.services.notifier;
      const wait = notifier.wait.bind(notifier);
      let waiting = false;
      notifier.wait = (...args) => {
        waiting = true;
        return wait(...args);
      };
      const polling = sync(other.baseUrl, alice, { since: first.next_batch, timeout: 600_000 });
      polling.catch(() => {}); // awaited below; this only keeps a failure from being unhandled meanwhile
      await until(() => waiting);
      await other.stop();
      const res = await polling;
      assert.equal(res.next_batch, first.next_batch);
    } finally {
      await other.stop();
    }
  });

  test("full_state sends every joined room's full state at once, even with nothing new", async () => {
    const alice = await user();
    const roomId = await createRoom(base, alice, { name: "Full" });
    const first = await sync(base, alice);
    const res = await sync(base, alice, { since: first.next_batch, full_state: true, timeout: 30000 });
    const room = res.rooms.join[roomId]!;
    assert.deepEqual(room.timeline.events, []);
    assert.ok(types(room.state!.events).includes("m.room.name|"));
    assert.ok(types(room.state!.events).includes("m.room.create|"));
  });

  test("MSC4222: state_after replaces state; full at the end of the timeline initially, changes since `since` later", async () => {
    const alice = await user();
    const bob = await user();
    const roomId = await createRoom(base, alice, { preset: "public_chat", name: "SA" });
    await joinRoom(base, bob, roomId);
    const q = { "org.matrix.msc4222.use_state_after": true };

    const initial = await sync(base, alice, { ...q, filter: limitFilter(1) });
    const room = initial.rooms.join[roomId]!;
    assert.equal(room.state, undefined, "no `state` key with state_after");
    const after0 = stateAfter(room)!;
    // The timeline's only event is Bob's join; state_after still includes it, since it is state at the end.
    assert.equal(room.timeline.events[0]!.state_key, bob.user_id);
    assert.ok(types(after0).includes(`m.room.member|${bob.user_id}`));
    assert.ok(types(after0).includes("m.room.name|"));

    const topicId = await setState(base, alice, roomId, "m.room.topic", "", { topic: "after" });
    await sendMessage(base, alice, roomId, "after the topic");
    const inc = await sync(base, alice, { ...q, since: initial.next_batch });
    const incRoom = inc.rooms.join[roomId]!;
    assert.ok(ids(incRoom.timeline.events).includes(topicId), "the topic change is in the timeline");
    assert.deepEqual(ids(stateAfter(incRoom)!), [topicId], "and in state_after too");

    // Only ephemeral news: state_after is present and empty.
    const typing = await request(base, "PUT", `${C}/rooms/${enc(roomId)}/typing/${enc(bob.user_id)}`, {
      token: bob.access_token,
      body: { typing: true, timeout: 10000 },
    });
    assert.equal(typing.status, 200);
    const eph = await sync(base, alice, { ...q, since: inc.next_batch });
    const ephRoom = eph.rooms.join[roomId]!;
    assert.deepEqual(ephRoom["org.matrix.msc4222.state_after"], { events: [] });
    assert.deepEqual(ephRoom.timeline.events, []);
    assert.deepEqual(ephRoom.ephemeral!.events[0], { type: "m.typing", content: { user_ids: [bob.user_id] } });

    const versions = await request(base, "GET", "/_matrix/client/versions");
    assert.equal((versions.body.unstable_features as Record<string, boolean>)["org.matrix.msc4222"], true);

    const stable = await sync(base, alice, { use_state_after: true });
    assert.ok(stable.rooms.join[roomId]!.state_after, "the stable parameter gives the stable key");
    assert.equal(stable.rooms.join[roomId]!.state, undefined);
  });

  test("MSC4222 with a limited incremental timeline: state_after still holds every change since `since`", async () => {
    const alice = await user();
    const roomId = await createRoom(base, alice);
    const q = { "org.matrix.msc4222.use_state_after": true };
    const first = await sync(base, alice, q);
    const nameId = await setState(base, alice, roomId, "m.room.name", "", { name: "renamed" });
    for (let i = 0; i < 4; i++) await sendMessage(base, alice, roomId, `x${i}`);
    const res = await sync(base, alice, { ...q, since: first.next_batch, filter: limitFilter(2) });
    const room = res.rooms.join[roomId]!;
    assert.equal(room.timeline.limited, true);
    assert.deepEqual(ids(stateAfter(room)!), [nameId]);
  });

  test("filters: a stored filter's types and not_types apply to the timeline", async () => {
    const alice = await user();
    const roomId = await createRoom(base, alice);
    await sendMessage(base, alice, roomId, "a message");
    await setState(base, alice, roomId, "m.room.topic", "", { topic: "t" });
    const created = await request(base, "POST", `${C}/user/${enc(alice.user_id)}/filter`, {
      token: alice.access_token,
      body: { room: { timeline: { types: ["m.room.message"] } } },
    });
    assert.equal(created.status, 200);
    const filterId = created.body.filter_id as string;
    const fetched = await request(base, "GET", `${C}/user/${enc(alice.user_id)}/filter/${filterId}`, { token: alice.access_token });
    assert.deepEqual(fetched.body, { room: { timeline: { types: ["m.room.message"] } } });

    const onlyMessages = await sync(base, alice, { filter: filterId });
    assert.deepEqual(types(onlyMessages.rooms.join[roomId]!.timeline.events), ["m.room.message|"]);

    const noMessages = await sync(base, alice, { filter: JSON.stringify({ room: { timeline: { not_types: ["m.room.message"] } } }) });
    const tl = noMessages.rooms.join[roomId]!.timeline.events;
    assert.ok(tl.length > 0);
    assert.ok(tl.every((e) => e.type !== "m.room.message"));

    const wildcard = await sync(base, alice, { filter: JSON.stringify({ room: { state: { types: ["m.room.c*"] }, timeline: { limit: 1 } } }) });
    assert.ok(types(wildcard.rooms.join[roomId]!.state!.events).every((t) => t.startsWith("m.room.c")));
  });

  test("filters: room.rooms/not_rooms, and the top-level account_data filter", async () => {
    const alice = await user();
    const r1 = await createRoom(base, alice);
    const r2 = await createRoom(base, alice);
    const only1 = await sync(base, alice, { filter: JSON.stringify({ room: { rooms: [r1] } }) });
    assert.deepEqual(Object.keys(only1.rooms.join), [r1]);
    const not1 = await sync(base, alice, { filter: JSON.stringify({ room: { not_rooms: [r1] } }) });
    assert.deepEqual(Object.keys(not1.rooms.join), [r2]);

    for (const type of ["org.example.a", "org.example.b"]) {
      const res = await request(base, "PUT", `${C}/user/${enc(alice.user_id)}/account_data/${type}`, { token: alice.access_token, body: { type } });
      assert.equal(res.status, 200);
    }
    const filtered = await sync(base, alice, { filter: JSON.stringify({ account_data: { not_types: ["org.example.b"] } }) });
    assert.deepEqual(filtered.account_data.events.map((e) => e.type), ["org.example.a"]);
  });

  test("lazy_load_members: member events only for timeline senders and the syncing user, unless full_state", async () => {
    const alice = await user();
    const bob = await user();
    const carol = await user();
    const roomId = await createRoom(base, alice, { preset: "public_chat" });
    await joinRoom(base, bob, roomId);
    await joinRoom(base, carol, roomId);
    await sendMessage(base, alice, roomId, "from alice");
    await sendMessage(base, bob, roomId, "from bob");
    const lazy = { room: { timeline: { limit: 1 }, state: { lazy_load_members: true } } };

    const res = await sync(base, carol, { filter: JSON.stringify(lazy) });
    const members = res.rooms.join[roomId]!.state!.events.filter((e) => e.type === "m.room.member").map((e) => e.state_key);
    assert.deepEqual(members.sort(), [bob.user_id, carol.user_id].sort());

    // Incremental: Alice speaks; her member event comes along although it did not change.
    await sendMessage(base, alice, roomId, "alice again");
    const inc = await sync(base, carol, { filter: JSON.stringify(lazy), since: res.next_batch });
    const incMembers = inc.rooms.join[roomId]!.state!.events.filter((e) => e.type === "m.room.member").map((e) => e.state_key);
    assert.ok(incMembers.includes(alice.user_id));
    assert.ok(!incMembers.includes(bob.user_id));

    const full = await sync(base, carol, { filter: JSON.stringify(lazy), full_state: true });
    const allMembers = full.rooms.join[roomId]!.state!.events.filter((e) => e.type === "m.room.member");
    assert.equal(allMembers.length, 3);
  });

  test("transaction_id is shown to the sending device only", async () => {
    const alice = await user();
    const login = await request(base, "POST", `${C}/login`, {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: alice.user_id }, password: "correct horse battery staple" },
    });
    assert.equal(login.status, 200);
    const other = login.body as unknown as Login;
    const roomId = await createRoom(base, alice);
    const eventId = await sendMessage(base, alice, roomId, "echo", "my-txn");
    const find = (res: Awaited<ReturnType<typeof sync>>) => res.rooms.join[roomId]!.timeline.events.find((e) => e.event_id === eventId)!;
    assert.equal(find(await sync(base, alice)).unsigned?.transaction_id, "my-txn");
    assert.equal(find(await sync(base, other)).unsigned?.transaction_id, undefined);
  });

  test("concurrent senders: incremental syncs deliver every event exactly once, in stream order", async () => {
    const alice = await user();
    const senders = [alice, await user(), await user(), await user()];
    const roomId = await createRoom(base, alice, { preset: "public_chat" });
    for (const s of senders.slice(1)) await joinRoom(base, s, roomId);
    const reader = await user();
    await joinRoom(base, reader, roomId);
    let token = (await sync(base, reader)).next_batch;
    const seen: string[] = [];
    let done = false;
    const reading = (async () => {
      while (!done) {
        const res = await sync(base, reader, { since: token, timeout: 1000, filter: limitFilter(1000) });
        token = res.next_batch;
        const tl = res.rooms.join[roomId]?.timeline;
        assert.notEqual(tl?.limited, true);
        seen.push(...bodies(tl?.events ?? []).map(String));
      }
    })();
    const sent = await Promise.all(
      senders.map(async (s, i) => {
        const mine: string[] = [];
        for (let j = 0; j < 15; j++) {
          await sendMessage(base, s, roomId, `c${i}-${j}`);
          mine.push(`c${i}-${j}`);
        }
        return mine;
      }),
    );
    // One more sync after the senders finish catches anything sent during the last one.
    done = true;
    await reading;
    const tail = await sync(base, reader, { since: token, filter: limitFilter(1000) });
    seen.push(...bodies(tail.rooms.join[roomId]?.timeline.events ?? []).map(String));

    assert.equal(new Set(seen).size, seen.length, "no event twice");
    assert.deepEqual([...seen].sort(), sent.flat().sort(), "every event once");
    const page = await request(base, "GET", `${C}/rooms/${enc(roomId)}/messages?dir=f&limit=1000`, { token: reader.access_token });
    assert.deepEqual(seen, bodies(page.body.chunk as Ev[]).filter((b) => String(b).startsWith("c")), "in stream order");
  });
});
