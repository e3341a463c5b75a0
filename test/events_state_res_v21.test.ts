/**
 * State resolution v2.1 (MSC4297, room version 12) against v2: the two state resets MSC4297
 * fixes (its "Problem A" and "Problem B"), and the full conflicted set each version builds.
 * The state sets here are what a server can end up with after a partial synchronisation: one
 * of them names an older event for a key than its own auth chains do.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ROOM_VERSIONS, stateKeyOf } from "../src/events/index.js";
import { fullConflictedSet, partitionStateSets } from "../src/events/state_res/conflicts.js";
import { EventGraph } from "../src/events/state_res/graph.js";
import { ALICE, BOB, CHARLIE, DagRoom, member, power, topic, V10, V11, V11_SR21, V12 } from "./helpers/state_res.js";
import type { RoomVersion } from "../src/events/index.js";

const JR_KEY = stateKeyOf("m.room.join_rules", "");
const PL_KEY = stateKeyOf("m.room.power_levels", "");

/** v2.1 pairs: [version the room is built with, version it is resolved with]. */
const V21: [RoomVersion, RoomVersion][] = [[V11, V11_SR21], ...(V12 ? [[V12, V12] as [RoomVersion, RoomVersion]] : [])];

/** Problem A: both forks agree Alice left; one names her older join rules. */
async function problemA(version: RoomVersion): Promise<{ room: DagRoom; sets: Map<string, string>[] }> {
  const room = await DagRoom.build(
    version,
    [
      { id: "JR1", sender: ALICE, type: "m.room.join_rules", stateKey: "", content: { join_rule: "invite" } },
      { id: "JR2", sender: ALICE, type: "m.room.join_rules", stateKey: "", content: { join_rule: "public" } },
      member("MAL", ALICE, ALICE, "leave"),
    ],
    [["END", "MAL", "JR2", "JR1", "START"]],
  );
  const fresh = room.stateAfter.get("END")!;
  const stale = new Map(fresh).set(JR_KEY, room.eventId.get("JR1")!);
  return { room, sets: [fresh, stale] };
}

/** Problem B: Alice promotes Bob, Bob promotes Charlie, Charlie edits; one fork names PL1. */
async function problemB(version: RoomVersion): Promise<{ room: DagRoom; sets: Map<string, string>[] }> {
  const room = await DagRoom.build(
    version,
    [
      power("PL1", ALICE, { [ALICE]: 100, [BOB]: 50 }),
      power("PL2", BOB, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 50 }),
      power("PL3", CHARLIE, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 50 }, { events: { "m.room.topic": 50 } }),
      topic("TC", CHARLIE),
    ],
    [["END", "TC", "PL3", "PL2", "PL1", "START"]],
  );
  const fresh = room.stateAfter.get("END")!;
  const stale = new Map(fresh).set(PL_KEY, room.eventId.get("PL1")!);
  return { room, sets: [fresh, stale] };
}

describe("MSC4297 problem A: conflicted events unauthorised by the unconflicted state", () => {
  test("v2 replays the join rules over 'Alice has left' and loses them both", async () => {
    for (const version of [V10, V11]) {
      const { room, sets } = await problemA(version);
      const resolved = await room.resolve(sets, version);
      assert.equal(resolved.has(JR_KEY), false);
    }
  });

  test("v2.1 replays them from an empty state, over their own auth events, and keeps the newer", async () => {
    for (const [built, resolver] of V21) {
      const { room, sets } = await problemA(built);
      for (const order of [sets, [...sets].reverse()]) {
        const resolved = await room.resolve(order, resolver);
        assert.equal(room.nameOf(resolved.get(JR_KEY)), "JR2");
        // The unconflicted state is still re-applied at the end: Alice has left.
        assert.equal(room.nameOf(resolved.get(stateKeyOf("m.room.member", ALICE))), "MAL");
      }
    }
  });
});

