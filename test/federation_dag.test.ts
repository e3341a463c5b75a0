/**
 * The room DAG across two Switchboards (issue #15 §1, "Events from other servers"): a
 * soft-failed event is kept out of clients' sight but events built on it are accepted; a gap
 * too long for `/get_missing_events` is crossed with `/state_ids` (never on a state lacking one
 * of its events); and a pile of forward
 * extremities is merged by a local dummy event whose prev_events are capped.
 */
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { buildEvent, getRoomVersion, type Pdu, type RoomVersion } from "../src/events/index.js";
import { signedRequest, signerOf, stateIds, syncedEvents, TestFederation, timelineSync, type FederatedServer } from "./helpers/federation.js";
import { assertError, enc, ok, User, type Ev } from "./helpers/rooms.js";
import { eventually, request } from "./helpers/server.js";

const CS = "/_matrix/client/v3";
const SEND = "/_matrix/federation/v1/send";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const bodyOf = (e: Ev) => (e.content as { body?: string }).body ?? "";

/** The room's events as `user` reads them in `/messages`, oldest first. */
async function timeline(user: User, roomId: string, limit = 400): Promise<Ev[]> {
  const res = ok(await user.messages(roomId, { dir: "b", limit }));
  return (res.chunk as Ev[]).reverse();
}

async function bodies(user: User, roomId: string): Promise<string[]> {
  return (await timeline(user, roomId)).filter((e) => e.type === "m.room.message").map(bodyOf);
}

