/**
 * The "iterative auth checks" of state resolution v2: replay events in order over a state
 * map, keeping each one the room version's authorisation rules allow.
 */
import { authEventTypes, checkEventAuth, type AuthOptions } from "../auth_rules.js";
import type { RoomVersion } from "../room_versions.js";
import type { Pdu } from "../types.js";
import { stateKeyOf, type EventGraph } from "./graph.js";

export interface IterativeOptions {
  auth: AuthOptions;
  /** True for an event that was rejected: it is neither admitted nor used as an auth event. */
  isRejected: (eventId: string) => boolean;
}

/**
 * Applies `events` in order to a copy of `base` and returns it. For each event, the auth
 * state is its own `auth_events` (those not rejected), with every key of the version's
 * auth events selection replaced by the event from the state being built, where that
 * state has one ("if a key required for checking the authorisation rules is not present in
 * the state, the appropriate state event from the event's auth_events is used").
 *
 * An event that fails is ignored. Any exception from the rules counts as a failure, not
 * only `AuthError`: the events come from other servers, and one malformed event must not
 * make the whole resolution throw.
 */
export function iterativeAuthChecks(
  graph: EventGraph,
  version: RoomVersion,
  events: readonly string[],
  base: ReadonlyMap<string, string>,
  options: IterativeOptions,
): Map<string, string> {
  const state = new Map(base);
  for (const id of events) {
    const pdu = graph.get(id);
    if (!pdu || typeof pdu.state_key !== "string" || options.isRejected(id)) continue;

    const authState = graph.authEventsByKey(id, options.isRejected);
    for (const [type, stateKey] of authEventTypes(pdu.type, pdu.state_key, pdu.sender, pdu.content, version)) {
      const key = stateKeyOf(type, stateKey);
      const current = state.get(key);
      if (current === undefined || options.isRejected(current)) continue;
      const ev = graph.get(current);
      if (ev) authState.set(key, ev);
    }

    if (allowed(pdu, authState, version, options.auth)) state.set(stateKeyOf(pdu.type, pdu.state_key), id);
  }
  return state;
}

function allowed(pdu: Pdu, authState: ReadonlyMap<string, Pdu>, version: RoomVersion, auth: AuthOptions): boolean {
  try {
    checkEventAuth(pdu, (t, k) => authState.get(stateKeyOf(t, k)), version, auth);
    return true;
  } catch {
    return false;
  }
}
