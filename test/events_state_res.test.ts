/**
 * State resolution v2 (src/events/state_res/): the classic scenarios every implementation
 * tests, re-expressed over real signed PDUs, the tie breaks, and order-independence.
 * Each scenario builds a room along a prev_events DAG (test/helpers/state_res.ts) whose
 * state is resolved with `resolveState` wherever branches merge, then checks the state at
 * END: the keys changed since START, plus those named.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { compareCodePoints, lexicographicalTopologicalSort, resolveState, type RoomVersion } from "../src/events/index.js";
import {
  ALICE,
  BOB,
  CHARLIE,
  DagRoom,
  EVELYN,
  member,
  permutations,
  power,
  topic,
  V10,
  V11,
  V11_SR21,
  V12,
  ZARA,
  type Node,
} from "./helpers/state_res.js";

interface Scenario {
  name: string;
  nodes: Node[];
  edges: string[][];
  expected: string[];
}

const SCENARIOS: Scenario[] = [
  {
    name: "ban vs power levels: Alice's ban of Bob beats Bob's concurrent power levels change",
    nodes: [
      power("PA", ALICE, { [ALICE]: 100, [BOB]: 50 }),
      member("MA", ALICE, ALICE, "join"),
      member("MB", ALICE, BOB, "ban"),
      power("PB", BOB, { [ALICE]: 100, [BOB]: 50 }),
    ],
    edges: [
      ["END", "MB", "MA", "PA", "START"],
      ["END", "PB", "PA"],
    ],
    expected: ["PA", "MA", "MB"],
  },
  {
    name: "join rule evasion: a join concurrent with a switch to invite-only is dropped",
    nodes: [
      { id: "JR", sender: ALICE, type: "m.room.join_rules", stateKey: "", content: { join_rule: "invite" } },
      member("ME", EVELYN, EVELYN, "join"),
    ],
    edges: [
      ["END", "JR", "START"],
      ["END", "ME", "START"],
    ],
    expected: ["JR"],
  },
  {
    name: "offtopic power levels: Charlie's change, made after Bob gave him power, survives",
    nodes: [
      power("PA", ALICE, { [ALICE]: 100, [BOB]: 50 }),
      power("PB", BOB, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 50 }),
      power("PC", CHARLIE, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 0 }),
    ],
    edges: [
      ["END", "PC", "PB", "PA", "START"],
      ["END", "PA"],
    ],
    expected: ["PC"],
  },
  {
    name: "topic basic: Alice demotes Bob; Bob's concurrent power levels and topic are undone",
    nodes: [
      topic("T1", ALICE),
      power("PA1", ALICE, { [ALICE]: 100, [BOB]: 50 }),
      topic("T2", ALICE),
      power("PA2", ALICE, { [ALICE]: 100, [BOB]: 0 }),
      power("PB", BOB, { [ALICE]: 100, [BOB]: 50 }),
      topic("T3", BOB),
    ],
    edges: [
      ["END", "PA2", "T2", "PA1", "T1", "START"],
      ["END", "T3", "PB", "PA1"],
    ],
    expected: ["PA2", "T2"],
  },
  {
    name: "topic reset: Bob's topic is dropped once he is banned, restoring the earlier topic",
    nodes: [
      topic("T1", ALICE),
      power("PA", ALICE, { [ALICE]: 100, [BOB]: 50 }),
      topic("T2", BOB),
      member("MB", ALICE, BOB, "ban"),
    ],
    edges: [
      ["END", "MB", "T2", "PA", "T1", "START"],
      ["END", "T1"],
    ],
    expected: ["T1", "MB", "PA"],
  },
  {
    name: "topic with a power change: a topic sent after the demotion's merge wins",
    nodes: [
      topic("T1", ALICE),
      power("PA1", ALICE, { [ALICE]: 100, [BOB]: 50 }),
      topic("T2", ALICE),
      power("PA2", ALICE, { [ALICE]: 100, [BOB]: 0 }),
      power("PB", BOB, { [ALICE]: 100, [BOB]: 50 }),
      topic("T3", BOB),
      { id: "MZ1", sender: ZARA, type: "m.room.message", content: { body: "merge" } },
      topic("T4", ALICE),
    ],
    edges: [
      ["END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"],
      ["END", "MZ1", "T3", "PB", "PA1"],
    ],
    expected: ["T4", "PA2"],
  },
  {
    name: "mainline sort: the topic based on the newer mainline power levels wins over a later one",
    nodes: [
      topic("T1", ALICE),
      power("PA1", ALICE, { [ALICE]: 100, [BOB]: 50 }),
      topic("T2", ALICE),
      power("PA2", ALICE, { [ALICE]: 100, [BOB]: 50 }, { events: { "m.room.power_levels": 100 } }),
      power("PB", BOB, { [ALICE]: 100, [BOB]: 50 }),
      topic("T3", BOB),
      topic("T4", ALICE),
    ],
    edges: [
      ["END", "T3", "PA2", "T2", "PA1", "T1", "START"],
      ["END", "T4", "PB", "PA1"],
    ],
    expected: ["T3", "PA2"],
  },
];

const VERSIONS: [string, RoomVersion][] = [
  ["v10", V10],
  ["v11", V11],
  ["v11 rules with state res v2.1", V11_SR21],
  ...(V12 ? [["v12", V12] as [string, RoomVersion]] : []),
];

for (const [label, version] of VERSIONS) {
  describe(`classic scenarios (${label})`, () => {
    for (const s of SCENARIOS) {
      test(s.name, async () => {
        const room = await DagRoom.build(version, s.nodes, s.edges);
        assert.deepEqual(room.changedAtEnd(s.expected), room.expectedMap(s.expected));
      });
    }
  });
}

describe("tie breaks", () => {
  test("Kahn's algorithm takes the smallest ready node first", () => {
    const graph = new Map<string, Set<string>>([
      ["l", new Set(["o"])],
      ["m", new Set(["n", "o"])],
      ["n", new Set(["o"])],
      ["o", new Set()],
      ["p", new Set(["o"])],
    ]);
    assert.deepEqual(lexicographicalTopologicalSort(graph, compareCodePoints), ["o", "l", "n", "m", "p"]);
  });

  /** Two concurrent power levels events on forks from START (where Alice has given Bob 50). */
  async function powerFork(a: Node, b: Node): Promise<DagRoom> {
    const base = power("P0", ALICE, { [ALICE]: 100, [BOB]: 50 });
    return DagRoom.build(V11, [base, a, b], [
      ["END", a.id, "P0", "START"],
      ["END", b.id, "P0"],
    ]);
  }

  test("the sender's greater power level sorts first, so the weaker change is applied last", async () => {
    // Alice's is later, but she has more power: hers is replayed first, Bob's over it.
    const alice = { ...power("PALICE", ALICE, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 10 }), ts: 5000 };
    const bob = { ...power("PBOB", BOB, { [ALICE]: 100, [BOB]: 50, [ZARA]: 20 }), ts: 4000 };
    const room = await powerFork(alice, bob);
    assert.equal(room.nameOf(room.stateAfter.get("END")!.get(room.keyOfName("PBOB"))), "PBOB");
  });

  test("at equal power, the earlier origin_server_ts sorts first", async () => {
    for (const [early, late] of [
      ["PX", "PY"],
      ["PY", "PX"],
    ] as const) {
      const x = { ...power("PX", ALICE, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 1 }), ts: early === "PX" ? 4000 : 5000 };
      const y = { ...power("PY", ALICE, { [ALICE]: 100, [BOB]: 50, [ZARA]: 1 }), ts: early === "PY" ? 4000 : 5000 };
      const room = await powerFork(x, y);
      assert.equal(room.nameOf(room.stateAfter.get("END")!.get(room.keyOfName("PX"))), late);
    }
  });

  test("at equal power and origin_server_ts, the smaller event ID sorts first", async () => {
    const x = { ...power("PX", ALICE, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 1 }), ts: 4000 };
    const y = { ...power("PY", ALICE, { [ALICE]: 100, [BOB]: 50, [ZARA]: 1 }), ts: 4000 };
    const room = await powerFork(x, y);
    const [idX, idY] = [room.eventId.get("PX")!, room.eventId.get("PY")!];
    const larger = compareCodePoints(idX, idY) > 0 ? "PX" : "PY";
    assert.equal(room.nameOf(room.stateAfter.get("END")!.get(room.keyOfName("PX"))), larger);
  });

  test("mainline ties: equal mainline position and origin_server_ts fall back to the event ID", async () => {
    const room = await DagRoom.build(V11, [topic("TA", ALICE, 7000), topic("TB", ALICE, 7000)], [
      ["END", "TA", "START"],
      ["END", "TB", "START"],
    ]);
    const [a, b] = [room.eventId.get("TA")!, room.eventId.get("TB")!];
    const winner = compareCodePoints(a, b) > 0 ? "TA" : "TB";
    assert.deepEqual(room.changedAtEnd([winner]), room.expectedMap([winner]));
  });

  test("mainline ties: equal mainline position, the later origin_server_ts is applied last", async () => {
    const room = await DagRoom.build(V11, [topic("TA", ALICE, 7001), topic("TB", ALICE, 7000)], [
      ["END", "TA", "START"],
      ["END", "TB", "START"],
    ]);
    assert.deepEqual(room.changedAtEnd(["TA"]), room.expectedMap(["TA"]));
  });
});

