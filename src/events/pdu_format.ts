/**
 * Step 1 of the Server-Server spec's "Checks performed on receipt of a PDU": is it a valid
 * event of its room version at all? Pure functions over untrusted JSON; nothing here throws.
 *
 * What "valid" means, from the PDU schemas of room versions 10 to 12 (event format 3, and 4
 * where the room ID is derived from the create event), the spec's "Size limits", and what
 * Synapse enforces so that both servers drop the same events:
 * - every required key is present with its JSON type, `state_key` (if any) a string;
 * - `depth` and `origin_server_ts` are integers in [0, 2**53-1];
 * - at most 20 `prev_events` and 10 `auth_events`, each an event ID of the format;
 * - the whole event, as canonical JSON, at most 65,536 bytes; with strict canonical JSON
 *   (room version 6+), no floats and no integers out of range anywhere.
 * Field lengths follow Synapse's two-level rule for the versions it calls lenient (up to 11):
 * more than 255 code points drops the event, more than 255 bytes (but not code points) keeps
 * it as a rejected event, since older servers accepted those and dropping them would split the
 * room. From room version 12 on, bytes are strict.
 */
import { canonicalJson, CANONICAL_JSON_MAX_INT } from "./canonical_json.js";
import { isValidServerName, isValidUserId, serverNameOf, utf8Length } from "./ids.js";
import { limitedFields, MAX_PDU_BYTES } from "./limits.js";
import type { RoomVersion } from "./room_versions.js";
import { EventTypes, isRecord, type Pdu } from "./types.js";

export const MAX_PREV_EVENTS = 20;
export const MAX_AUTH_EVENTS = 10;

/** Event IDs of room versions 4+: `$` and the URL-safe unpadded Base64 of a SHA-256. */
const EVENT_ID = /^\$[A-Za-z0-9_-]{43}$/;
/** Room IDs of event format 4 (room version 12): `!` and the create event's reference hash. */
const HASH_ROOM_ID = /^![A-Za-z0-9_-]{43}$/;
/** What `unsigned` may carry from another server (the rest is that server's business, not ours). */
const KEPT_UNSIGNED = ["age", "invite_room_state", "knock_room_state"];

export type PduFormatResult =
  | {
      ok: true;
      /** The event with `unsigned` cut down to what another server may tell us. */
      pdu: Pdu;
      /** Set when the event is well-formed but must be stored as rejected (a lenient size limit). */
      rejectedReason?: string;
    }
  | { ok: false; reason: string };

const fail = (reason: string): { ok: false; reason: string } => ({ ok: false, reason });

function isInt(v: unknown, min: number, max: number): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= min && v <= max;
}

function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** A room ID of the version's format; `undefined` when it is one. */
function roomIdProblem(roomId: string, version: RoomVersion): string | undefined {
  if (version.eventFormat === 4) return HASH_ROOM_ID.test(roomId) ? undefined : "room_id is not a room ID of this room version";
  const server = serverNameOf(roomId);
  if (!roomId.startsWith("!") || roomId.indexOf(":") < 2 || server === undefined || !isValidServerName(server)) {
    return "room_id is not a room ID";
  }
  return undefined;
}

function eventIdList(value: unknown, key: string, max: number): string | undefined {
  if (!Array.isArray(value)) return `${key} is not an array`;
  if (value.length > max) return `${key} has ${value.length} entries; at most ${max} are allowed`;
  for (const id of value) if (typeof id !== "string" || !EVENT_ID.test(id)) return `${key} holds something that is not an event ID`;
  return undefined;
}

function signaturesProblem(value: unknown): string | undefined {
  if (!isRecord(value)) return "signatures is not an object";
  for (const byServer of Object.values(value)) {
    if (!isRecord(byServer)) return "signatures holds a server entry that is not an object";
    for (const sig of Object.values(byServer)) if (typeof sig !== "string") return "signatures holds a signature that is not a string";
  }
  return undefined;
}

/**
 * Field length limits. Returns the reason to drop the event, or to store it rejected
 * (`soft: true`), or undefined.
 */
function lengthProblem(pdu: Pdu, version: RoomVersion): { reason: string; soft: boolean } | undefined {
  const strictBytes = version.eventFormat === 4;
  const fields = limitedFields(pdu, version);
  for (const [field, value, limit] of fields) {
    if (value === undefined) continue;
    if (codePoints(value) > limit) return { reason: `${field} is longer than ${limit} characters`, soft: false };
  }
  for (const [field, value, limit] of fields) {
    if (value === undefined) continue;
    if (utf8Length(value) > limit) return { reason: `${field} is longer than ${limit} bytes`, soft: !strictBytes };
  }
  return undefined;
}

