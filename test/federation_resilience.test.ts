/**
 * Federation under trouble (issue #15 §2), between two Switchboards over TLS with a test CA: a
 * server down for a while then catching up, a server restarted mid-conversation, a lost
 * transaction whose gap is filled with `/get_missing_events`, both servers sending while cut off
 * from each other (a fork, resolved to the same state on both), and hostile PDUs inside a
 * transaction. No event may be lost or seen twice, and the order must hold.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { buildEvent, getRoomVersion, type Pdu } from "../src/events/index.js";
import { signedRequest, signerOf, stateIds, syncedEvents, TestFederation, timelineSync, type FederatedServer } from "./helpers/federation.js";
import { RestartableServers } from "./helpers/federation_send.js";
import { enc, ok, User, type Ev } from "./helpers/rooms.js";
import { eventually, request } from "./helpers/server.js";

const CS = "/_matrix/client/v3";
const SEND = "/_matrix/federation/v1/send";
/** A timeline filter wide enough that no sync in this file is `limited`. */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The room's messages as `user` reads them in `/messages`, oldest first. */
async function timeline(user: User, roomId: string): Promise<Ev[]> {
  const res = ok(await user.messages(roomId, { dir: "b", limit: 200 }));
  return (res.chunk as Ev[]).filter((e) => e.type === "m.room.message").reverse();
}

const bodyOf = (e: Ev) => (e.content as { body?: string }).body ?? "";

async function bodies(user: User, roomId: string): Promise<string[]> {
  return (await timeline(user, roomId)).map(bodyOf);
}

/** Every event ID once. */
function assertNoDuplicates(events: Ev[]): void {
  const ids = events.map((e) => e.event_id as string);
  assert.equal(new Set(ids).size, ids.length, `an event was seen twice: ${JSON.stringify(ids)}`);
}

