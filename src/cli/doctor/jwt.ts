/** Reads a LiveKit JWT's claims (without checking the signature: only the SFU knows the secret). */
import { livekitRoomAlias } from "../../services/livekit/naming.js";
import { isObject } from "./context.js";

export interface JwtClaims {
  iss?: unknown;
  sub?: unknown;
  exp?: unknown;
  video?: Record<string, unknown>;
}

export function decodeJwt(jwt: string): JwtClaims | undefined {
  const parts = jwt.split(".");
  if (parts.length !== 3) return undefined;
  try {
    const payload = JSON.parse(Buffer.from(parts[1]!, "base64url").toString("utf8")) as unknown;
    return isObject(payload) ? (payload as JwtClaims) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What the client needs from its token: join (and publish, subscribe) in the room named
 * after the Matrix room and slot, for a while yet. Returns the problems and a summary.
 */
export function judgeClaims(claims: JwtClaims, roomId: string, slotId: string, nowMs: number): { problems: string[]; warnings: string[]; summary: string } {
  const problems: string[] = [];
  const warnings: string[] = [];
  const video = isObject(claims.video) ? claims.video : {};
  const alias = livekitRoomAlias(roomId, slotId);
  if (video.roomJoin !== true) problems.push("no roomJoin grant");
  if (video.room !== alias) problems.push(`room is ${JSON.stringify(video.room)}, not ${alias} (unpaddedBase64(sha256(canonicalJSON([room_id, slot_id])))), so this client would not meet the others`);
  if (video.canSubscribe === false) problems.push("canSubscribe is false: the client would hear and see nobody");
  if (video.canPublish === false) warnings.push("canPublish is false: fine for another server's users, wrong for this server's own");
  if (video.roomCreate === true) warnings.push("roomCreate is granted: clients should not be able to create rooms on the SFU");
  if (typeof claims.iss !== "string" || claims.iss === "") problems.push("no iss (API key)");
  if (typeof claims.sub !== "string" || claims.sub === "") problems.push("no sub (participant identity)");
  let expiry = "no expiry";
  if (typeof claims.exp === "number") {
    const minutes = Math.round((claims.exp * 1000 - nowMs) / 60_000);
    if (minutes <= 0) problems.push(`expired ${-minutes} min ago (is the issuer's clock right?)`);
    expiry = `expires in ${minutes} min`;
  } else {
    problems.push("no exp");
  }
  const grants = ["roomJoin", "canPublish", "canSubscribe"].filter((g) => video[g] === true || (g !== "roomJoin" && video[g] === undefined));
  const summary = `key ${String(claims.iss)}, room ${alias.slice(0, 10)}…, grants ${grants.join("/")}, ${expiry}`;
  return { problems, warnings, summary };
}
