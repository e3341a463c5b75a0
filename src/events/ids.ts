/**
 * Identifier grammar from the spec appendix "Identifier Grammar"
 * (https://spec.matrix.org/latest/appendices/#identifier-grammar).
 */

/** Bytes in the UTF-8 encoding of `s`. */
export function utf8Length(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

/**
 * `server_name = hostname [ ":" port ]`, where hostname is an IPv4 address, a bracketed
 * IPv6 address or a DNS name of `[A-Za-z0-9.-]`, and port is 1 to 5 digits.
 */
export function isValidServerName(name: string): boolean {
  return /^(?:\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Za-z.-]{1,255})(?::[0-9]{1,5})?$/.test(name);
}

/**
 * A user ID that events may carry: `@localpart:server_name`, at most 255 bytes.
 *
 * The localpart follows the spec's "historical user IDs" rule, which servers must still
 * accept in events: any code points except `:` and NUL. (It may not be empty here.)
 * Use {@link isCompliantUserId} when minting new IDs.
 */
export function isValidUserId(id: string): boolean {
  if (!id.startsWith("@") || utf8Length(id) > 255) return false;
  const colon = id.indexOf(":");
  if (colon < 2) return false;
  if (id.slice(1, colon).includes("\0")) return false;
  return isValidServerName(id.slice(colon + 1));
}

/** A user ID with a localpart of the current grammar: `[a-z0-9._=/+-]+`. */
export function isCompliantUserId(id: string): boolean {
  const colon = id.indexOf(":");
  return isValidUserId(id) && /^[a-z0-9._=/+-]+$/.test(id.slice(1, colon));
}

/**
 * The server name of a `sigil localpart:domain` identifier (user ID, room ID with a
 * domain, room alias): everything after the first `:`. `undefined` when there is no `:`.
 */
export function serverNameOf(id: string): string | undefined {
  const colon = id.indexOf(":");
  return colon < 0 ? undefined : id.slice(colon + 1);
}

/**
 * Room version 12 (MSC4291): the ID of the create event a room ID names (`!` becomes `$`).
 * Only meaningful for rooms of a version where `roomIdIsCreateEventId` holds.
 */
export function createEventIdOfRoom(roomId: string): string {
  return `$${roomId.slice(1)}`;
}

/** Room version 12 (MSC4291): the room ID a create event's ID gives (`$` becomes `!`). */
export function roomIdOfCreateEventId(eventId: string): string {
  return `!${eventId.slice(1)}`;
}