describe("federation resilience between two Switchboards", () => {
  const fed = new TestFederation(["a.test", "b.test"]);
  const servers = new RestartableServers(fed);
  const dirA = servers.newDir();
  const dirB = servers.newDir();
  let a: FederatedServer;
  let b: FederatedServer;
  let alice: User;
  let bob: User;
  let roomId: string;
  /** Every message body sent in the room so far, in the order each server must show them (when no fork interleaves them). */
  const sent: string[] = [];

  const on = (fs: FederatedServer, u: User) => new User(fs.server.baseUrl, u.userId, u.token, u.deviceId);

  /**
   * `from` asks `to` for a profile (a signed request): `to` learns that `from` is up and ends its
   * backoff. Repeated until `done`, as servers that talk keep contacting each other: a server
   * that contacted us moments before is not checked again at once.
   */
  async function contactUntil(from: User, toUser: User, done: () => Promise<boolean>): Promise<void> {
    while (!(await done())) {
      const res = await request(from.baseUrl, "GET", `${CS}/profile/${enc(toUser.userId)}`, { token: from.token });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      if (await done()) return;
      await sleep(500);
    }
  }

  /** One signed request from `from`'s server to `toUser`'s. */
  async function contact(from: User, toUser: User): Promise<void> {
    const res = await request(from.baseUrl, "GET", `${CS}/profile/${enc(toUser.userId)}`, { token: from.token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }

  async function say(user: User, body: string): Promise<string> {
    sent.push(body);
    return user.send(roomId, body);
  }

  /** Waits until the destination's outbox is backing off (a delivery failed). */
  async function backingOff(from: FederatedServer, destination: string): Promise<void> {
    const queue = from.server.homeserver.storage.federationQueue;
    await eventually(async () => ((await queue.get(destination))?.failingSince != null ? true : undefined));
  }

  /** Cuts the name off: its front answers 502 to every request, as a server that is down would not answer. */
  function cut(fs: FederatedServer): () => void {
    const target = fs.front.target;
    fs.front.target = "http://127.0.0.1:9";
    return () => {
      fs.front.target = target;
    };
  }

  before(async () => {
    await fed.frontsUp();
    a = await servers.start("a.test", dirA);
    b = await servers.start("b.test", dirB);
    alice = await User.register(a.server.baseUrl, "alice");
    bob = await User.register(b.server.baseUrl, "bob");
    roomId = await alice.createRoom({
      preset: "public_chat",
      name: "Resilient",
      power_level_content_override: { events: { "m.room.topic": 0 } },
    });
    const join = await request(b.server.baseUrl, "POST", `${CS}/join/${enc(roomId)}?via=a.test`, { token: bob.token, body: {} });
    assert.equal(join.status, 200, JSON.stringify(join.body));
    await say(alice, "hello");
    await eventually(async () => ((await bodies(bob, roomId)).includes("hello") ? true : undefined));
    await say(bob, "hi");
    await eventually(async () => ((await bodies(alice, roomId)).includes("hi") ? true : undefined));
  });

  after(() => servers.close());

  test("b.test down while a.test's user talks: restarted on its database, it gets every message once, in order", async () => {
    const since = (await timelineSync(bob, { limit: 100 })).next_batch;
    await servers.stop(b);
    const down = Array.from({ length: 12 }, (_, i) => `while b is down ${i + 1}`);
    for (const body of down) await say(alice, body);
    await backingOff(a, "b.test");

    b = await servers.start("b.test", dirB);
    bob = on(b, bob);
    await contactUntil(bob, alice, async () => (await bodies(bob, roomId)).includes(down.at(-1)!));
    assert.deepEqual(await bodies(bob, roomId), sent, "b.test shows what a.test does, once each, in order");
    assert.deepEqual(await bodies(alice, roomId), sent);
    // /sync from before the stop brings each of them once, in order.
    const { events } = await syncedEvents(bob, roomId, since, (evs) => evs.some((e) => bodyOf(e) === down.at(-1)), { limit: 100, noGaps: true });
    assertNoDuplicates(events);
    assert.deepEqual(events.filter((e) => e.type === "m.room.message").map(bodyOf), down);
    // And a.test's outbox for b.test is empty, its backoff over.
    const queue = a.server.homeserver.storage.federationQueue;
    await eventually(async () => ((await queue.hasQueued("b.test")) ? undefined : true));
    assert.equal((await queue.get("b.test"))?.failingSince, null);
  });

  test("a.test (the room's resident server) restarted mid-conversation: what b.test sent meanwhile reaches it once, in order", async () => {
    await say(alice, "before the restart");
    await eventually(async () => ((await bodies(bob, roomId)).includes("before the restart") ? true : undefined));
    const since = (await timelineSync(alice, { limit: 100 })).next_batch;
    await servers.stop(a);
    const meanwhile = ["while a is down 1", "while a is down 2", "while a is down 3"];
    for (const body of meanwhile) await say(bob, body);
    await backingOff(b, "a.test");

    a = await servers.start("a.test", dirA);
    alice = on(a, alice);
    await contactUntil(alice, bob, async () => (await bodies(alice, roomId)).includes(meanwhile.at(-1)!));
    assert.deepEqual(await bodies(alice, roomId), sent);
    const { events } = await syncedEvents(alice, roomId, since, (evs) => evs.some((e) => bodyOf(e) === meanwhile.at(-1)), { limit: 100, noGaps: true });
    assertNoDuplicates(events);
    assert.deepEqual(events.filter((e) => e.type === "m.room.message").map(bodyOf), meanwhile);
    // The conversation goes on from the restarted server.
    await say(alice, "back again");
    await eventually(async () => ((await bodies(bob, roomId)).includes("back again") ? true : undefined));
    assert.deepEqual(await bodies(bob, roomId), sent);
  });

  test("transactions lost on the way: the next event's gap is filled from its sender with /get_missing_events", async () => {
    const since = (await timelineSync(bob, { limit: 100 })).next_batch;
    const restore = cut(b);
    const lost = Array.from({ length: 15 }, (_, i) => `lost ${i + 1}`);
    for (const body of lost) await say(alice, body);
    await backingOff(a, "b.test");
    // a.test's outbox loses what it held for b.test (as a sender that gave up on a destination would).
    const queue = a.server.homeserver.storage.federationQueue;
    const held = await queue.nextBatch("b.test", 100, 100);
    assert.equal(held.pdus.length, lost.length);
    await queue.remove([...held.pdus, ...held.edus].map((r) => r.id));
    restore();

    const seen = a.front.requests.length;
    await contactUntil(bob, alice, async () => (await queue.get("b.test"))?.failingSince === null);
    await say(alice, "after the gap");
    await eventually(async () => ((await bodies(bob, roomId)).includes("after the gap") ? true : undefined));
    assert.ok(
      a.front.requests.slice(seen).some((r) => r.startsWith("POST /_matrix/federation/v1/get_missing_events/")),
      "b.test asked a.test for the events it missed",
    );
    assert.deepEqual(await bodies(bob, roomId), sent, "the gap is filled: every lost message, once, in order");
    const { events } = await syncedEvents(bob, roomId, since, (evs) => evs.some((e) => bodyOf(e) === "after the gap"), { limit: 100, noGaps: true });
    assertNoDuplicates(events);
    assert.deepEqual(events.filter((e) => e.type === "m.room.message").map(bodyOf), [...lost, "after the gap"]);
  });

  test("both servers send while cut off from each other: the fork resolves to the same current state on both", async () => {
    // Each server has just heard from the other: a backoff starting moments later must still end at the other's next request.
    await contact(alice, bob);
    await contact(bob, alice);
    const restoreA = cut(a);
    const restoreB = cut(b);
    // Conflicting state and messages on each side, each on a line of its own.
    await alice.putState(roomId, "m.room.topic", "", { topic: "topic from a.test" });
    await alice.send(roomId, "a's side");
    await bob.putState(roomId, "m.room.topic", "", { topic: "topic from b.test" });
    await bob.send(roomId, "b's side");
    await Promise.all([backingOff(a, "b.test"), backingOff(b, "a.test")]);
    restoreA();
    restoreB();

    // One request each way ends both backoffs, and each outbox delivers what it held.
    await contact(alice, bob);
    await contact(bob, alice);
    const [queueA, queueB] = [a.server.homeserver.storage.federationQueue, b.server.homeserver.storage.federationQueue];
    await eventually(async () => ((await queueA.get("b.test"))?.failingSince === null && (await queueB.get("a.test"))?.failingSince === null ? true : undefined));
    const both = async (u: User) => {
      const got = await bodies(u, roomId);
      return got.includes("a's side") && got.includes("b's side");
    };
    await eventually(async () => ((await both(alice)) && (await both(bob)) ? true : undefined));
    for (const u of [alice, bob]) {
      const got = await bodies(u, roomId);
      assert.equal(got.filter((x) => x === "a's side").length, 1);
      assert.equal(got.filter((x) => x === "b's side").length, 1);
      assertNoDuplicates(await timeline(u, roomId));
    }
    const [stateA, stateB] = await Promise.all([stateIds(alice, roomId), stateIds(bob, roomId)]);
    assert.deepEqual(stateA, stateB, "both servers resolved the fork to the same state");
    const topicA = await alice.getState(roomId, "m.room.topic");
    assert.deepEqual(await bob.getState(roomId, "m.room.topic"), topicA);

    // The next event joins both lines: it points at both extremities, and both servers agree after it too.
    const merge = await alice.send(roomId, "merged");
    const merged = await signedRequest(a, signerOf(b), "GET", `/_matrix/federation/v1/event/${enc(merge)}`);
    assert.equal(merged.status, 200, JSON.stringify(merged.body));
    assert.equal((merged.body.pdus as Pdu[])[0]!.prev_events.length, 2, "a.test saw the fork");
    await eventually(async () => ((await bodies(bob, roomId)).includes("merged") ? true : undefined));
    assert.deepEqual(await stateIds(bob, roomId), await stateIds(alice, roomId));
  });

  test("a forged PDU and one failing auth get per-PDU errors and never reach /sync; a PDU for a room b.test is not in is ignored", async () => {
    const version = getRoomVersion((await b.server.homeserver.storage.rooms.getRoom(roomId))!.roomVersion)!;
    const since = (await timelineSync(bob, { limit: 100 })).next_batch;
    const state = await bob.fullState(roomId);
    const idOf = (type: string, key = "") => state.find((e) => e.type === type && e.state_key === key)?.event_id as string | undefined;
    const last = (await timeline(bob, roomId)).at(-1)!;
    const lastPdu = await signedRequest(b, signerOf(a), "GET", `/_matrix/federation/v1/event/${enc(last.event_id as string)}`);
    assert.equal(lastPdu.status, 200, JSON.stringify(lastPdu.body));
    const depth = (lastPdu.body.pdus as Pdu[])[0]!.depth + 1;
    // Room version 12 names the create event by the room ID, never in auth_events.
    const create = version.roomIdIsCreateEventId ? undefined : idOf("m.room.create");
    const authFor = (sender: string) => [create, idOf("m.room.power_levels"), idOf("m.room.member", sender)].filter((x): x is string => x !== undefined);
    const message = (sender: string, body: string, signer: ReturnType<typeof signerOf>, room = roomId, prev = [last.event_id as string], auth = authFor(sender)) =>
      buildEvent(
        { version, roomId: room, sender, type: "m.room.message", content: { msgtype: "m.text", body }, prevEvents: prev, authEvents: auth, depth, originServerTs: Date.now() },
        signer,
      );

    const real = signerOf(a);
    const forged = message(alice.userId, "forged", { ...real, privateKey: generateKeyPairSync("ed25519").privateKey });
    const stranger = message("@mallory:a.test", "not a member", real);
    const genuine = message(alice.userId, "genuine", real);
    // A room on a.test that b.test has never been in.
    const elsewhere = await alice.createRoom({});
    const elsewhereState = await alice.fullState(elsewhere);
    const elsewhereAuth = ["m.room.create", "m.room.power_levels", "m.room.member"]
      .map((t) => elsewhereState.find((e) => e.type === t && (t !== "m.room.member" || e.state_key === alice.userId))?.event_id as string);
    const elsewhereVersion = getRoomVersion((await a.server.homeserver.storage.rooms.getRoom(elsewhere))!.roomVersion)!;
    const lonely = buildEvent(
      {
        version: elsewhereVersion,
        roomId: elsewhere,
        sender: alice.userId,
        type: "m.room.message",
        content: { msgtype: "m.text", body: "nobody here" },
        prevEvents: [elsewhereState.at(-1)!.event_id as string],
        authEvents: elsewhereVersion.roomIdIsCreateEventId ? elsewhereAuth.slice(1) : elsewhereAuth,
        depth: 10,
        originServerTs: Date.now(),
      },
      real,
    );

    const res = await signedRequest(b, real, "PUT", `${SEND}/hostile-${Date.now()}`, {
      body: { origin: "a.test", origin_server_ts: Date.now(), pdus: [forged.pdu, stranger.pdu, genuine.pdu, lonely.pdu] },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const results = res.body.pdus as Record<string, { error?: string }>;
    assert.equal(typeof results[forged.eventId]?.error, "string", `the forged PDU is refused: ${JSON.stringify(results)}`);
    assert.equal(typeof results[stranger.eventId]?.error, "string", `the PDU failing auth is refused: ${JSON.stringify(results)}`);
    assert.deepEqual(results[genuine.eventId], {}, "the genuine PDU beside them is accepted");
    assert.ok(!(lonely.eventId in results) || typeof results[lonely.eventId]!.error === "string", "the other room's PDU is not accepted");
    assert.equal(await b.server.homeserver.storage.rooms.getRoom(elsewhere), undefined, "b.test knows nothing of a room it is not in");
    assert.equal((await b.server.homeserver.storage.roomDag.getPdus([lonely.eventId])).size, 0);

    const { events } = await syncedEvents(bob, roomId, since, (evs) => evs.some((e) => e.event_id === genuine.eventId), { limit: 100, noGaps: true });
    const ids = events.map((e) => e.event_id);
    assert.ok(!ids.includes(forged.eventId) && !ids.includes(stranger.eventId), "neither refused PDU reaches /sync");
    const later = await timelineSync(bob, { limit: 100 });
    assert.equal(later.rooms?.join?.[elsewhere], undefined);
    for (const id of [forged.eventId, stranger.eventId]) assert.notEqual((await bob.event(roomId, id)).status, 200);
  });
});
