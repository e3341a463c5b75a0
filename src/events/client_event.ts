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
 * top level and in `content` whatever the room version, as Synapse does. With the room
 * version, the target is read where that version keeps it; without it (a stored event whose
 * room version is not at hand), from the top-level `redacts` first, then `content.redacts`:
 * a room version 11 redaction has no top-level `redacts` of its own.
 */
export function toClientEvent(
  pdu: Pdu,
  eventId: string,
  version?: RoomVersion,
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
    const redacts = version ? redactsOf(pdu, version) : redactsOfAnyVersion(pdu);
    if (redacts !== undefined) {
      event.redacts = redacts;
      // In a room version before 11, `content.redacts` is whatever the sender put there.
      if (pdu.content.redacts !== redacts) event.content = { ...pdu.content, redacts };
    }
  }
  return event;
}

function redactsOfAnyVersion(pdu: Pdu): string | undefined {
  if (typeof pdu.redacts === "string") return pdu.redacts;
  return typeof pdu.content.redacts === "string" ? pdu.content.redacts : undefined;
}

/** The event ID a redaction targets, wherever the room version keeps it. */
export function redactsOf(pdu: Pdu, version: RoomVersion): string | undefined {
  const redacts = version.redactsInContent ? pdu.content.redacts : pdu.redacts;
  return typeof redacts === "string" ? redacts : undefined;
}
