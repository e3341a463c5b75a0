/** User and device identifiers, as the spec's grammar allows them. */
import { randomBytes, randomInt } from "node:crypto";
import { Errors } from "../errors.js";

const LOCALPART = /^[a-z0-9._=\-/+]+$/;
const MAX_USER_ID_LENGTH = 255;

export function userIdFor(localpart: string, serverName: string): string {
  return `@${localpart}:${serverName}`;
}

/** Checks a localpart a user asked for; Synapse's rules, with its messages' meaning. */
export function validateLocalpart(localpart: string, serverName: string): void {
  if (localpart.length === 0) throw Errors.invalidUsername("User ID cannot be empty");
  if (!LOCALPART.test(localpart)) {
    throw Errors.invalidUsername("User ID can only contain characters a-z, 0-9, or '=_-./+'");
  }
  if (localpart.startsWith("_")) throw Errors.invalidUsername("User ID may not begin with _");
  if (/^[0-9]+$/.test(localpart)) throw Errors.invalidUsername("Numeric user IDs are reserved for guest users.");
  if (userIdFor(localpart, serverName).length > MAX_USER_ID_LENGTH) {
    throw Errors.invalidUsername(`User ID may not be longer than ${MAX_USER_ID_LENGTH} characters`);
  }
}

/** Accepts a localpart or a full user ID on this server; returns the localpart, or undefined. */
export function localpartOf(userOrLocalpart: string, serverName: string): string | undefined {
  if (!userOrLocalpart.startsWith("@")) return userOrLocalpart.toLowerCase();
  const colon = userOrLocalpart.indexOf(":");
  if (colon < 0 || userOrLocalpart.slice(colon + 1) !== serverName) return undefined;
  return userOrLocalpart.slice(1, colon).toLowerCase();
}

export function generatedLocalpart(): string {
  // Numeric, like Synapse's generated and guest IDs, which users cannot pick.
  return String(randomInt(1_000_000_000, 9_999_999_999));
}

export function newDeviceId(): string {
  const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  return [...randomBytes(10)].map((b) => letters[b % 26]).join("");
}
