/**
 * What a Switchboard hands another server of a room (issue #15: `/event`, `/state`,
 * `/event_auth`, `/get_missing_events`, `/backfill`): events as the room's history visibility lets
 * that server's users see them (redacted otherwise, as Synapse's `filter_events_for_server`), the
 * state at an event and an event's auth chain as the resident server has them, and a room of
 * version 10 federated both ways. Two servers with their own names over TLS with a test CA.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { signedRequest, signerOf, startTwoServers, TestFederation, type FederatedServer } from "./helpers/federation.js";
import { enc, ok, User, type Ev } from "./helpers/rooms.js";
import { eventually, request } from "./helpers/server.js";
import { eventIdFor, getRoomVersion, type Pdu } from "../src/events/index.js";

interface FedPdu {
  type: string;
  sender: string;
  state_key?: string;
  content: Record<string, unknown>;
  auth_events: string[];
  prev_events: string[];
}

describe("what a server serves another of a room", () => {
  const fed = new TestFederation(["a.test", "b.test"]);
  let a: FederatedServer;
  let b: FederatedServer;
  let alice: User;
  let bob: User;

  before(async () => {
    ({ a, b, users: { alice, bob } } = await startTwoServers(fed, { a: ["alice"], b: ["bob"] }));
  });
  after(() => fed.close());

  /** A room on a.test with `visibility`, made by alice. */
  async function roomWith(visibility: string, extra: Record<string, unknown> = {}): Promise<{ roomId: string; version: string }> {
    const roomId = await alice.createRoom({
      preset: "public_chat",
      initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: visibility } }],
      ...extra,
    });
    const create = await alice.getState(roomId, "m.room.create");
    return { roomId, version: (create.room_version as string | undefined) ?? "1" };
  }

  async function bobJoins(roomId: string): Promise<void> {
    const res = await request(b.server.baseUrl, "POST", `/_matrix/client/v3/join/${enc(roomId)}?via=a.test`, { token: bob.token, body: {} });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    await eventually(async () => ((await alice.membershipIn(roomId, bob.userId)) === "join" ? true : undefined));
  }

  const fedGet = (path: string) => signedRequest(a, signerOf(b), "GET", path);

  /** a.test's `/backfill` as b.test reads it, by event ID. */
  async function backfillAsB(roomId: string, from: string, version: string): Promise<Map<string, FedPdu>> {
    const res = await fedGet(`/_matrix/federation/v1/backfill/${enc(roomId)}?v=${enc(from)}&limit=100`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const v = getRoomVersion(version)!;
    return new Map((res.body.pdus as Pdu[]).map((p) => [eventIdFor(p, v), p as unknown as FedPdu]));
  }

  /** Every message event bob's /messages gives, paging back to the start (which fetches history from a.test). */
  async function bobPagesBack(roomId: string): Promise<Ev[]> {
    const seen: Ev[] = [];
    let from: string | undefined;
    for (let pages = 0; pages < 20; pages++) {
      const page = ok(await bob.messages(roomId, { dir: "b", limit: 20, from }));
      seen.push(...(page.chunk as Ev[]));
      if (page.end === undefined) break;
      from = page.end as string;
    }
    return seen.filter((e) => e.type === "m.room.message");
  }

  test("history_visibility joined: messages from before b.test's user joined are served redacted, later ones whole", async () => {
    const { roomId, version } = await roomWith("joined");
    const secrets = [await alice.send(roomId, "secret 1"), await alice.send(roomId, "secret 2")];
    await bobJoins(roomId);
    const later = await alice.send(roomId, "after bob joined");

    const served = await backfillAsB(roomId, later, version);
    for (const id of secrets) {
      const pdu = served.get(id);
      assert.ok(pdu, `${id} is served (redacted), not left out`);
      assert.deepEqual(pdu.content, {}, "a message's content does not survive redaction");
    }
    assert.equal(served.get(later)?.content.body, "after bob joined");
    // Bob's own join is visible to his server.
    const join = [...served.values()].find((p) => p.type === "m.room.member" && p.state_key === bob.userId);
    assert.equal(join?.content.membership, "join");
    // Redacted state keeps what the auth rules and visibility read.
    const setting = [...served.values()].find((p) => p.type === "m.room.history_visibility");
    assert.deepEqual(setting?.content, { history_visibility: "joined" });

    const single = await fedGet(`/_matrix/federation/v1/event/${enc(secrets[0]!)}`);
    assert.equal(single.status, 200, "as Synapse: redacted, not refused");
    assert.deepEqual((single.body.pdus as FedPdu[])[0]!.content, {});
    const visible = await fedGet(`/_matrix/federation/v1/event/${enc(later)}`);
    assert.equal((visible.body.pdus as FedPdu[])[0]!.content.body, "after bob joined");

    const missing = await signedRequest(a, signerOf(b), "POST", `/_matrix/federation/v1/get_missing_events/${enc(roomId)}`, {
      body: { earliest_events: [], latest_events: [later], limit: 50 },
    });
    assert.equal(missing.status, 200, JSON.stringify(missing.body));
    const bodies = (missing.body.events as FedPdu[]).filter((p) => p.type === "m.room.message").map((p) => p.content.body);
    assert.deepEqual(bodies, [undefined, undefined], "the gap's messages come redacted");

    // Bob pages back on b.test: the history fetched from a.test is there, without its bodies.
    const messages = await bobPagesBack(roomId);
    assert.deepEqual(
      secrets.map((id) => messages.find((e) => e.event_id === id)?.content),
      [{}, {}],
      JSON.stringify(messages),
    );
    assert.ok(messages.some((e) => e.content.body === "after bob joined"));
  });

  test("history_visibility invited: events from while b.test's user was invited are served whole, earlier ones redacted", async () => {
    const { roomId, version } = await roomWith("invited");
    const before = await alice.send(roomId, "before the invite");
    assert.equal((await alice.act("invite", roomId, bob.userId)).status, 200);
    const during = await alice.send(roomId, "while invited");
    await bobJoins(roomId);
    const served = await backfillAsB(roomId, during, version);
    assert.deepEqual(served.get(before)?.content, {});
    assert.equal(served.get(during)?.content.body, "while invited");
  });

  test("history_visibility shared: once b.test's user joins, earlier messages are visible to it and to bob", async () => {
    const { roomId, version } = await roomWith("shared");
    const early = [await alice.send(roomId, "early 1"), await alice.send(roomId, "early 2")];
    await bobJoins(roomId);
    const served = await backfillAsB(roomId, early[1]!, version);
    assert.deepEqual(early.map((id) => served.get(id)?.content.body), ["early 1", "early 2"]);
    const bodies = (await bobPagesBack(roomId)).map((e) => e.content.body);
    assert.ok(bodies.includes("early 1") && bodies.includes("early 2"), JSON.stringify(bodies));
  });

  test("GET /state?event_id= and /state_ids answer the state before the event as a.test has it, with its auth chain", async () => {
    const { roomId, version } = await roomWith("shared", { name: "Stateful", topic: "before" });
    await bobJoins(roomId);
    const event = await alice.send(roomId, "at this point");
    await alice.putState(roomId, "m.room.topic", "", { topic: "after" });
    const v = getRoomVersion(version)!;
    const res = await fedGet(`/_matrix/federation/v1/state/${enc(roomId)}?event_id=${enc(event)}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const pdus = new Map((res.body.pdus as Pdu[]).map((p) => [eventIdFor(p, v), p as unknown as FedPdu]));
    const chain = new Map((res.body.auth_chain as Pdu[]).map((p) => [eventIdFor(p, v), p as unknown as FedPdu]));

    // What a.test has: its current state, but for the topic changed after the event.
    const current = await alice.fullState(roomId);
    const expected = new Map(current.map((e) => [`${e.type}|${e.state_key}`, e]));
    const topicEvents = ok(await alice.messages(roomId, { dir: "b", limit: 100 })).chunk as Ev[];
    const oldTopic = topicEvents.filter((e) => e.type === "m.room.topic").find((e) => e.content.topic === "before")!;
    expected.set("m.room.topic|", oldTopic);
    assert.deepEqual(new Set(pdus.keys()), new Set([...expected.values()].map((e) => e.event_id)));
    for (const [id, pdu] of pdus) {
      const mine = [...expected.values()].find((e) => e.event_id === id)!;
      assert.deepEqual(pdu.content, mine.content, `${pdu.type} ${pdu.state_key}`);
    }
    assert.ok([...pdus.values()].some((p) => p.type === "m.room.member" && p.state_key === bob.userId && p.content.membership === "join"));

    // The auth chain: every auth event the state names, and theirs, is there.
    for (const pdu of [...pdus.values(), ...chain.values()]) {
      for (const auth of pdu.auth_events) assert.ok(chain.has(auth), `${auth} (auth of a ${pdu.type}) is in the auth chain`);
    }

    const ids = await fedGet(`/_matrix/federation/v1/state_ids/${enc(roomId)}?event_id=${enc(event)}`);
    assert.equal(ids.status, 200);
    assert.deepEqual(new Set(ids.body.pdu_ids as string[]), new Set(pdus.keys()));
    assert.deepEqual(new Set(ids.body.auth_chain_ids as string[]), new Set(chain.keys()));
  });

  test("GET /event_auth answers exactly the event's auth chain", async () => {
    const { roomId, version } = await roomWith("shared");
    await bobJoins(roomId);
    const event = await alice.send(roomId, "authorised");
    const v = getRoomVersion(version)!;
    const got = await fedGet(`/_matrix/federation/v1/event/${enc(event)}`);
    const pdu = (got.body.pdus as FedPdu[])[0]!;
    assert.equal(pdu.auth_events.length > 0, true);
    const res = await fedGet(`/_matrix/federation/v1/event_auth/${enc(roomId)}/${enc(event)}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const chain = new Map((res.body.auth_chain as Pdu[]).map((p) => [eventIdFor(p, v), p as unknown as FedPdu]));
    // The closure of the event's auth_events over the answer itself: each must be there, and nothing else.
    const closure = new Set<string>();
    const todo = [...pdu.auth_events];
    while (todo.length > 0) {
      const id = todo.pop()!;
      if (closure.has(id)) continue;
      const found = chain.get(id);
      assert.ok(found, `${id} is in the auth chain`);
      closure.add(id);
      todo.push(...found.auth_events);
    }
    assert.deepEqual(new Set(chain.keys()), closure);
    assert.ok([...chain.values()].some((p) => p.type === "m.room.create"));
    assert.ok([...chain.values()].some((p) => p.type === "m.room.member" && p.state_key === alice.userId));
    // Each is the event a.test has.
    for (const [id, p] of chain) {
      const mine = ok(await alice.event(roomId, id)) as unknown as Ev;
      assert.equal(mine.type, p.type);
      assert.deepEqual(mine.content, p.content);
    }
  });

  test("a room of version 10: made on a.test, joined from b.test, messages both ways", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat", room_version: "10", name: "Ten" });
    assert.equal((await alice.getState(roomId, "m.room.create")).room_version, "10");
    await bobJoins(roomId);
    assert.equal((await bob.getState(roomId, "m.room.create")).room_version, "10");
    assert.equal((await bob.getState(roomId, "m.room.name")).name, "Ten");
    const bodies = async (user: User) => ((ok(await user.messages(roomId, { dir: "b", limit: 50 })).chunk as Ev[]).map((e) => e.content.body));
    await alice.send(roomId, "ten from a");
    await eventually(async () => ((await bodies(bob)).includes("ten from a") ? true : undefined));
    await bob.send(roomId, "ten from b");
    await eventually(async () => ((await bodies(alice)).includes("ten from b") ? true : undefined));
  });
});
