/**
 * Content hashes and reference hashes (event IDs), per the server-server spec sections
 * "Calculating the content hash for an event" and "Calculating the reference hash for an
 * event", and the room version 4+ "Event IDs" fragment (content/rooms/fragments/
 * v4-event-ids.md in matrix-org/matrix-spec).
 */
import { createHash } from "node:crypto";
import { decodeBase64, encodeBase64, encodeBase64Url } from "./base64.js";
import { canonicalJsonBytes } from "./canonical_json.js";
import { redact } from "./redaction.js";
import type { RoomVersion } from "./room_versions.js";
import type { Pdu } from "./types.js";

function sha256(data: Uint8Array): Buffer {
  return createHash("sha256").update(data).digest();
}

/** The raw SHA-256 content hash: canonical JSON of the event without `unsigned`, `signatures`, `hashes`. */
export function contentHashBytes(pdu: Pdu): Buffer {
  const { unsigned: _u, signatures: _s, hashes: _h, ...rest } = pdu;
  return sha256(canonicalJsonBytes(rest));
}

/** The content hash as unpadded Base64: the value of `hashes.sha256`. */
export function contentHash(pdu: Pdu): string {
  return encodeBase64(contentHashBytes(pdu));
}

/** True when `pdu.hashes.sha256` matches its content. False for a missing or malformed hash. */
export function verifyContentHash(pdu: Pdu): boolean {
  const claimed = pdu.hashes?.sha256;
  if (typeof claimed !== "string") return false;
  let bytes: Buffer;
  try {
    bytes = decodeBase64(claimed);
  } catch {
    return false;
  }
  return bytes.equals(contentHashBytes(pdu));
}

/** The raw reference hash: SHA-256 of the redacted event without `signatures` and `unsigned`. */
export function referenceHashBytes(pdu: Pdu, version: RoomVersion): Buffer {
  const { signatures: _s, unsigned: _u, ...rest } = redact(pdu, version);
  return sha256(canonicalJsonBytes(rest));
}

/** The event ID: `$` + URL-safe unpadded Base64 of the reference hash. */
export function eventIdFor(pdu: Pdu, version: RoomVersion): string {
  return `$${encodeBase64Url(referenceHashBytes(pdu, version))}`;
}

/** The event ID from what its reference hash covers: the redacted event's canonical JSON, without `signatures` and `unsigned`. */
export function eventIdOfCovered(covered: Uint8Array): string {
  return `$${encodeBase64Url(sha256(covered))}`;
}

/**
 * Room version 12 (MSC4291): the room ID of a room whose create event is `create`, its
 * event ID with the sigil `!` instead of `$`.
 */
export function roomIdForCreateEvent(create: Pdu, version: RoomVersion): string {
  return `!${encodeBase64Url(referenceHashBytes(create, version))}`;
}