describe("unconflicted input and order independence", () => {
  test("no sets, one set, identical sets: returned as they are, without loading anything", async () => {
    const room = await DagRoom.build(V11, [topic("T1", ALICE)], [["END", "T1", "START"]]);
    const state = room.stateAfter.get("END")!;
    const calls = room.store.loadCalls;
    assert.deepEqual(await room.resolve([]), new Map());
    assert.deepEqual(await room.resolve([state]), state);
    assert.deepEqual(await room.resolve([state, new Map(state), new Map(state)]), state);
    assert.equal(room.store.loadCalls, calls);
  });

  test("disjoint keys are conflicted (missing from one set), and the valid ones are kept", async () => {
    const room = await DagRoom.build(V11, [topic("T1", ALICE), member("ME", EVELYN, EVELYN, "join")], [
      ["END", "T1", "START"],
      ["END", "ME", "START"],
    ]);
    assert.deepEqual(room.changedAtEnd(["T1", "ME"]), room.expectedMap(["T1", "ME"]));
  });

  test("three forks: every order of the state sets, and repeated sets, give the same result", async () => {
    for (const [, version] of VERSIONS) {
      const room = await DagRoom.build(
        version,
        [
          power("PA", ALICE, { [ALICE]: 100, [BOB]: 50 }),
          topic("T1", BOB),
          member("MB", ALICE, BOB, "ban"),
          topic("T2", ALICE),
          power("PB", BOB, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 50 }),
          topic("T3", CHARLIE),
          member("MZ", ZARA, ZARA, "leave"),
        ],
        [
          ["END", "T1", "PA", "START"],
          ["END", "T2", "MB", "PA"],
          ["END", "T3", "PB", "PA"],
          ["END", "MZ", "START"],
        ],
      );
      const sets = ["T1", "T2", "T3", "MZ"].map((n) => room.stateAfter.get(n)!);
      const expected = await room.resolve(sets);
      for (const order of permutations(sets)) assert.deepEqual(await room.resolve(order), expected);
      assert.deepEqual(await room.resolve([...sets, sets[0]!, sets[2]!]), expected);
      // The ban holds, so Bob's topic and power grant are undone; Charlie's topic needed PB.
      assert.equal(room.nameOf(expected.get(room.keyOfName("MB"))), "MB");
      assert.equal(room.nameOf(expected.get(room.keyOfName("T1"))), "T2");
      assert.equal(room.nameOf(expected.get(room.keyOfName("MZ"))), "MZ");
    }
  });

  test("the result does not depend on the order of the loader's answers", async () => {
    const s = SCENARIOS[3]!;
    const room = await DagRoom.build(V11, s.nodes, s.edges);
    const sets = [room.stateAfter.get("PA2")!, room.stateAfter.get("T3")!];
    const expected = await room.resolve(sets);
    const reversing = async (ids: readonly string[]) => new Map([...(await room.store.loader([...ids].reverse()))].reverse());
    assert.deepEqual(await resolveState(V11, sets, reversing), expected);
  });
});
