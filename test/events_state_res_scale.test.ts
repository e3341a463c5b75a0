/**
 * State resolution (src/events/state_res/) beyond the classic scenarios: rejected and
 * missing events, events from another room, a room with thousands of members (loader
 * batching), and randomised forks checked for order independence.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  authEventTypes,
  buildEvent,
  checkEventAuth,
  resolveState,
  StateResError,
  stateKeyOf,
  type Pdu,
  type RoomVersion,
  type StateIds,
} from "../src/events/index.js";
import { EventGraph } from "../src/events/state_res/graph.js";
import { adaptContent, ALICE, BOB, DagRoom, EventStore, permutations, power, prng, signer, topic, V10, V11, V11_SR21, V12, ZARA } from "./helpers/state_res.js";

/** A room built event by event over one mutable state, forkable; only events the rules allow. */
class LinearRoom {
  state = new Map<string, string>();
  last: string[] = [];
  depth = 0;
  ts = 0;

  constructor(
    readonly version: RoomVersion,
    readonly store: EventStore,
  ) {}

  fork(): LinearRoom {
    const f = new LinearRoom(this.version, this.store);
    f.state = new Map(this.state);
    f.last = [...this.last];
    f.depth = this.depth;
    f.ts = this.ts;
    return f;
  }

  lookup = (type: string, stateKey: string): Pdu | undefined => {
    const id = this.state.get(stateKeyOf(type, stateKey));
    return id === undefined ? undefined : this.store.events.get(id);
  };

  /** Builds the event; if the rules allow it against the current state, applies it. */
  send(sender: string, type: string, stateKey: string | undefined, content: Record<string, unknown>): string | undefined {
    const auth = authEventTypes(type, stateKey, sender, content, this.version)
      .map(([t, k]) => this.state.get(stateKeyOf(t, k)))
      .filter((id): id is string => id !== undefined);
    const derivedRoom = this.version.eventFormat === 4 && type === "m.room.create";
    content = adaptContent(this.version, type, content);
    const { eventId, pdu } = buildEvent(
      {
        version: this.version,
        roomId: derivedRoom ? "" : this.store.roomId,
        sender,
        type,
        stateKey,
        content,
        prevEvents: this.last,
        authEvents: auth,
        depth: ++this.depth,
        originServerTs: ++this.ts,
      },
      signer,
    );
    if (derivedRoom) this.store.roomId = `!${eventId.slice(1)}`;
    try {
      checkEventAuth(pdu, this.lookup, this.version);
    } catch {
      return undefined;
    }
    this.store.events.set(eventId, pdu);
    if (stateKey !== undefined) this.state.set(stateKeyOf(type, stateKey), eventId);
    this.last = [eventId];
    return eventId;
  }

  /** create, Alice's join, power levels, public join rules, then `members` joins. */
  static start(version: RoomVersion, members: string[], store = new EventStore()): LinearRoom {
    const room = new LinearRoom(version, store);
    room.send(ALICE, "m.room.create", "", { room_version: version.id });
    room.send(ALICE, "m.room.member", ALICE, { membership: "join" });
    room.send(ALICE, "m.room.power_levels", "", { users: { [ALICE]: 100 } });
    room.send(ALICE, "m.room.join_rules", "", { join_rule: "public" });
    for (const m of members) assert.ok(room.send(m, "m.room.member", m, { membership: "join" }));
    return room;
  }
}

const user = (i: number): string => `@u${i}:example.com`;

