/**
 * The Client-Server API's event format ("ClientEvent") for a PDU.
 */
import type { RoomVersion } from "./room_versions.js";
import { EventTypes, roomIdOfEvent, type Pdu } from "./types.js";

export interface ClientEvent {
  content: Record<string, unknown>;
  event_id: string;
  origin_server_ts: number;
  room_id: string;
  sender: string;
  state_key?: string;
  type: string;
  unsigned?: Record<string, unknown>;
  /** `m.room.redaction` only, for clients that predate room version 11. */
  redacts?: string;
}

/**
 * The ClientEvent form of a PDU: the federation-only keys (`auth_events`, `prev_events`,
 * `depth`, `hashes`, `signatures`) are dropped and `unsigned` is taken from the argument.
 *
 * For `m.room.redaction`, as the room version 11 page asks, `redacts` is given both at the
 * top level and in `content` whatever the room version.
 */
export function toClientEvent(
  pdu: Pdu,
  eventId: string,
  version: RoomVersion,
  unsigned?: Record<string, unknown>,
): ClientEvent {
  const event: ClientEvent = {
    content: pdu.content,
    event_id: eventId,
    origin_server_ts: pdu.origin_server_ts,
    // A room version 12 create event has no room_id over federation; clients get it back.
    room_id: roomIdOfEvent(pdu, eventId),
    sender: pdu.sender,
    type: pdu.type,
  };
  if (typeof pdu.state_key === "string") event.state_key = pdu.state_key;
  if (unsigned !== undefined) event.unsigned = unsigned;
  if (pdu.type === EventTypes.redaction) {
    const redacts = version.redactsInContent ? pdu.content.redacts : pdu.redacts;
    if (typeof redacts === "string") {
      event.redacts = redacts;
      if (pdu.content.redacts === undefined) event.content = { ...pdu.content, redacts };
    }
  }
  return event;
}

/** The event ID a redaction targets, wherever the room version keeps it. */
export function redactsOf(pdu: Pdu, version: RoomVersion): string | undefined {
  const redacts = version.redactsInContent ? pdu.content.redacts : pdu.redacts;
  return typeof redacts === "string" ? redacts : undefined;
}