describe("the room DAG between two Switchboards", () => {
  const fed = new TestFederation(["a.test", "b.test"]);
  let a: FederatedServer;
  let b: FederatedServer;
  let alice: User;
  let bob: User;
  let mallory: User;
  let roomId: string;
  let version: RoomVersion;

  /** A PDU as `on`'s server holds it. */
  async function pduOn(on: FederatedServer, eventId: string): Promise<Pdu> {
    const other = on === a ? b : a;
    const res = await signedRequest(on, signerOf(other), "GET", `/_matrix/federation/v1/event/${enc(eventId)}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return (res.body.pdus as Pdu[])[0]!;
  }

  /** A message from a user of b.test, signed by b.test, as b.test would send it. */
  function craft(sender: string, body: string, prev: { eventId: string; pdu: Pdu }, authState: Ev[]) {
    const idOf = (type: string, key = "") => authState.find((e) => e.type === type && e.state_key === key)?.event_id as string | undefined;
    const create = version.roomIdIsCreateEventId ? undefined : idOf("m.room.create");
    const auth = [create, idOf("m.room.power_levels"), idOf("m.room.member", sender)].filter((x): x is string => x !== undefined);
    const prevEvents = [prev.eventId];
    const depth = prev.pdu.depth + 1;
    return buildEvent(
      { version, roomId, sender, type: "m.room.message", content: { msgtype: "m.text", body }, prevEvents, authEvents: auth, depth, originServerTs: Date.now() },
      signerOf(b),
    );
  }

  /** PDUs put to a.test in a transaction from b.test; answers the per-PDU results. */
  async function sendToA(pdus: Pdu[]): Promise<Record<string, { error?: string }>> {
    const res = await signedRequest(a, signerOf(b), "PUT", `${SEND}/dag-${Date.now()}-${Math.random()}`, {
      body: { origin: "b.test", origin_server_ts: Date.now(), pdus },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.pdus as Record<string, { error?: string }>;
  }

  function cut(fs: FederatedServer): () => void {
    const target = fs.front.target;
    fs.front.target = "http://127.0.0.1:9";
    return () => {
      fs.front.target = target;
    };
  }

  /**
   * While a.test is cut off, `during` runs on b.test, then 150 messages `${prefix} 1…150` are sent
   * there, more than `/get_missing_events` fills; b.test's outbox then loses them all (as a
   * sender that gave up would) and its backoff of a.test ends. Answers what `during` answered.
   */
  async function longGap<T>(prefix: string, during: () => Promise<T>): Promise<T> {
    await eventually(async () => ((await b.server.homeserver.storage.federationQueue.hasQueued("a.test")) ? undefined : true));
    const restore = cut(a);
    const result = await during();
    for (let i = 1; i <= 150; i++) await bob.send(roomId, `${prefix} ${i}`);
    const queue = b.server.homeserver.storage.federationQueue;
    await eventually(async () => ((await queue.get("a.test"))?.failingSince != null ? true : undefined));
    for (;;) {
      const held = await queue.nextBatch("a.test", 100, 100);
      if (held.pdus.length + held.edus.length === 0) break;
      await queue.remove([...held.pdus, ...held.edus].map((r) => r.id));
    }
    restore();
    // a.test's requests end b.test's backoff.
    while ((await queue.get("a.test"))?.failingSince != null) {
      ok(await alice.req("GET", `/profile/${enc(bob.userId)}`));
      await sleep(300);
    }
    return result;
  }

  async function extremitiesOn(fs: FederatedServer): Promise<number> {
    const storage = fs.server.homeserver.storage;
    const head = await storage.transaction((tx) => tx.roomDag.lockRoomDag(roomId));
    return head?.extremities?.length ?? 0;
  }

  before(async () => {
    await fed.frontsUp();
    a = await fed.start("a.test");
    b = await fed.start("b.test");
    alice = await User.register(a.server.baseUrl, "alice");
    bob = await User.register(b.server.baseUrl, "bob");
    mallory = await User.register(b.server.baseUrl, "mallory");
    roomId = await alice.createRoom({ preset: "public_chat", name: "DAG", power_level_content_override: { events: { "m.room.topic": 0 } } });
    version = getRoomVersion((await a.server.homeserver.storage.rooms.getRoom(roomId))!.roomVersion)!;
    for (const u of [bob, mallory]) {
      const join = await request(b.server.baseUrl, "POST", `${CS}/join/${enc(roomId)}?via=a.test`, { token: u.token, body: {} });
      assert.equal(join.status, 200, JSON.stringify(join.body));
    }
    await alice.send(roomId, "hello");
    await eventually(async () => ((await bodies(bob, roomId)).includes("hello") ? true : undefined));
  });

  after(() => fed.close());

  test("an event from a user banned meanwhile is soft-failed (stored, never shown); an event built on it is accepted", async () => {
    const beforeBan = await alice.fullState(roomId);
    const lastId = (await timeline(alice, roomId)).at(-1)!.event_id as string;
    const last = { eventId: lastId, pdu: await pduOn(a, lastId) };
    const since = (await timelineSync(alice, { limit: 400 })).next_batch;
    ok(await alice.act("ban", roomId, mallory.userId));

    // Mallory's server had not heard of the ban: her message points before it, as do its auth events.
    const late = craft(mallory.userId, "sent before hearing of the ban", last, beforeBan);
    assert.deepEqual((await sendToA([late.pdu]))[late.eventId], {}, "a soft failure is no error for the sender");
    const stored = (await a.server.homeserver.storage.roomDag.getPdus([late.eventId])).get(late.eventId);
    assert.equal(stored?.softFailed, true, "kept, with its state");
    assert.equal(stored?.inTimeline, false);
    assertError(await alice.event(roomId, late.eventId), 404, "M_NOT_FOUND");

    // Bob's server saw mallory's message first: his points at it.
    const built = craft(bob.userId, "built on the soft-failed one", late, beforeBan);
    assert.deepEqual((await sendToA([built.pdu]))[built.eventId], {}, "an event built on a soft-failed one is accepted");
    const events = (await syncedEvents(alice, roomId, since, (evs) => evs.some((e) => e.event_id === built.eventId), { limit: 400 })).events;
    assert.ok(!events.some((e) => e.event_id === late.eventId), "the soft-failed event never reaches /sync");
    const shown = await timeline(alice, roomId);
    assert.ok(shown.some((e) => e.event_id === built.eventId), "the event built on it is in /messages");
    assert.ok(!shown.some((e) => e.event_id === late.eventId), "the soft-failed one is not");
    assert.equal((await alice.getState(roomId, "m.room.member", mallory.userId)).membership, "ban", "the state resolved over both lines keeps the ban");

    // The next local event merges the two lines (the ban's and the one through the soft-failed event).
    const merge = await alice.send(roomId, "merging");
    assert.deepEqual(new Set((await pduOn(a, merge)).prev_events).has(built.eventId), true);
    assert.equal((await alice.getState(roomId, "m.room.member", mallory.userId)).membership, "ban");
    await eventually(async () => ((await bodies(bob, roomId)).includes("merging") ? true : undefined));
  });

  test("a gap longer than /get_missing_events fills is crossed with /state_ids: the next event is accepted with the right state", async () => {
    await longGap("gap", () => bob.putState(roomId, "m.room.topic", "", { topic: "set during the gap" }));
    const seen = b.front.requests.length;
    await bob.send(roomId, "after the long gap");
    await eventually(async () => ((await bodies(alice, roomId)).includes("after the long gap") ? true : undefined));
    const asked = b.front.requests.slice(seen);
    assert.ok(asked.some((r) => r.startsWith("POST /_matrix/federation/v1/get_missing_events/")), "a.test first asked for the missing events");
    assert.ok(asked.some((r) => r.startsWith("GET /_matrix/federation/v1/state_ids/")), "then for the state at the gap's far end");
    assert.equal((await alice.getState(roomId, "m.room.topic")).topic, "set during the gap");
    assert.deepEqual(await stateIds(alice, roomId), await stateIds(bob, roomId), "both servers have the same current state");
    // /messages pages over the gap without failing; the newest events of the gap are there.
    const shown = await bodies(alice, roomId);
    assert.equal(shown.at(-1), "after the long gap");
    assert.ok(shown.includes("gap 150") && shown.includes("hello"));
    // And the conversation goes on both ways.
    await alice.send(roomId, "after the gap from a");
    await eventually(async () => ((await bodies(bob, roomId)).includes("after the gap from a") ? true : undefined));
  });

  test("a redaction that came before its event is applied when the event arrives as state across a gap", async () => {
    // While the servers are apart, bob sets a topic on b.test, and (as b.test would) a redaction of
    // it reaches a.test first, built on an event a.test has: it waits there for the topic.
    const before = await alice.fullState(roomId);
    const tipId = (await timeline(alice, roomId)).at(-1)!.event_id as string;
    const tip = await pduOn(a, tipId);
    const topicId = await longGap("redacted gap", async () => {
      const id = ok(await bob.req("PUT", `/rooms/${enc(roomId)}/state/m.room.topic/`, { topic: "redacted before it came" })).event_id as string;
      const idOf = (type: string, key = "") => before.find((e) => e.type === type && e.state_key === key)?.event_id as string | undefined;
      const auth = [version.roomIdIsCreateEventId ? undefined : idOf("m.room.create"), idOf("m.room.power_levels"), idOf("m.room.member", bob.userId)];
      const redaction = buildEvent(
        {
          version,
          roomId,
          sender: bob.userId,
          type: "m.room.redaction",
          content: {},
          redacts: id,
          prevEvents: [tipId],
          authEvents: auth.filter((x): x is string => x !== undefined),
          depth: tip.depth + 1,
          originServerTs: Date.now(),
        },
        signerOf(b),
      );
      const res = await signedRequest(a, signerOf(b), "PUT", `${SEND}/early-redaction-${Date.now()}`, { body: { origin: "b.test", origin_server_ts: Date.now(), pdus: [redaction.pdu] } });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(res.body.pdus, { [redaction.eventId]: {} });
      assert.deepEqual(
        (await a.server.homeserver.storage.roomDag.pendingRedactions(id)).map((p) => p.redactionEventId),
        [redaction.eventId],
        "the redaction waits for the topic",
      );
      return id;
    });
    await bob.send(roomId, "after the redacted gap");
    await eventually(async () => ((await bodies(alice, roomId)).includes("after the redacted gap") ? true : undefined));
    // The topic came to a.test only as the state at the gap's far end, and is stored redacted.
    const stored = await a.server.homeserver.storage.rooms.getEvent(topicId);
    assert.ok(stored, "a.test has the topic");
    assert.ok(stored.redactedBy, "the topic is redacted");
    assert.deepEqual(await a.server.homeserver.storage.roomDag.pendingRedactions(topicId), [], "nothing waits any more");
    assert.deepEqual(await alice.getState(roomId, "m.room.topic"), {});
  });

  test("many sibling events from a peer: a local dummy event merges them, its prev_events capped at 10", async () => {
    const state = await alice.fullState(roomId);
    const lastId = (await timeline(alice, roomId)).at(-1)!.event_id as string;
    const last = { eventId: lastId, pdu: await pduOn(a, lastId) };
    const siblings = Array.from({ length: 15 }, (_, i) => craft(bob.userId, `sibling ${i + 1}`, last, state));
    const results = await sendToA(siblings.map((s) => s.pdu));
    for (const s of siblings) assert.deepEqual(results[s.eventId], {});
    await eventually(async () => ((await extremitiesOn(a)) <= 10 ? true : undefined));
    const dummy = (await timeline(alice, roomId)).reverse().find((e) => e.type === "org.matrix.dummy_event");
    assert.ok(dummy, "a.test sent a dummy event");
    assert.equal(dummy.sender, alice.userId);
    const dummyPrev = (await pduOn(a, dummy.event_id as string)).prev_events;
    assert.equal(dummyPrev.length, 10, "the dummy points at the 10 deepest extremities");
    // A local send after it points at no more than 10 either.
    const next = await alice.send(roomId, "after the siblings");
    assert.ok((await pduOn(a, next)).prev_events.length <= 10);
    assert.equal(await extremitiesOn(a), 1);
    await eventually(async () => ((await bodies(bob, roomId)).includes("after the siblings") ? true : undefined));
  });

  test("across a gap, a state one of whose events cannot be fetched is not used: the event built on it is rejected", async () => {
    const topicId = await longGap("hidden gap", async () => ok(await bob.req("PUT", `/rooms/${enc(roomId)}/state/m.room.topic/`, { topic: "never fetched" })).event_id as string);
    // b.test answers 404 for that one event; everything else passes.
    const upstream = b.front.target;
    const proxy = http.createServer((req, res) => {
      if (req.method === "GET" && req.url === `/_matrix/federation/v1/event/${enc(topicId)}`) {
        res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ errcode: "M_NOT_FOUND", error: "Not found" }));
        return;
      }
      const up = http.request(upstream + (req.url ?? "/"), { method: req.method, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      up.on("error", () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
      req.pipe(up);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    b.front.target = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    try {
      const seen = b.front.requests.length;
      const afterId = await bob.send(roomId, "after the hidden gap");
      const storage = a.server.homeserver.storage;
      const kept = await eventually(async () => (await storage.roomDag.getPdus([afterId])).get(afterId));
      assert.notEqual(kept.rejected, null, "the event is rejected, not judged on a state without the topic");
      assert.equal(kept.inTimeline, false);
      const asked = b.front.requests.slice(seen);
      assert.ok(asked.some((r) => r.startsWith("GET /_matrix/federation/v1/state_ids/")), "a.test asked for the state at the gap");
      assert.ok(asked.includes(`GET /_matrix/federation/v1/event/${enc(topicId)}`), "and for the topic it names");
      assert.notEqual((await alice.getState(roomId, "m.room.topic")).topic, "never fetched");
      assert.ok(!(await bodies(alice, roomId)).includes("after the hidden gap"));
    } finally {
      b.front.target = upstream;
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    }
  });
});
