/** Turns stored PDUs into the client format of the Client-Server API. */
import type { ClientEvent as BaseClientEvent, Pdu } from "../../events/index.js";
import type { StoredEvent } from "../../storage/rooms.js";

/** Must match the delayed-event service's pseudo-device; kept here so formatting needs no service import. */
export const DELAYED_EVENT_TXN_DEVICE = "org.matrix.msc4140";

/** The events module's client format, plus MSC4354's marker, which clients read from the event itself. */
export interface ClientEvent extends BaseClientEvent {
  /** MSC4354 (unstable name of `sticky`): the event is sticky for this long after it was sent. */
  msc4354_sticky?: { duration_ms: number };
}

/** MSC4354 caps every sticky duration at an hour. */
const MAX_STICKY_MS = 3_600_000;

export interface Viewer {
  userId: string;
  deviceId?: string;
}

/**
 * `transaction_id` goes only to the device that sent the event, so that it
 * can match its local echo; `age` is computed at serving time.
 */
export function toClientEvent(stored: StoredEvent, now: number, viewer?: Viewer): ClientEvent {
  const pdu = JSON.parse(stored.json) as Pdu;
  const out: ClientEvent = {
    content: pdu.content,
    event_id: stored.eventId,
    origin_server_ts: pdu.origin_server_ts,
    // A room version 12 create event has no room_id in the PDU; clients get it back.
    room_id: pdu.room_id ?? stored.roomId,
    sender: pdu.sender,
    type: pdu.type,
  };
  if (pdu.state_key !== undefined) out.state_key = pdu.state_key;
  // v11 moved `redacts` into content; clients of older versions still read it at the top.
  const redacts = pdu.redacts ?? (pdu.type === "m.room.redaction" ? pdu.content.redacts : undefined);
  if (typeof redacts === "string") out.redacts = redacts;
  const unsigned: Record<string, unknown> = { age: Math.max(0, now - pdu.origin_server_ts) };
  // Redaction strips `msc4354_sticky` from the stored PDU, and with it the stickiness.
  const sticky = pdu.msc4354_sticky;
  if (sticky !== undefined && typeof sticky.duration_ms === "number") {
    out.msc4354_sticky = { duration_ms: sticky.duration_ms };
    // The time left, which clients take as authoritative; absent once the event is no longer sticky.
    const left = pdu.origin_server_ts + Math.min(sticky.duration_ms, MAX_STICKY_MS) - now;
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
  out.unsigned = unsigned;
  return out;
}

/** The stripped state an invitee sees before joining. */
export function toStrippedState(stored: StoredEvent): { content: Record<string, unknown>; sender: string; state_key: string; type: string } {
  const pdu = JSON.parse(stored.json) as Pdu;
  return { content: pdu.content, sender: pdu.sender, state_key: pdu.state_key ?? "", type: pdu.type };
}