describe("rejected, missing and foreign events", () => {
  async function twoTopics(): Promise<{ room: DagRoom; sets: StateIds[]; t1: string; t2: string }> {
    const room = await DagRoom.build(V11, [topic("T1", ALICE, 100), topic("T2", ALICE, 200)], [
      ["END", "T1", "START"],
      ["END", "T2", "START"],
    ]);
    const sets = [room.stateAfter.get("T1")!, room.stateAfter.get("T2")!];
    return { room, sets, t1: room.eventId.get("T1")!, t2: room.eventId.get("T2")! };
  }
  const TOPIC = stateKeyOf("m.room.topic", "");

  test("a rejected event is not admitted; without the option, the later topic wins", async () => {
    const { room, sets, t1, t2 } = await twoTopics();
    assert.equal((await room.resolve(sets)).get(TOPIC), t2);
    const rejected = await resolveState(V11, sets, room.store.loader, { isRejected: (id) => id === t2 });
    assert.equal(rejected.get(TOPIC), t1);
  });

  test("an event the loader cannot supply is dropped from the replay; unconflicted IDs are kept as they are", async () => {
    const { room, sets, t1, t2 } = await twoTopics();
    const create = sets[0]!.get(stateKeyOf("m.room.create", ""))!;
    const partial = async (ids: readonly string[]) => room.store.loader(ids.filter((id) => id !== t2 && id !== create));
    const resolved = await resolveState(V11, sets, partial);
    // T2 could not be loaded; T1 cannot pass either without the create event.
    assert.equal(resolved.has(TOPIC), false);
    assert.equal(resolved.get(stateKeyOf("m.room.create", "")), create);
    const withCreate = await resolveState(V11, sets, async (ids) => room.store.loader(ids.filter((id) => id !== t2)));
    assert.equal(withCreate.get(TOPIC), t1);
  });

  test("state sets from two rooms are refused", async () => {
    const { room, sets } = await twoTopics();
    const { eventId, pdu } = buildEvent(
      { version: V11, roomId: "!other:example.com", sender: ALICE, type: "m.room.name", stateKey: "", content: { name: "x" }, prevEvents: [], authEvents: [], depth: 1, originServerTs: 1 },
      signer,
    );
    room.store.events.set(eventId, pdu);
    const foreign = new Map(sets[1]!).set(stateKeyOf("m.room.name", ""), eventId);
    await assert.rejects(room.resolve([sets[0]!, foreign]), StateResError);
  });

  test("an auth event from another room counts as missing, and does not abort the resolution", async () => {
    // P1 is only in the auth chains (P2 and TB cite it); the loader answers it with a
    // power levels event of another room that would have given Bob nothing.
    const room = await DagRoom.build(
      V11,
      [power("P1", ALICE, { [ALICE]: 100, [BOB]: 50 }), topic("TB", BOB), power("P2", ALICE, { [ALICE]: 100, [BOB]: 50, [ZARA]: 1 })],
      [
        ["END", "P2", "TB", "P1", "START"],
        ["END", "START"],
      ],
    );
    const p1 = room.eventId.get("P1")!;
    const { pdu: foreign } = buildEvent(
      { version: V11, roomId: "!other:example.com", sender: ALICE, type: "m.room.power_levels", stateKey: "", content: { users: { [ALICE]: 100 } }, prevEvents: [], authEvents: [], depth: 1, originServerTs: 1 },
      signer,
    );
    const lying = async (ids: readonly string[]) => {
      const got = await room.store.loader(ids);
      if (got.has(p1)) got.set(p1, foreign);
      return got;
    };
    const sets = [room.stateAfter.get("P2")!, room.stateAfter.get("START")!];
    const graph = new EventGraph(lying, V11);
    const ids = sets.flatMap((m) => [...m.values()]);
    await graph.loadStateEvents(ids);
    await graph.loadAuthClosure(ids);
    assert.equal(graph.has(p1), false);
    assert.equal(graph.has(room.eventId.get("TB")!), true);
    assert.deepEqual(await resolveState(V11, sets, lying), await room.resolve(sets));
    const resolved = await resolveState(V11, sets, lying);
    for (const name of ["P2", "TB"]) assert.equal(room.nameOf(resolved.get(room.keyOfName(name))), name);
  });
});

