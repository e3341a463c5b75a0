/**
 * Building a new, hashed and signed PDU for a room version.
 */
import type { KeyObject } from "node:crypto";
import { CANONICAL_JSON_MAX_INT } from "./canonical_json.js";
import { contentHash, eventIdFor, roomIdForCreateEvent } from "./hashes.js";
import { checkEventLimits } from "./limits.js";
import type { RoomVersion } from "./room_versions.js";
import { hashSignAndIdentify } from "./signing.js";
import { EventTypes, isRecord, type Pdu } from "./types.js";

export interface BuildEventInput {
  version: RoomVersion;
  /**
   * The room. For a room version 12 `m.room.create` the PDU carries no `room_id` (the room
   * ID is derived from the event): pass `""`, or the expected room ID to have it checked.
   */
  roomId: string;
  sender: string;
  type: string;
  /** Set for a state event (`""` is a valid state key); leave out for a message event. */
  stateKey?: string;
  content: Record<string, unknown>;
  prevEvents: string[];
  authEvents: string[];
  depth: number;
  originServerTs: number;
  /**
   * For `m.room.redaction`: the event being redacted. Placed at the top level in room
   * version 10 and in `content.redacts` in version 11.
   */
  redacts?: string;
  /** MSC4354: marks the event sticky for this long; carried as the top-level `msc4354_sticky`. */
  sticky?: { duration_ms: number };
}

export interface EventSigner {
  serverName: string;
  keyId: string;
  privateKey: KeyObject;
}

/** The input cannot make a valid event (a programming error in the caller, not an auth failure). */
export class BuildEventError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BuildEventError";
  }
}

/**
 * Builds the PDU, fills `hashes.sha256`, signs it with `signer` and computes its event ID.
 *
 * - In room version 10, an `m.room.create` without `content.creator` gets `creator: sender`
 *   (the auth rules require it); version 11 leaves create content alone.
 * - In room version 12 an `m.room.create` has no `room_id`; `input.roomId`, unless `""`,
 *   must be the room ID it gives.
 * - `content` is deep-copied, so the caller may reuse its object.
 *
 * Throws `CanonicalJsonError` for content that is not canonical JSON (floats, ...),
 * `EventLimitError` for an event over the size limits, and {@link BuildEventError} for
 * malformed input. It does not check the authorisation rules: call `checkEventAuth`.
 */
export function buildEvent(input: BuildEventInput, signer: EventSigner): { eventId: string; pdu: Pdu } {
  const { version } = input;
  const { pdu, eventId } = hashSignAndIdentify(assemblePdu(input), version, signer);
  checkEventLimits(pdu, version);
  return { eventId, pdu };
}

/**
 * The event ID that {@link buildEvent} would give this input, without signing it (signatures
 * are not part of the reference hash). For a room version 12 `m.room.create`, `!` plus the
 * rest of it is the room ID, which a server needs before it builds the room's other events.
 */
export function previewEventId(input: BuildEventInput): string {
  const nameless = input.version.roomIdIsCreateEventId && input.type === EventTypes.create;
  const pdu = assemblePdu(nameless ? { ...input, roomId: "" } : input);
  return eventIdFor({ ...pdu, hashes: { sha256: contentHash(pdu) } }, input.version);
}

/** The unsigned, unhashed PDU for `input`, after the checks {@link buildEvent} documents. */
function assemblePdu(input: BuildEventInput): Pdu {
  const { version } = input;
  if (!isRecord(input.content)) throw new BuildEventError("content must be a JSON object");
  if (!Number.isInteger(input.depth) || input.depth < 0 || input.depth > CANONICAL_JSON_MAX_INT) {
    throw new BuildEventError(`depth must be an integer in [0, 2**53-1], got ${input.depth}`);
  }
  if (!Number.isInteger(input.originServerTs)) throw new BuildEventError("originServerTs must be an integer");
  for (const id of [...input.prevEvents, ...input.authEvents]) {
    if (typeof id !== "string" || !id.startsWith("$")) throw new BuildEventError(`not an event ID: ${String(id)}`);
  }

  const content = structuredClone(input.content);
  if (input.type === EventTypes.create && !version.implicitRoomCreator && content.creator === undefined) {
    content.creator = input.sender;
  }

  const pdu: Pdu = {
    auth_events: [...input.authEvents],
    content,
    depth: input.depth,
    hashes: { sha256: "" },
    origin_server_ts: input.originServerTs,
    prev_events: [...input.prevEvents],
    room_id: input.roomId,
    sender: input.sender,
    signatures: {},
    type: input.type,
  };
  if (input.stateKey !== undefined) pdu.state_key = input.stateKey;
  if (input.sticky !== undefined) pdu.msc4354_sticky = { duration_ms: input.sticky.duration_ms };
  if (input.redacts !== undefined) {
    if (version.redactsInContent) {
      if (content.redacts !== undefined && content.redacts !== input.redacts) {
        throw new BuildEventError("redacts and content.redacts disagree");
      }
      content.redacts = input.redacts;
    } else {
      pdu.redacts = input.redacts;
    }
  }

  if (version.roomIdIsCreateEventId && input.type === EventTypes.create) {
    // MSC4291: the create event names no room; the room is named after it.
    delete (pdu as Partial<Pdu>).room_id;
    if (input.roomId !== "") {
      const derived = roomIdForCreateEvent({ ...pdu, hashes: { sha256: contentHash(pdu) } }, version);
      if (derived !== input.roomId) {
        throw new BuildEventError(`the create event gives room ID ${derived}, not ${input.roomId}`);
      }
    }
  }
  return pdu;
}
