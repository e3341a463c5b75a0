/**
 * The persistent data unit (PDU) for room versions 10 and 11.
 *
 * Per the spec's PDU schemas (data/api/server-server/definitions/pdu_v6.yaml, used by
 * room version 10, and pdu_v11.yaml in matrix-org/matrix-spec):
 * - the event ID is not part of the PDU: it is the reference hash (see `eventIdFor`);
 * - `origin` is no longer part of the schema, so Switchboard never sets it (the functions
 *   here still hash, redact and sign PDUs from elsewhere that carry it);
 * - `redacts` is a top-level key in room version 10 and moves into `content` in 11.
 */
export interface Pdu {
  auth_events: string[];
  content: Record<string, unknown>;
  depth: number;
  hashes: { sha256: string };
  origin_server_ts: number;
  prev_events: string[];
  /**
   * Absent on the `m.room.create` event of a room version 12 room (event format 4), whose
   * room ID is derived from its event ID (see `roomIdForCreateEvent`). Typed as always
   * present because every other event has it; code that may see such a create event
   * must not rely on it (`roomIdOfEvent` gives the room ID of any event).
   */
  room_id: string;
  sender: string;
  signatures: Record<string, Record<string, string>>;
  /** Present (possibly `""`) on state events only. */
  state_key?: string;
  type: string;
  unsigned?: Record<string, unknown>;
  /** Room version 10 `m.room.redaction` only; in v11 it is `content.redacts`. */
  redacts?: string;
  /** MSC4354 sticky events: how long the event stays sticky after origin_server_ts. */
  msc4354_sticky?: { duration_ms: number };
}

/**
 * The PDU of an event as stored: storage keeps each event's PDU as its JSON text, which
 * Switchboard wrote itself (or checked on the way in), so it is parsed back without checks.
 */
export function pduOf(stored: { json: string }): Pdu {
  return JSON.parse(stored.json) as Pdu;
}

/**
 * The room state relevant to authorising an event, as it was BEFORE that event:
 * the current state event for `(type, stateKey)`, or `undefined` when there is none.
 */
export type StateLookup = (type: string, stateKey: string) => Pdu | undefined;

/** A `(type, state_key)` pair. */
export type StateKeyPair = [type: string, stateKey: string];

export const EventTypes = {
  create: "m.room.create",
  member: "m.room.member",
  joinRules: "m.room.join_rules",
  powerLevels: "m.room.power_levels",
  thirdPartyInvite: "m.room.third_party_invite",
  redaction: "m.room.redaction",
  historyVisibility: "m.room.history_visibility",
} as const;

export type Membership = "invite" | "join" | "leave" | "ban" | "knock";

/** True when the event is a state event (it has a `state_key`, even an empty one). */
export function isStateEvent(pdu: Pick<Pdu, "state_key">): boolean {
  return typeof pdu.state_key === "string";
}

/** `content.membership` of an `m.room.member` event, or `undefined`. */
export function membershipOf(pdu: Pdu | undefined): string | undefined {
  if (!pdu || pdu.type !== EventTypes.member) return undefined;
  const m = pdu.content.membership;
  return typeof m === "string" ? m : undefined;
}

/**
 * The room an event belongs to: its `room_id`, or for a room version 12 create event (which
 * has none) the room ID derived from its event ID.
 */
export function roomIdOfEvent(pdu: Pdu, eventId: string): string {
  return typeof pdu.room_id === "string" ? pdu.room_id : `!${eventId.slice(1)}`;
}

/** A plain-object test that narrows `unknown` to a string-keyed record. */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
