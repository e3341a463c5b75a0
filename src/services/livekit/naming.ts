/**
 * LiveKit room names and participant identities, derived from Matrix IDs.
 * Both are hashes so the SFU learns no room or user IDs (MSC4195 asks servers
 * to pseudonymise them), and both must equal what lk-jwt-service and
 * matrix-js-sdk compute, or clients would not find each other in the room.
 */
import { createHash } from "node:crypto";
import { canonicalJson } from "../../events/canonical_json.js";
import { encodeBase64 } from "../../events/base64.js";

/** The slot Element Call uses; the legacy `/sfu/get` request has no slot of its own. */
export const LEGACY_SLOT_ID = "m.call#ROOM";

/**
 * A lone surrogate cannot be written as canonical JSON. A JSON request may
 * still carry one (`"\ud800"`); Go decodes it to U+FFFD, so hash that too.
 */
function wellFormed(s: string): string {
  return s.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
}

/**
 * Recent hashes: every client of a call asks for the same room alias, and a client asks again with
 * the same identity, so `get_token` would otherwise hash the same IDs over and over. Bounded by
 * starting afresh when full, which keeps the calls in progress after a moment.
 */
const recent = new Map<string, string>();
const RECENT_MAX = 4096;
/** Longer inputs (IDs are short; a client may send long ones) are hashed each time, so the map stays small. */
const RECENT_KEY_MAX = 1024;

function hashOf(parts: string[]): string {
  // JSON keeps the parts apart whatever characters they hold.
  const key = JSON.stringify(parts);
  const known = recent.get(key);
  if (known !== undefined) return known;
  const json = canonicalJson(parts.map(wellFormed));
  const hash = encodeBase64(createHash("sha256").update(json, "utf8").digest());
  if (key.length > RECENT_KEY_MAX) return hash;
  if (recent.size >= RECENT_MAX) recent.clear();
  recent.set(key, hash);
  return hash;
}

/** unpaddedBase64(SHA-256(canonicalJSON([room_id, slot_id]))). */
export function livekitRoomAlias(roomId: string, slotId: string): string {
  return hashOf([roomId, slotId]);
}

/** unpaddedBase64(SHA-256(canonicalJSON([user_id, device_id, member_id]))). */
export function livekitIdentity(userId: string, deviceId: string, memberId: string): string {
  return hashOf([userId, deviceId, memberId]);
}

/** The identity `/sfu/get` uses: not hashed, as Element Call's legacy mode expects. */
export function legacyIdentity(userId: string, deviceId: string): string {
  return `${userId}:${deviceId}`;
}
