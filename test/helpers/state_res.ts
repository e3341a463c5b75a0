/**
 * Rooms for the state resolution tests: real, hashed and signed PDUs whose state is worked
 * out along a `prev_events` DAG, resolving with `resolveState` wherever branches merge.
 */
import {
  authEventTypes,
  buildEvent,
  compareCodePoints,
  lexicographicalTopologicalSort,
  resolveState,
  ROOM_VERSIONS,
  signingKeyFromSeed,
  stateKeyOf,
  type EventLoader,
  type Pdu,
  type RoomVersion,
  type StateIds,
} from "../../src/events/index.js";

const key = signingKeyFromSeed("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1");
export const signer = { serverName: "example.com", keyId: "ed25519:sr", privateKey: key };

export const ALICE = "@alice:example.com";
export const BOB = "@bob:example.com";
export const CHARLIE = "@charlie:example.com";
export const EVELYN = "@evelyn:example.com";
export const ZARA = "@zara:example.com";
export const ROOM_ID = "!room:example.com";

export const V10 = ROOM_VERSIONS["10"]!;
export const V11 = ROOM_VERSIONS["11"]!;
/** Room version 12 (state resolution v2.1, privileged creators, room IDs from create events), once defined. */
export const V12: RoomVersion | undefined = ROOM_VERSIONS["12"];
/** Room version 11 with state resolution v2.1: MSC4297's `org.matrix.hydra.11`. */
export const V11_SR21: RoomVersion = Object.freeze({ ...V11, stateResolution: 2.1 as const });

export interface Node {
  id: string;
  sender: string;
  type: string;
  stateKey?: string;
  content?: Record<string, unknown>;
  /** origin_server_ts; by default a counter in processing order. */
  ts?: number;
}

export const member = (id: string, sender: string, target: string, membership: string, ts?: number): Node => ({
  id,
  sender,
  type: "m.room.member",
  stateKey: target,
  content: { membership },
  ts,
});
export const power = (id: string, sender: string, users: Record<string, number>, extra: Record<string, unknown> = {}): Node => ({
  id,
  sender,
  type: "m.room.power_levels",
  stateKey: "",
  content: { users, ...extra },
});
export const topic = (id: string, sender: string, ts?: number): Node => ({
  id,
  sender,
  type: "m.room.topic",
  stateKey: "",
  content: { topic: id },
  ts,
});

/** The room every DAG scenario starts from (the classic fixture of state resolution tests). */
export function initialNodes(version: RoomVersion): Node[] {
  return [
    { id: "CREATE", sender: ALICE, type: "m.room.create", stateKey: "", content: { room_version: version.id } },
    member("IMA", ALICE, ALICE, "join"),
    power("IPOWER", ALICE, { [ALICE]: 100 }),
    { id: "IJR", sender: ALICE, type: "m.room.join_rules", stateKey: "", content: { join_rule: "public" } },
    member("IMB", BOB, BOB, "join"),
    member("IMC", CHARLIE, CHARLIE, "join"),
    member("IMZ", ZARA, ZARA, "join"),
    { id: "START", sender: ZARA, type: "m.room.message", content: { body: "start" } },
    { id: "END", sender: ZARA, type: "m.room.message", content: { body: "end" } },
  ];
}
export const INITIAL_EDGES = ["START", "IMZ", "IMC", "IMB", "IJR", "IPOWER", "IMA", "CREATE"];

/**
 * Content as a room version wants it: in room version 12 (MSC4289) the creator, Alice, has
 * an infinite power level and may not be listed in power levels' `users`.
 */
export function adaptContent(version: RoomVersion, type: string, content: Record<string, unknown>): Record<string, unknown> {
  if (version.eventFormat !== 4 || type !== "m.room.power_levels" || typeof content.users !== "object") return content;
  const users = { ...(content.users as Record<string, unknown>) };
  delete users[ALICE];
  return { ...content, users };
}

/** A store of events in memory with a counting loader. */
export class EventStore {
  readonly events = new Map<string, Pdu>();
  /** The room; in room version 12 (event format 4) it is derived from the create event. */
  roomId = ROOM_ID;
  loadCalls = 0;
  largestBatch = 0;
  loader: EventLoader = async (ids) => {
    this.loadCalls++;
    this.largestBatch = Math.max(this.largestBatch, ids.length);
    const out = new Map<string, Pdu>();
    for (const id of ids) {
      const pdu = this.events.get(id);
      if (pdu) out.set(id, pdu);
    }
    return out;
  };

