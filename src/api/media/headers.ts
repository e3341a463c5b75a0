/**
 * The headers media is served with. Users upload anything, and browsers open what they are
 * given, so every response is sandboxed (no script, no plugins), only the spec's list of types
 * is shown inline (never SVG, which can carry script), and nothing is sniffed into another type.
 */
import type { FastifyReply } from "fastify";

/** Types a browser may show in place (the spec's allowlist); everything else is downloaded. */
const INLINE_TYPES = new Set([
  "text/css",
  "text/plain",
  "text/csv",
  "application/json",
  "application/ld+json",
  "image/jpeg",
  "image/gif",
  "image/png",
  "image/apng",
  "image/webp",
  "image/avif",
  "video/mp4",
  "video/webm",
  "video/ogg",
  "video/quicktime",
  "audio/mp4",
  "audio/webm",
  "audio/aac",
  "audio/mpeg",
  "audio/ogg",
  "audio/wave",
  "audio/wav",
  "audio/x-wav",
  "audio/x-pn-wav",
  "audio/flac",
  "audio/x-flac",
]);

/** Text types that get `charset=UTF-8` when the uploader named no charset, as Synapse does. */
const TEXT_TYPES = new Set([
  "text/css",
  "text/csv",
  "text/html",
  "text/calendar",
  "text/plain",
  "text/javascript",
  "application/json",
  "application/ld+json",
  "application/rtf",
  "image/svg+xml",
  "text/xml",
]);

const CSP =
  "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

function baseType(contentType: string): string {
  return contentType.split(";")[0]!.trim().toLowerCase();
}

/** The stored type, with a charset added to text that has none. */
export function servedType(contentType: string): string {
  if (TEXT_TYPES.has(baseType(contentType)) && !/;\s*charset=/i.test(contentType)) return `${contentType}; charset=UTF-8`;
  return contentType;
}

/** RFC 6266 `Content-Disposition`: a plain token where the name allows one, else RFC 5987 UTF-8. */
export function contentDisposition(contentType: string, filename: string | null): string {
  const kind = INLINE_TYPES.has(baseType(contentType)) ? "inline" : "attachment";
  if (!filename) return kind;
  if (/^[!#$%&'*+\-.0-9A-Z^_`a-z|~]+$/.test(filename)) return `${kind}; filename=${filename}`;
  return `${kind}; filename*=utf-8''${encodeRfc5987(filename)}`;
}

function encodeRfc5987(s: string): string {
  // encodeURIComponent leaves a few characters that RFC 5987's attr-char does not allow.
  return encodeURIComponent(s).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** Headers every media response carries, including errors (a browser may open those too). */
export function setSafetyHeaders(reply: FastifyReply): void {
  reply.headers({
    "content-security-policy": CSP,
    "x-content-security-policy": "sandbox;",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "cross-origin",
    "x-content-type-options": "nosniff",
    "x-robots-tag": "noindex, nofollow, noarchive, noimageindex",
  });
}

/** Media never changes under its ID, so caches may keep it; shared caches must ask first. */
export function setContentHeaders(reply: FastifyReply, contentType: string, size: number, disposition: string): void {
  reply.headers({
    "content-type": servedType(contentType),
    "content-length": String(size),
    "content-disposition": disposition,
    "cache-control": "public,max-age=86400,s-maxage=0,proxy-revalidate",
  });
}