describe("MSC4297 problem B: conflicted events needing events that lie between them", () => {
  test("v2 misses Bob's promotion of Charlie (in every auth chain) and resets to PL1", async () => {
    for (const version of [V10, V11]) {
      const { room, sets } = await problemB(version);
      const resolved = await room.resolve(sets, version);
      assert.equal(room.nameOf(resolved.get(PL_KEY)), "PL1");
      // The topic is unconflicted, so it stays, although Charlie has no power under PL1.
      assert.equal(room.nameOf(resolved.get(stateKeyOf("m.room.topic", ""))), "TC");
    }
  });

  test("v2.1 takes the conflicted state subgraph PL3 -> PL2 -> PL1 and keeps PL3", async () => {
    for (const [built, resolver] of V21) {
      const { room, sets } = await problemB(built);
      for (const order of [sets, [...sets].reverse()]) {
        const resolved = await room.resolve(order, resolver);
        assert.equal(room.nameOf(resolved.get(PL_KEY)), "PL3");
      }
    }
  });

  test("the full conflicted set: v2 has only the conflicted events, v2.1 adds PL2 between them", async () => {
    const { room, sets } = await problemB(V11);
    const names = async (subgraph: boolean): Promise<string[]> => {
      const graph = new EventGraph(room.store.loader, V11);
      const ids = sets.flatMap((s) => [...s.values()]);
      await graph.loadStateEvents(ids);
      await graph.loadAuthClosure(ids);
      const { conflicted } = partitionStateSets(sets);
      return [...fullConflictedSet(graph, sets, conflicted, subgraph)].map((id) => room.nameOf(id)!).sort();
    };
    assert.deepEqual(await names(false), ["PL1", "PL3"]);
    assert.deepEqual(await names(true), ["PL1", "PL2", "PL3"]);
  });
});

describe("full conflicted set", () => {
  test("the auth difference adds events in some state sets' auth chains but not all", async () => {
    // Fork 1: Alice gives Bob 50 (P1), Bob sets a topic, Alice gives Charlie 50 (P2).
    // Fork 2: Charlie sets nothing. P1 is in fork 1's auth chains only.
    const room = await DagRoom.build(
      V11,
      [
        power("P1", ALICE, { [ALICE]: 100, [BOB]: 50 }),
        topic("TB", BOB),
        power("P2", ALICE, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 50 }),
        member("MZ", "@zara:example.com", "@zara:example.com", "leave"),
      ],
      [
        ["END", "P2", "TB", "P1", "START"],
        ["END", "MZ", "START"],
      ],
    );
    const sets = [room.stateAfter.get("P2")!, room.stateAfter.get("MZ")!];
    const graph = new EventGraph(room.store.loader, V11);
    const ids = sets.flatMap((s) => [...s.values()]);
    await graph.loadStateEvents(ids);
    await graph.loadAuthClosure(ids);
    const { conflicted } = partitionStateSets(sets);
    const full = [...fullConflictedSet(graph, sets, conflicted, false)].map((id) => room.nameOf(id)).sort();
    // Conflicted: PL (P2 / IPOWER), topic (TB / none), Zara (IMZ / MZ). P1 only via the difference.
    assert.deepEqual(full, ["IMZ", "IPOWER", "MZ", "P1", "P2", "TB"]);
    assert.equal(conflicted.has(room.eventId.get("P1")!), false);
    // And the resolution: everything on fork 1 stands, Zara has left.
    const resolved = await room.resolve(sets);
    for (const name of ["P2", "TB", "MZ"]) assert.equal(room.nameOf(resolved.get(room.keyOfName(name))), name);
  });
});

describe("room version 12", () => {
  const v12 = ROOM_VERSIONS["12"];
  test("uses state resolution v2.1", { skip: v12 === undefined ? "room version 12 is not defined here yet" : false }, () => {
    assert.equal(v12!.stateResolution, 2.1);
  });
  test(
    "a creator's infinite power level sorts first, above any listed level",
    { skip: v12 === undefined ? "room version 12 is not defined here yet" : false },
    async () => {
      // Alice (the creator) has given Bob 150. Both change the power levels concurrently, Alice
      // later. Alice's sorts first (infinite power), so Bob's, still allowed, is applied last.
      const alice = { ...power("PALICE", ALICE, { [BOB]: 150, [CHARLIE]: 10 }), ts: 5000 };
      const bob = { ...power("PBOB", BOB, { [BOB]: 150, "@zara:example.com": 20 }), ts: 4000 };
      const room = await DagRoom.build(v12!, [power("P0", ALICE, { [BOB]: 150 }), alice, bob], [
        ["END", "PALICE", "P0", "START"],
        ["END", "PBOB", "P0"],
      ]);
      assert.equal(room.nameOf(room.stateAfter.get("END")!.get(PL_KEY)), "PBOB");
    },
  );
  test("versions 10 and 11 (and their MSC3757 variants) use v2", () => {
    for (const id of ["10", "11", "org.matrix.msc3757.10", "org.matrix.msc3757.11"]) {
      assert.equal(ROOM_VERSIONS[id]!.stateResolution, 2);
    }
  });
});