describe("a room with thousands of members", () => {
  for (const version of [V11, V11_SR21, ...(V12 ? [V12] : [])]) {
    test(`3,000 members, two forks (${version.id}, v${version.stateResolution}): correct, batched, each event loaded once`, async () => {
      const members = Array.from({ length: 3000 }, (_, i) => user(i));
      const base = LinearRoom.start(version, members);
      const a = base.fork();
      const b = base.fork();
      // Fork A: Alice makes u1 a moderator, u1 bans u2, u1 sets the topic.
      assert.ok(a.send(ALICE, "m.room.power_levels", "", { users: { [ALICE]: 100, [user(1)]: 50 } }));
      assert.ok(a.send(user(1), "m.room.member", user(2), { membership: "ban" }));
      assert.ok(a.send(user(1), "m.room.topic", "", { topic: "a" }));
      // Fork B: 100 members leave, u2 changes display name, u5 sends nothing of note.
      for (let i = 100; i < 200; i++) assert.ok(b.send(user(i), "m.room.member", user(i), { membership: "leave" }));
      assert.ok(b.send(user(2), "m.room.member", user(2), { membership: "join", displayname: "two" }));

      const requested = new Map<string, number>();
      let calls = 0;
      let largest = 0;
      const loader = async (ids: readonly string[]) => {
        calls++;
        largest = Math.max(largest, ids.length);
        for (const id of ids) requested.set(id, (requested.get(id) ?? 0) + 1);
        return base.store.loader(ids);
      };
      const resolved = await resolveState(version, [a.state, b.state], loader);

      const member = (i: number) => base.store.events.get(resolved.get(stateKeyOf("m.room.member", user(i)))!)!;
      assert.equal(member(2).content.membership, "ban"); // the ban beats the concurrent rename
      for (let i = 100; i < 200; i++) assert.equal(member(i).content.membership, "leave");
      assert.equal(member(300).content.membership, "join");
      assert.equal(resolved.get(stateKeyOf("m.room.topic", "")), a.state.get(stateKeyOf("m.room.topic", "")));
      assert.equal(resolved.get(stateKeyOf("m.room.power_levels", "")), a.state.get(stateKeyOf("m.room.power_levels", "")));
      assert.equal(resolved.size, a.state.size);

      assert.ok(largest <= 1000, `largest batch ${largest}`);
      assert.ok([...requested.values()].every((n) => n === 1), "an event was requested twice");
      // One call per batch of the state events, then one per auth-graph frontier (a few levels).
      assert.ok(calls <= 10, `${calls} loader calls`);
    });
  }
});

describe("randomised forks", () => {
  /** A random action on a fork, applied only if the rules allow it there. */
  function act(room: LinearRoom, rand: () => number, users: string[]): void {
    const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const who = pick([ALICE, ...users]);
    const target = pick(users);
    switch (Math.floor(rand() * 7)) {
      case 0:
        room.send(who, "m.room.topic", "", { topic: `t${Math.floor(rand() * 1000)}` });
        break;
      case 1: {
        const levels: Record<string, number> = { [ALICE]: 100 };
        for (const u of users) if (rand() < 0.3) levels[u] = pick([0, 50, 75]);
        room.send(who, "m.room.power_levels", "", { users: levels });
        break;
      }
      case 2:
        room.send(who, "m.room.member", target, { membership: pick(["ban", "leave"]) });
        break;
      case 3:
        room.send(target, "m.room.member", target, { membership: pick(["join", "leave"]) });
        break;
      case 4:
        room.send(who, "m.room.join_rules", "", { join_rule: pick(["public", "invite"]) });
        break;
      case 5:
        room.send(who, "m.room.member", target, { membership: "invite" });
        break;
      default:
        room.send(who, "m.room.name", "", { name: `n${Math.floor(rand() * 1000)}` });
    }
  }

  for (const version of [V10, V11, V11_SR21, ...(V12 ? [V12] : [])]) {
    test(`any order of the state sets, repeated sets, one set (${version.id}, v${version.stateResolution})`, async () => {
      const users = ["@b:example.com", "@c:example.com", "@d:example.com", "@e:example.com"];
      for (let seed = 1; seed <= 6; seed++) {
        const rand = prng(seed * 7919 + version.stateResolution * 10);
        const base = LinearRoom.start(version, users);
        base.send(ALICE, "m.room.power_levels", "", { users: { [ALICE]: 100, [users[0]!]: 75, [users[1]!]: 50 } });
        for (let i = 0; i < 5; i++) act(base, rand, users);
        const forks = [base.fork(), base.fork(), base.fork()];
        for (const f of forks) for (let i = 0; i < 12; i++) act(f, rand, users);
        const sets = forks.map((f) => f.state);
        const load = base.store.loader;
        const expected = await resolveState(version, sets, load);
        for (const order of permutations(sets)) assert.deepEqual(await resolveState(version, order, load), expected, `seed ${seed}`);
        assert.deepEqual(await resolveState(version, [sets[1]!, ...sets, sets[1]!], load), expected);
        for (const s of sets) {
          assert.deepEqual(await resolveState(version, [s], load), s);
          assert.deepEqual(await resolveState(version, [s, new Map(s)], load), s);
        }
        // The create event never moves.
        assert.equal(expected.get(stateKeyOf("m.room.create", "")), base.state.get(stateKeyOf("m.room.create", "")));
      }
    });
  }
});