/** Checks the event's format for `version`. Never throws, whatever `raw` is. */
export function checkPduFormat(raw: unknown, version: RoomVersion): PduFormatResult {
  try {
    return checkUnsafe(raw, version);
  } catch (err) {
    // Deep nesting overflowing the stack in canonical JSON, or anything else unforeseen.
    return fail(`not a valid event: ${(err as Error).message}`);
  }
}

function checkUnsafe(raw: unknown, version: RoomVersion): PduFormatResult {
  const proto: unknown = isRecord(raw) ? Object.getPrototypeOf(raw) : undefined;
  if (!isRecord(raw) || (proto !== Object.prototype && proto !== null)) return fail("the PDU is not a JSON object");
  const e = raw;
  if (typeof e.type !== "string") return fail("type is missing or not a string");
  if (typeof e.sender !== "string" || !isValidUserId(e.sender)) return fail("sender is missing or not a user ID");
  if (e.state_key !== undefined && typeof e.state_key !== "string") return fail("state_key is not a string");
  const nameless = version.eventFormat === 4 && e.type === EventTypes.create && e.state_key === "";
  if (nameless) {
    // MSC4291: the create event is what names the room, so it carries no room_id.
    if (e.room_id !== undefined) return fail("a create event of this room version has no room_id");
  } else {
    if (typeof e.room_id !== "string") return fail("room_id is missing or not a string");
    const problem = roomIdProblem(e.room_id, version);
    if (problem) return fail(problem);
  }
  if (!isRecord(e.content)) return fail("content is missing or not an object");
  if (!isInt(e.depth, 0, CANONICAL_JSON_MAX_INT)) return fail("depth is missing or not an integer in [0, 2**53-1]");
  if (!isInt(e.origin_server_ts, 0, CANONICAL_JSON_MAX_INT)) return fail("origin_server_ts is missing or not an integer in [0, 2**53-1]");
  const listProblem = eventIdList(e.prev_events, "prev_events", MAX_PREV_EVENTS) ?? eventIdList(e.auth_events, "auth_events", MAX_AUTH_EVENTS);
  if (listProblem) return fail(listProblem);
  if (!isRecord(e.hashes) || typeof e.hashes.sha256 !== "string") return fail("hashes.sha256 is missing or not a string");
  const sigProblem = signaturesProblem(e.signatures);
  if (sigProblem) return fail(sigProblem);
  if (e.redacts !== undefined && !version.redactsInContent && (typeof e.redacts !== "string" || !EVENT_ID.test(e.redacts))) {
    return fail("redacts is not an event ID");
  }

  const pdu = { ...e } as Record<string, unknown>;
  delete pdu.unsigned;
  if (isRecord(e.unsigned)) {
    const kept: Record<string, unknown> = {};
    for (const key of KEPT_UNSIGNED) if (e.unsigned[key] !== undefined) kept[key] = e.unsigned[key];
    if (Object.keys(kept).length) pdu.unsigned = kept;
  }

  let size: number;
  try {
    size = utf8Length(canonicalJson(pdu));
  } catch (err) {
    // Floats, integers out of range, lone surrogates: not canonical JSON.
    if (version.strictCanonicalJson) return fail(`not canonical JSON: ${(err as Error).message}`);
    size = utf8Length(JSON.stringify(pdu));
  }
  if (size > MAX_PDU_BYTES) return fail(`the event is ${size} bytes as canonical JSON; the limit is ${MAX_PDU_BYTES}`);
  const length = lengthProblem(pdu as unknown as Pdu, version);
  if (length && !length.soft) return fail(length.reason);
  return length ? { ok: true, pdu: pdu as unknown as Pdu, rejectedReason: length.reason } : { ok: true, pdu: pdu as unknown as Pdu };
}

/**
 * The servers whose signatures the event must carry (spec: "Validating hashes and signatures
 * on received events"): the sender's, except on an invite made from a third-party invite
 * (the sender there matches the third-party invite, and another server may have sent it);
 * and for a restricted join, the server of `join_authorised_via_users_server`. Returns a
 * reason instead when the authorising user is not a user ID.
 */
export function requiredSignatures(pdu: Pdu, version: RoomVersion): string[] | { reason: string } {
  const servers = new Set<string>();
  const content = pdu.content;
  const membership = pdu.type === EventTypes.member ? content.membership : undefined;
  const fromThirdPartyInvite = membership === "invite" && isRecord(content.third_party_invite);
  if (!fromThirdPartyInvite) servers.add(serverNameOf(pdu.sender)!);
  if (membership === "join" && version.restrictedJoinRule && content.join_authorised_via_users_server !== undefined) {
    const authoriser = content.join_authorised_via_users_server;
    if (typeof authoriser !== "string" || !isValidUserId(authoriser)) return { reason: "join_authorised_via_users_server is not a user ID" };
    servers.add(serverNameOf(authoriser)!);
  }
  return [...servers];
}
