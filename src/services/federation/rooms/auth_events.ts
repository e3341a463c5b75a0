/**
 * The spec's check of events from another server against their own auth events (the check an
 * outlier gets, before the state of the room is known), for backfill, a gap's state and a join's
 * state. Events are taken oldest first, so one that passes can be an auth event of a later one.
 */
import { AuthError, checkEventAuth, type Pdu, type RoomVersion } from "../../../events/index.js";

export interface AuthEventsCheck {
  version: RoomVersion;
  /** Auth events known to be accepted (stored here, say); those that pass are added as they pass. */
  available?: ReadonlyMap<string, Pdu>;
  /** Events known to be rejected: an event naming one of them is rejected too. */
  rejected?: ReadonlySet<string>;
  /** Room version 12 leaves the create event out of `auth_events`: the room's own stands in. */
  create?: Pdu;
  /** Whether `pdu` carries a signature of `server`, for the rules that ask (restricted joins). */
  verifyServerSignature?: (pdu: Pdu, server: string) => boolean;
}

export interface AuthEventsVerdict {
  /** The events that passed, oldest first, by ID. */
  passed: Map<string, Pdu>;
  /** Those that failed the rules, or named an auth event that is rejected. */
  rejected: Set<string>;
  /** The rest named an auth event nowhere to be had, and are in neither. */
}

export function checkAgainstAuthEvents(events: Iterable<{ eventId: string; pdu: Pdu }>, check: AuthEventsCheck): AuthEventsVerdict {
  const available = new Map(check.available);
  const rejected = new Set(check.rejected);
  const passed = new Map<string, Pdu>();
  const verifyServerSignature = check.verifyServerSignature ?? (() => true);
  for (const { eventId, pdu } of [...events].sort((a, b) => a.pdu.depth - b.pdu.depth)) {
    if (passed.has(eventId) || rejected.has(eventId)) continue;
    if (pdu.auth_events.some((id) => rejected.has(id))) {
      rejected.add(eventId);
      continue;
    }
    const auth = pdu.auth_events.map((id) => available.get(id));
    // A create event has no auth events to wait for: the rules judge it on its own.
    if (auth.some((a) => a === undefined) && pdu.type !== "m.room.create") continue;
    const known = auth.filter((a): a is Pdu => a !== undefined);
    const lookup = (type: string, key: string) =>
      known.find((a) => a.type === type && a.state_key === key) ?? (type === "m.room.create" && key === "" ? check.create : undefined);
    try {
      checkEventAuth(pdu, lookup, check.version, { verifyServerSignature });
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      rejected.add(eventId);
      continue;
    }
    passed.set(eventId, pdu);
    available.set(eventId, pdu);
  }
  return { passed, rejected };
}
