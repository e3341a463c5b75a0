/**
 * State resolution v2 (room versions 2 to 11) and v2.1 (room version 12, MSC4297), per the
 * spec's room version pages (content/rooms/fragments/v2-state-res.md and content/rooms/v12.md
 * in matrix-org/matrix-spec, "State resolution"). Pure apart from the caller's loader.
 *
 * v2.1 differs in two places, both about what is replayed, not how: the full conflicted set
 * also holds the conflicted state subgraph, and the first iterative auth checks start from
 * an empty state map instead of the unconflicted state map (which step 5 re-applies anyway).
 */
import type { AuthOptions } from "../auth_rules.js";
import type { RoomVersion } from "../room_versions.js";
import { EventTypes, type Pdu } from "../types.js";
import { fullConflictedSet, partitionStateSets, type StateIds } from "./conflicts.js";
import { EventGraph, stateKeyOf, type EventLoader } from "./graph.js";
import { iterativeAuthChecks, type IterativeOptions } from "./iterative.js";
import { mainlineOrder, reverseTopologicalPowerOrder } from "./ordering.js";

export { partitionStateSets, type StateIds } from "./conflicts.js";
export { StateResError, stateKeyOf, type EventLoader } from "./graph.js";
export { isPowerEvent, lexicographicalTopologicalSort } from "./ordering.js";

export interface StateResEvent {
  eventId: string;
  pdu: Pdu;
}

export interface StateResOptions {
  /**
   * Passed to `checkEventAuth`. By default `verifyServerSignature` accepts: every event
   * state resolution sees is in a state set or an auth chain, so it was accepted, signature
   * checks included, when it was stored, and signatures do not change.
   */
  auth?: AuthOptions;
  /**
   * Events the caller rejected. They are not admitted, nor used as auth events, in the
   * iterative auth checks (spec "Rejected events"). Default: none.
   */
  isRejected?: (eventId: string) => boolean;
}

/**
 * Resolves `stateSets` (maps `stateKeyOf(type, stateKey)` -> event ID) into one state map,
 * with the algorithm of `version.stateResolution`. `load` is asked for the state sets'
 * events and their auth chains, a frontier (up to 1,000 IDs) at a time; events it cannot
 * supply are treated as absent. The result does not depend on the order of `stateSets`.
 *
 * Throws `StateResError` if the state sets' events belong to different rooms, and whatever
 * `load` throws.
 */
export async function resolveState(
  version: RoomVersion,
  stateSets: readonly StateIds[],
  load: EventLoader,
  options: StateResOptions = {},
): Promise<Map<string, string>> {
  const { unconflicted, conflicted } = partitionStateSets(stateSets);
  // Nothing to resolve: one set, identical sets, or none at all.
  if (conflicted.size === 0) return unconflicted;

  const graph = new EventGraph(load, version);
  const allIds = new Set<string>();
  for (const set of stateSets) for (const id of set.values()) allIds.add(id);
  await graph.loadStateEvents(allIds);
  await graph.loadAuthClosure(allIds);

  const v21 = version.stateResolution === 2.1;
  const full = fullConflictedSet(graph, stateSets, conflicted, v21);
  // Only state events can be replayed; an auth chain should hold nothing else.
  for (const id of full) if (typeof graph.get(id)?.state_key !== "string") full.delete(id);

  const checks: IterativeOptions = {
    auth: { verifyServerSignature: () => true, ...options.auth },
    isRejected: options.isRejected ?? (() => false),
  };

  // 1. Power events and the auth events between them, in reverse topological power order.
  const powerOrdered = reverseTopologicalPowerOrder(graph, full);
  // 2. Replayed over the unconflicted state (v2) or over nothing (v2.1).
  const partial = iterativeAuthChecks(graph, version, powerOrdered, v21 ? new Map() : unconflicted, checks);
  // 3. Everything else, in mainline order of the power levels just resolved.
  const picked = new Set(powerOrdered);
  const rest = [...full].filter((id) => !picked.has(id));
  const restOrdered = mainlineOrder(graph, rest, partial.get(stateKeyOf(EventTypes.powerLevels, "")));
  // 4. Replayed over the partially resolved state.
  const resolved = iterativeAuthChecks(graph, version, restOrdered, partial, checks);
  // 5. The unconflicted state wins over anything replayed.
  for (const [key, id] of unconflicted) resolved.set(key, id);
  return resolved;
}

/** Convenience for callers holding events: a state map of `events` (later ones replace earlier). */
export function stateIdsOf(events: Iterable<StateResEvent>): Map<string, string> {
  const map = new Map<string, string>();
  for (const { eventId, pdu } of events) {
    if (typeof pdu.state_key === "string") map.set(stateKeyOf(pdu.type, pdu.state_key), eventId);
  }
  return map;
}