  /** Builds and stores an event; `authEvents` are event IDs. Returns its event ID. */
  add(version: RoomVersion, node: Node, authEvents: string[], prevEvents: string[], depth: number, ts: number): string {
    const derivedRoom = version.eventFormat === 4 && node.type === "m.room.create";
    const { eventId, pdu } = buildEvent(
      {
        version,
        roomId: derivedRoom ? "" : this.roomId,
        sender: node.sender,
        type: node.type,
        stateKey: node.stateKey,
        content: adaptContent(version, node.type, node.content ?? {}),
        prevEvents,
        authEvents,
        depth,
        originServerTs: node.ts ?? ts,
      },
      signer,
    );
    this.events.set(eventId, pdu);
    if (derivedRoom) this.roomId = `!${eventId.slice(1)}`;
    return eventId;
  }
}

/**
 * A room built from nodes and `prev_events` chains (`[A, B, C]`: A's prev is B, B's is C),
 * processed in topological order with node names breaking ties; `origin_server_ts` counts up
 * in that order. Each event cites, as auth events, the auth events selection from the state
 * before it.
 */
export class DagRoom {
  readonly store = new EventStore();
  readonly eventId = new Map<string, string>();
  readonly stateAfter = new Map<string, Map<string, string>>();

  constructor(readonly version: RoomVersion) {}

  static async build(version: RoomVersion, nodes: Node[], edges: string[][]): Promise<DagRoom> {
    const room = new DagRoom(version);
    await room.add([...initialNodes(version), ...nodes], [INITIAL_EDGES, ...edges]);
    return room;
  }

  async add(nodes: Node[], edges: string[][]): Promise<void> {
    const byName = new Map(nodes.map((n) => [n.id, n]));
    const prevs = new Map<string, Set<string>>(nodes.map((n) => [n.id, new Set<string>()]));
    for (const chain of edges) {
      for (let i = 0; i + 1 < chain.length; i++) prevs.get(chain[i]!)!.add(chain[i + 1]!);
    }
    const depth = new Map<string, number>();
    let ts = 0;
    for (const name of lexicographicalTopologicalSort(prevs, compareCodePoints)) {
      const node = byName.get(name)!;
      const prevNames = [...prevs.get(name)!].sort();
      const before = await this.resolveNames(prevNames);
      const auth = authEventTypes(node.type, node.stateKey, node.sender, node.content ?? {}, this.version)
        .map(([t, k]) => before.get(stateKeyOf(t, k)))
        .filter((id): id is string => id !== undefined);
      const d = 1 + Math.max(0, ...prevNames.map((p) => depth.get(p)!));
      const id = this.store.add(this.version, node, auth, prevNames.map((p) => this.eventId.get(p)!), d, ts++);
      depth.set(name, d);
      this.eventId.set(name, id);
      const after = new Map(before);
      if (node.stateKey !== undefined) after.set(stateKeyOf(node.type, node.stateKey), id);
      this.stateAfter.set(name, after);
    }
  }

  private async resolveNames(prevNames: string[]): Promise<Map<string, string>> {
    if (prevNames.length === 0) return new Map();
    if (prevNames.length === 1) return new Map(this.stateAfter.get(prevNames[0]!)!);
    return resolveState(this.version, prevNames.map((p) => this.stateAfter.get(p)!), this.store.loader);
  }

  resolve(sets: StateIds[], version = this.version): Promise<Map<string, string>> {
    return resolveState(version, sets, this.store.loader);
  }

  /** The node name of an event ID (for readable assertions). */
  nameOf(eventId: string | undefined): string | undefined {
    for (const [name, id] of this.eventId) if (id === eventId) return name;
    return eventId;
  }

  /**
   * The state at END restricted to the keys that changed since START plus those of
   * `expected`, as node names keyed by state key: the classic scenarios' assertion.
   */
  changedAtEnd(expected: string[]): Map<string, string | undefined> {
    const start = this.stateAfter.get("START")!;
    const end = this.stateAfter.get("END")!;
    const expectedKeys = new Set(expected.map((name) => this.keyOfName(name)));
    const out = new Map<string, string | undefined>();
    for (const [k, id] of end) if (expectedKeys.has(k) || start.get(k) !== id) out.set(k, this.nameOf(id));
    return out;
  }

  keyOfName(name: string): string {
    const pdu = this.store.events.get(this.eventId.get(name)!)!;
    return stateKeyOf(pdu.type, pdu.state_key!);
  }

  expectedMap(expected: string[]): Map<string, string | undefined> {
    return new Map(expected.map((name) => [this.keyOfName(name), name]));
  }
}

/** Every permutation of a short list. */
export function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [items.slice()];
  const out: T[][] = [];
  items.forEach((item, i) => {
    for (const rest of permutations([...items.slice(0, i), ...items.slice(i + 1)])) out.push([item, ...rest]);
  });
  return out;
}

/** A small deterministic PRNG (mulberry32), so randomised tests are reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
