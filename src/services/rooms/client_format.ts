/** Turns stored PDUs into the client format of the Client-Server API. */
import {
  MSC4354_MAX_STICKY_MS,
  pduOf,
  toClientEvent as pduToClientEvent,
  type ClientEvent as BaseClientEvent,
} from "../../events/index.js";
import type { StoredEvent } from "../../storage/rooms.js";

/** Must match the delayed-event service's pseudo-device; kept here so formatting needs no service import. */
export const DELAYED_EVENT_TXN_DEVICE = "org.matrix.msc4140";

/** The events module's client format, plus MSC4354's marker, which clients read from the event itself. */
export interface ClientEvent extends BaseClientEvent {
  /** MSC4354 (unstable name of `sticky`): the event is sticky for this long after it was sent. */
  msc4354_sticky?: { duration_ms: number };
}

export interface Viewer {
  userId: string;
  deviceId?: string;
}

/**
 * `transaction_id` goes only to the device that sent the event, so that it
 * can match its local echo; `age` is computed at serving time.
 */
export function toClientEvent(stored: StoredEvent, now: number, viewer?: Viewer): ClientEvent {
  const pdu = pduOf(stored);
  const unsigned: Record<string, unknown> = { age: Math.max(0, now - pdu.origin_server_ts) };
  // Redaction strips `msc4354_sticky` from the stored PDU, and with it the stickiness.
  const sticky = pdu.msc4354_sticky;
  const isSticky = sticky !== undefined && typeof sticky.duration_ms === "number";
  if (isSticky) {
    // The time left, which clients take as authoritative; absent once the event is no longer sticky.
    const left = pdu.origin_server_ts + Math.min(sticky.duration_ms, MSC4354_MAX_STICKY_MS) - now;
    if (left > 0) unsigned.msc4354_sticky_duration_ttl_ms = left;
  }
  const stored_unsigned = pdu.unsigned ?? {};
  for (const key of ["prev_content", "replaces_state", "prev_sender", "redacted_because"]) {
    if (stored_unsigned[key] !== undefined) unsigned[key] = stored_unsigned[key];
  }
  if (stored.redactedBy) unsigned.redacted_because ??= { event_id: stored.redactedBy };
  if (viewer && stored.txn && viewer.userId === pdu.sender) {
    // A fired delayed event records its delay ID as the transaction of a pseudo-device; MSC4140 as
    // accepted names it `delay_id`, its drafts `org.matrix.msc4140.delay_id`.
    if (stored.txn.deviceId === DELAYED_EVENT_TXN_DEVICE) {
      unsigned.delay_id = stored.txn.txnId;
      unsigned["org.matrix.msc4140.delay_id"] = stored.txn.txnId;
    } else if (viewer.deviceId === stored.txn.deviceId) unsigned.transaction_id = stored.txn.txnId;
  }
  // The room version is not at hand: the events module finds a redaction's target in either place.
  const out: ClientEvent = pduToClientEvent(pdu, stored.eventId, undefined, unsigned);
  if (isSticky) out.msc4354_sticky = { duration_ms: sticky.duration_ms };
  return out;
}

/** The stripped state an invitee sees before joining. */
export function toStrippedState(stored: StoredEvent): { content: Record<string, unknown>; sender: string; state_key: string; type: string } {
  const pdu = pduOf(stored);
  return { content: pdu.content, sender: pdu.sender, state_key: pdu.state_key ?? "", type: pdu.type };
}
