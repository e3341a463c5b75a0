/**
 * The "Definitions" of state resolution v2 that pick which events are replayed: the
 * unconflicted state map, the conflicted state set, the auth difference and (v2.1, room
 * version 12) the conflicted state subgraph.
 *
 * The auth chains are never materialised per event. One depth-first pass numbers the auth
 * graph reachable from the state sets; one sweep from the newest events to the oldest then
 * pushes down, per event, a bitmask of the state sets whose full auth chain contains it.
 * That is linear in the size of the auth graph times ⌈sets/32⌉, where computing each
 * event's auth chain separately would be quadratic in a room with a long history.
 */
import type { EventGraph } from "./graph.js";

/** A state map: `stateKeyOf(type, stateKey)` -> event ID. */
export type StateIds = ReadonlyMap<string, string>;

export interface Partition {
  /** The keys every state set has, with the same event in each. */
  unconflicted: Map<string, string>;
  /** Every other event of every state set (the conflicted state set). */
  conflicted: Set<string>;
}

/**
 * Splits the state sets. A key missing from one set is conflicted (the spec: a pair is
 * unconflicted only when the key "is present in every S_i with the same value").
 */
export function partitionStateSets(stateSets: readonly StateIds[]): Partition {
  const unconflicted = new Map<string, string>();
  const conflicted = new Set<string>();
  const keys = new Set<string>();
  for (const set of stateSets) for (const key of set.keys()) keys.add(key);
  for (const key of keys) {
    let agreed: string | undefined;
    let same = true;
    for (const set of stateSets) {
      const id = set.get(key);
      if (id === undefined || (agreed !== undefined && id !== agreed)) same = false;
      agreed ??= id;
    }
    if (same && agreed !== undefined) {
      unconflicted.set(key, agreed);
    } else {
      for (const set of stateSets) {
        const id = set.get(key);
        if (id !== undefined) conflicted.add(id);
      }
    }
  }
  return { unconflicted, conflicted };
}

/** The loaded auth graph reachable from some roots, numbered, with a topological order. */
interface IndexedGraph {
  ids: string[];
  index: Map<string, number>;
  /** `edges[i]`: the indices of event i's (loaded) auth events. */
  edges: number[][];
  /** Post-order of a depth-first walk along auth edges: every event after its auth events. */
  postOrder: Int32Array;
}

function indexGraph(graph: EventGraph, roots: Iterable<string>): IndexedGraph {
  const ids: string[] = [];
  const index = new Map<string, number>();
  const add = (id: string): number | undefined => {
    const known = index.get(id);
    if (known !== undefined) return known;
    if (!graph.has(id)) return undefined;
    index.set(id, ids.length);
    ids.push(id);
    return ids.length - 1;
  };
  for (const id of roots) add(id);
  const edges: number[][] = [];
  for (let i = 0; i < ids.length; i++) {
    const out: number[] = [];
    for (const aid of graph.authIds(ids[i]!)) {
      const j = add(aid);
      if (j !== undefined) out.push(j);
    }
    edges.push(out);
  }

  // Iterative DFS; a back edge (a cycle, impossible with hash-derived IDs unless the loader
  // returns the wrong events) is ignored rather than looping.
  const n = ids.length;
  const postOrder = new Int32Array(n);
  let written = 0;
  const mark = new Uint8Array(n); // 0 new, 1 on the stack, 2 done
  const stack: number[] = [];
  const cursor: number[] = [];
  for (let root = 0; root < n; root++) {
    if (mark[root] !== 0) continue;
    mark[root] = 1;
    stack.push(root);
    cursor.push(0);
    while (stack.length > 0) {
      const top = stack.length - 1;
      const node = stack[top]!;
      const out = edges[node]!;
      const pos = cursor[top]!;
      if (pos < out.length) {
        cursor[top] = pos + 1;
        const child = out[pos]!;
        if (mark[child] === 0) {
          mark[child] = 1;
          stack.push(child);
          cursor.push(0);
        }
      } else {
        mark[node] = 2;
        postOrder[written++] = node;
        stack.pop();
        cursor.pop();
      }
    }
  }
  return { ids, index, edges, postOrder };
}

