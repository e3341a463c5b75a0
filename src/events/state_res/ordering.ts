/**
 * The two orderings of state resolution v2: the reverse topological power ordering (for
 * power events and the auth events between them) and the mainline ordering (for the rest).
 */
import { compareCodePoints } from "../canonical_json.js";
import { EventTypes, type Pdu } from "../types.js";
import type { EventGraph } from "./graph.js";

/**
 * A power event (spec "Definitions"): power levels, join rules, or a kick/ban (a `leave` or
 * `ban` membership sent by someone else). The create event is counted too, as Synapse and
 * ruma do: the spec's list omits it, but a create event only reaches the full conflicted
 * set when a state set lacks it, and it must then be replayed first, before any event
 * whose authorisation needs it.
 */
export function isPowerEvent(pdu: Pdu): boolean {
  if (pdu.state_key === "" && (pdu.type === EventTypes.powerLevels || pdu.type === EventTypes.joinRules)) return true;
  if (pdu.state_key === "" && pdu.type === EventTypes.create) return true;
  if (pdu.type === EventTypes.member && typeof pdu.state_key === "string") {
    const m = pdu.content.membership;
    return (m === "leave" || m === "ban") && pdu.sender !== pdu.state_key;
  }
  return false;
}

function compareNumbers(a: number, b: number): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A binary min-heap; small and local, since the ordering needs nothing more. */
class MinHeap<T> {
  private readonly items: T[] = [];
  constructor(private readonly less: (a: T, b: T) => boolean) {}

  get size(): number {
    return this.items.length;
  }

  push(item: T): void {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(a[i]!, a[parent]!)) break;
      [a[i], a[parent]] = [a[parent]!, a[i]!];
      i = parent;
    }
  }

  pop(): T | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.less(a[l]!, a[m]!)) m = l;
        if (r < a.length && this.less(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

/**
 * Kahn's algorithm over `graph` (node -> the nodes it points at, all of them keys), emitting
 * a node only once everything it points at has been emitted and, among the candidates,
 * always the smallest by `compare`. With auth edges, that puts auth events first.
 */
export function lexicographicalTopologicalSort(
  graph: ReadonlyMap<string, ReadonlySet<string>>,
  compare: (a: string, b: string) => number,
): string[] {
  const remaining = new Map<string, number>();
  const dependents = new Map<string, string[]>();
  const heap = new MinHeap<string>((a, b) => compare(a, b) < 0);
  for (const [node, out] of graph) {
    let count = 0;
    for (const target of out) {
      if (!graph.has(target) || target === node) continue;
      count++;
      let list = dependents.get(target);
      if (!list) dependents.set(target, (list = []));
      list.push(node);
    }
    remaining.set(node, count);
    if (count === 0) heap.push(node);
  }
  const order: string[] = [];
  while (heap.size > 0) {
    const node = heap.pop()!;
    order.push(node);
    for (const dependent of dependents.get(node) ?? []) {
      const left = remaining.get(dependent)! - 1;
      remaining.set(dependent, left);
      if (left === 0) heap.push(dependent);
    }
  }
  return order;
}

/**
 * Algorithm step 1: the power events of the full conflicted set plus the events of the full
 * conflicted set that their auth chains reach, in reverse topological power ordering.
 *
 * Auth chains are followed only through events of the full conflicted set, and only those
 * edges order the result: this is what Synapse and ruma do, and servers must agree on the
 * order to converge. (Read literally, the spec would also take full-conflicted-set events
 * reached through events outside it; those are rare, since such an intermediate event is in
 * every state set's auth chain, and room version 12's conflicted state subgraph adds them.)
 */
export function reverseTopologicalPowerOrder(graph: EventGraph, fullConflicted: ReadonlySet<string>): string[] {
  const dag = new Map<string, Set<string>>();
  const stack: string[] = [];
  for (const id of fullConflicted) {
    const pdu = graph.get(id);
    if (pdu && isPowerEvent(pdu)) stack.push(id);
  }
  while (stack.length > 0) {
    const id = stack.pop()!;
    if (dag.has(id)) continue;
    const out = new Set<string>();
    dag.set(id, out);
    for (const aid of graph.authIds(id)) {
      if (!fullConflicted.has(aid)) continue;
      out.add(aid);
      if (!dag.has(aid)) stack.push(aid);
    }
  }

  const power = new Map<string, number>();
  for (const id of dag.keys()) power.set(id, graph.senderPowerLevel(id));
  return lexicographicalTopologicalSort(dag, (a, b) => {
    // Greater power first, then earlier origin_server_ts, then the smaller event ID.
    const byPower = compareNumbers(power.get(b)!, power.get(a)!);
    if (byPower !== 0) return byPower;
    const byTs = compareNumbers(graph.get(a)!.origin_server_ts, graph.get(b)!.origin_server_ts);
    return byTs !== 0 ? byTs : compareCodePoints(a, b);
  });
}

/**
 * Algorithm step 3: `events` in mainline ordering based on the power levels event
 * `powerLevelsId` (the one in the partially resolved state, if any).
 *
 * Positions are counted from the oldest end here (the oldest mainline event is 1, an event
 * whose power levels ancestry never meets the mainline is 0) and sorted ascending, which is
 * the spec's order (greater mainline position from the newest end first, ∞ first of all).
 */
export function mainlineOrder(graph: EventGraph, events: readonly string[], powerLevelsId: string | undefined): string[] {
  const mainline: string[] = [];
  const seen = new Set<string>();
  for (let pl = powerLevelsId; pl !== undefined && !seen.has(pl) && graph.has(pl); pl = graph.powerLevelsAuthOf(pl)) {
    seen.add(pl);
    mainline.push(pl);
  }
  const depthOf = new Map<string, number>();
  mainline.forEach((id, i) => depthOf.set(id, mainline.length - i));

  // Memoised per event on the walk, so events sharing a power levels ancestry walk it once.
  const memo = new Map<string, number>();
  const mainlineDepth = (id: string): number => {
    const path: string[] = [];
    const onPath = new Set<string>();
    let depth = 0;
    for (let cur: string | undefined = id; cur !== undefined; cur = graph.powerLevelsAuthOf(cur)) {
      const found = depthOf.get(cur) ?? memo.get(cur);
      if (found !== undefined) {
        depth = found;
        break;
      }
      if (onPath.has(cur)) break;
      onPath.add(cur);
      path.push(cur);
    }
    for (const p of path) memo.set(p, depth);
    return depth;
  };

  const keyed = events.map((id) => ({ id, depth: mainlineDepth(id), ts: graph.get(id)!.origin_server_ts }));
  keyed.sort((a, b) => compareNumbers(a.depth, b.depth) || compareNumbers(a.ts, b.ts) || compareCodePoints(a.id, b.id));
  return keyed.map((e) => e.id);
}
