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

function hashOf(parts: string[]): string {
  const json = canonicalJson(parts.map(wellFormed));
  return encodeBase64(createHash("sha256").update(json, "utf8").digest());
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