/**
 * The full conflicted set: the conflicted state set, the auth difference (events in some
 * but not all of the state sets' full auth chains) and, when `withSubgraph` (v2.1), the
 * conflicted state subgraph (events on an `auth_events` path between two conflicted events).
 * Events the loader could not supply are left out: nothing can be replayed without them.
 */
export function fullConflictedSet(
  graph: EventGraph,
  stateSets: readonly StateIds[],
  conflicted: ReadonlySet<string>,
  withSubgraph: boolean,
): Set<string> {
  const roots = new Set<string>();
  for (const set of stateSets) for (const id of set.values()) roots.add(id);
  const g = indexGraph(graph, roots);
  const n = g.ids.length;
  const k = stateSets.length;
  const words = Math.ceil(k / 32);

  // direct[i]: the sets that contain event i; inChain[i]: the sets with an event whose auth
  // chain contains it. A set's full auth chain is counted here WITH the set's own events, as
  // Synapse computes it: the difference is then the same for conflicted events (which are in
  // the full conflicted set anyway) and leaves out unconflicted events that only some sets'
  // chains cite. Servers must pick the same events to converge, so we match the network.
  const direct = new Uint32Array(n * words);
  const inChain = new Uint32Array(n * words);
  stateSets.forEach((set, s) => {
    const w = s >>> 5;
    const bit = (1 << (s & 31)) >>> 0;
    for (const id of set.values()) {
      const i = g.index.get(id);
      if (i !== undefined) direct[i * words + w]! |= bit;
    }
  });
  // Reverse post-order visits every event before its auth events.
  for (let p = n - 1; p >= 0; p--) {
    const node = g.postOrder[p]!;
    for (const child of g.edges[node]!) {
      for (let w = 0; w < words; w++) {
        inChain[child * words + w]! |= inChain[node * words + w]! | direct[node * words + w]!;
      }
    }
  }

  const full = new Set<string>();
  for (const id of conflicted) if (graph.has(id)) full.add(id);
  for (let i = 0; i < n; i++) {
    let any = false;
    let all = true;
    for (let w = 0; w < words; w++) {
      const bits = (inChain[i * words + w]! | direct[i * words + w]!) >>> 0;
      const want = w < words - 1 || k % 32 === 0 ? 0xffffffff : ((1 << (k % 32)) - 1) >>> 0;
      if (bits !== 0) any = true;
      if (bits !== want) all = false;
    }
    if (any && !all) full.add(g.ids[i]!);
  }

  if (withSubgraph) for (const id of conflictedSubgraph(g, conflicted)) full.add(id);
  return full;
}

/**
 * v2.1: the union of all `auth_events` paths between two conflicted events (endpoints
 * included), i.e. the events both reachable from a conflicted event and from which a
 * conflicted event is reachable.
 */
function conflictedSubgraph(g: IndexedGraph, conflictedIds: ReadonlySet<string>): string[] {
  const n = g.ids.length;
  const isConflicted = new Uint8Array(n);
  for (const id of conflictedIds) {
    const i = g.index.get(id);
    if (i !== undefined) isConflicted[i] = 1;
  }
  // below[i]: some conflicted event reaches i (or i is conflicted). Newest first.
  const below = Uint8Array.from(isConflicted);
  for (let p = n - 1; p >= 0; p--) {
    const node = g.postOrder[p]!;
    if (!below[node]) continue;
    for (const child of g.edges[node]!) below[child] = 1;
  }
  // above[i]: i reaches some conflicted event (or is one). Oldest first.
  const above = Uint8Array.from(isConflicted);
  for (let p = 0; p < n; p++) {
    const node = g.postOrder[p]!;
    if (above[node]) continue;
    for (const child of g.edges[node]!) {
      if (above[child]) {
        above[node] = 1;
        break;
      }
    }
  }
  const out: string[] = [];
  for (let i = 0; i < n; i++) if (below[i] && above[i]) out.push(g.ids[i]!);
  return out;
}
