/**
 * Event size limits: the Client-Server spec's "Size limits" section (content/
 * client-server-api/_index.md in matrix-org/matrix-spec), with MSC3757's larger
 * state-key limit in its room versions; and MSC4354's cap on how long an event stays sticky.
 */
import { canonicalJson } from "./canonical_json.js";
import { utf8Length } from "./ids.js";
import type { RoomVersion } from "./room_versions.js";
import type { Pdu } from "./types.js";

export const MAX_PDU_BYTES = 65536;
export const MAX_ID_BYTES = 255;
export const MAX_TYPE_BYTES = 255;
export const MAX_STATE_KEY_BYTES = 255;
/** MSC3757: a 255-byte user ID, then `_` and a 255-byte suffix. */
export const MSC3757_MAX_STATE_KEY_BYTES = 511;
/** MSC4354: no event stays sticky longer than an hour, whatever duration it asks for. */
export const MSC4354_MAX_STICKY_MS = 3_600_000;

/**
 * An event breaks a size limit. `field` says which: `"event"` for the whole PDU (the
 * Client-Server API answers 413 `M_TOO_LARGE`), otherwise the key that is too long.
 */
export class EventLimitError extends Error {
  constructor(
    readonly field: "event" | "sender" | "room_id" | "type" | "state_key",
    readonly limit: number,
    readonly actual: number,
  ) {
    super(
      field === "event"
        ? `event is ${actual} bytes as canonical JSON; the limit is ${limit}`
        : `${field} is ${actual} bytes; the limit is ${limit}`,
    );
    this.name = "EventLimitError";
  }
}

/** The state-key byte limit of a room version. */
export function maxStateKeyBytes(version: RoomVersion): number {
  return version.msc3757OwnedStateKeys ? MSC3757_MAX_STATE_KEY_BYTES : MAX_STATE_KEY_BYTES;
}

/**
 * Throws {@link EventLimitError} if the PDU (as given, signatures included) breaks a
 * size limit. Call it on the finished, signed event.
 */
export function checkEventLimits(pdu: Pdu, version: RoomVersion): void {
  for (const [field, value, limit] of limitedFields(pdu, version)) {
    if (value === undefined) continue;
    const size = utf8Length(value);
    if (size > limit) throw new EventLimitError(field, limit, size);
  }
  const total = utf8Length(canonicalJson(pdu));
  if (total > MAX_PDU_BYTES) throw new EventLimitError("event", MAX_PDU_BYTES, total);
}

/** The PDU fields with a length limit: each with its value (undefined when absent) and its limit. */
export function limitedFields(pdu: Pdu, version: RoomVersion): [EventLimitError["field"], string | undefined, number][] {
  return [
    ["sender", pdu.sender, MAX_ID_BYTES],
    ["room_id", pdu.room_id, MAX_ID_BYTES],
    ["type", pdu.type, MAX_TYPE_BYTES],
    ["state_key", pdu.state_key, maxStateKeyBytes(version)],
  ];
}
