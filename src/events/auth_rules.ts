/**
 * The authorisation rules of room versions 10, 11 and 12 (content/rooms/v10.md, v11.md and
 * v12.md, "Authorization rules", in matrix-org/matrix-spec), plus MSC3757's replacement of
 * rule 8 in the `org.matrix.msc3757.*` versions (proposals/3757-restricting-who-can-
 * overwrite-a-state-event.md in matrix-org/matrix-spec-proposals).
 *
 * Each rejection is an {@link AuthError} whose `rule` is the spec's rule number for the
 * room's version. Version 12 inserts a rule 2 (the room ID names the create event) and a
 * rule 10.4 (no creator in power levels' `users`), which shifts the numbers after them: the
 * rules shared with v11 are written here with v11's numbers and renumbered on the way out.
 */
import { AuthError, type AuthContext, type AuthOptions } from "./auth_common.js";
import { checkMembership } from "./auth_membership.js";
import { eventIdFor, roomIdForCreateEvent } from "./hashes.js";
import { isValidUserId, serverNameOf, utf8Length } from "./ids.js";
import {
  creatorsInUsersProblem,
  PowerLevels,
  powerLevelsChangeProblem,
  powerLevelsContentProblem,
  roomCreators,
} from "./power_levels.js";
import { getRoomVersion, type RoomVersion } from "./room_versions.js";
import { EventTypes, isRecord, membershipOf, type Pdu, type StateKeyPair, type StateLookup } from "./types.js";

export { AuthError, type AuthOptions } from "./auth_common.js";

/** A rejection under a rule that only room version 12 has, already numbered as v12 numbers it. */
class V12AuthError extends AuthError {}

/** Room IDs of v12 create events already hashed: every check of the room's events needs one. */
const createRoomIds = new WeakMap<Pdu, string>();

function roomIdOf(create: Pdu, version: RoomVersion): string {
  let id = createRoomIds.get(create);
  if (id === undefined) createRoomIds.set(create, (id = roomIdForCreateEvent(create, version)));
  return id;
}

/**
 * A v11 rule number as room version 12 numbers the same rule: its rule 2 (the room ID) is
 * new, so rules 2 to 10 become 3 to 11; within rule 9 (now 10), 9.4 onwards move down one
 * for the new 10.4; v11's 2.4 (no create event among the auth events) is v12's rule 2.
 */
export function v12RuleNumber(v11Rule: string): string {
  if (v11Rule === "2.4") return "2";
  const [head, sub, ...rest] = v11Rule.split(".");
  const n = Number(head);
  if (!Number.isInteger(n) || n < 2) return v11Rule;
  const subRule = n === 9 && sub !== undefined && Number(sub) >= 4 ? String(Number(sub) + 1) : sub;
  return [String(n + 1), ...(subRule === undefined ? [] : [subRule]), ...rest].join(".");
}

/**
 * Throws {@link AuthError} unless `pdu` is allowed by the authorisation rules of `version`,
 * given `authState`: the room state before the event (or the event's auth events).
 * The signature check that precedes the rules ("events must be signed by the server
 * denoted by the sender property") is the caller's, via `verifyEventSignature`.
 */
export function checkEventAuth(pdu: Pdu, authState: StateLookup, version: RoomVersion, options: AuthOptions = {}): void {
  if (pdu.type === EventTypes.create) {
    checkCreate(pdu, version);
    return;
  }
  if (!version.roomIdIsCreateEventId) {
    checkOtherEvent(pdu, authState, version, options);
    return;
  }
  // Rule 2 (v12): the create event is not among the auth events; the room ID names it, and
  // `authState` must still answer it, so that it can be checked against the room ID here.
  const create = authState(EventTypes.create, "");
  if (!create) throw new V12AuthError("the room's m.room.create event is not known", "2");
  if (create.type !== EventTypes.create || roomIdOf(create, version) !== pdu.room_id) {
    throw new V12AuthError(`the room ID ${pdu.room_id} is not the ID of the room's m.room.create event`, "2");
  }
  try {
    checkOtherEvent(pdu, authState, version, options);
  } catch (err) {
    if (err instanceof AuthError && !(err instanceof V12AuthError)) throw new AuthError(err.message, v12RuleNumber(err.rule));
    throw err;
  }
}

/** Rules 2 to 10 (v11 numbers) for an event other than `m.room.create`. */
function checkOtherEvent(pdu: Pdu, authState: StateLookup, version: RoomVersion, options: AuthOptions): void {
  // Rule 2.5: every auth event must belong to this room. (A v12 create event has no
  // room ID: rule 2 tied it to the room.)
  const state: StateLookup = (type, stateKey) => {
    const event = authState(type, stateKey);
    if (event && event.room_id !== pdu.room_id && !(version.roomIdIsCreateEventId && type === EventTypes.create)) {
      throw new AuthError(`the ${type} event used to authorise this event belongs to another room`, "2.5");
    }
    return event;
  };

  // Rule 2.4.
  const create = state(EventTypes.create, "");
  if (!create) throw new AuthError("the room has no m.room.create event", "2.4");

  // Rule 3.
  if (create.content["m.federate"] === false && serverNameOf(pdu.sender) !== serverNameOf(create.sender)) {
    throw new AuthError(`the room does not federate and ${pdu.sender} is not on the creator's server`, "3");
  }

  const levels = PowerLevels.fromState(state, version);
  let createId: string | undefined;
  const ctx: AuthContext = {
    pdu,
    version,
    state,
    create,
    levels,
    options,
    createEventId: () => (createId ??= eventIdFor(create, version)),
  };

  // Rule 4.
  if (pdu.type === EventTypes.member) {
    checkMembership(ctx);
    return;
  }

  // Rule 5.
  const senderMembership = membershipOf(state(EventTypes.member, pdu.sender));
  if (senderMembership !== "join") {
    throw new AuthError(`sender ${pdu.sender} is not joined to the room (membership: ${senderMembership ?? "none"})`, "5");
  }

  const senderLevel = levels.userLevel(pdu.sender);

  // Rule 6.
  if (pdu.type === EventTypes.thirdPartyInvite) {
    if (senderLevel >= levels.invite) return;
    throw new AuthError(
      `power level too low to send m.room.third_party_invite (needs the invite level ${levels.invite}, has ${senderLevel})`,
      "6",
    );
  }

  // Rule 7.
  const isState = typeof pdu.state_key === "string";
  const required = levels.requiredLevel(pdu.type, isState);
  if (required > senderLevel) {
    throw new AuthError(`power level too low to send ${pdu.type} (needs ${required}, has ${senderLevel})`, "7");
  }

  // Rule 8.
  if (isState) checkStateKeyOwnership(pdu.state_key as string, pdu.sender, senderLevel, levels, version);

  // Rule 9.
  if (pdu.type === EventTypes.powerLevels) checkPowerLevelsEvent(pdu, state, create, senderLevel, version);

  // Rule 10: allow.
}

/** Rule 1. */
function checkCreate(pdu: Pdu, version: RoomVersion): void {
  if (pdu.prev_events.length > 0) throw new AuthError("m.room.create must not have prev_events", "1.1");
  if (version.roomIdIsCreateEventId) {
    checkCreateV12(pdu);
    return;
  }
  const roomDomain = serverNameOf(pdu.room_id);
  const senderDomain = serverNameOf(pdu.sender);
  if (roomDomain === undefined || roomDomain !== senderDomain) {
    throw new AuthError(
      `the room ID's domain (${roomDomain ?? "none"}) does not match the sender's (${senderDomain ?? "none"})`,
      "1.2",
    );
  }
  checkCreateRoomVersion(pdu);
  if (!version.implicitRoomCreator && !Object.hasOwn(pdu.content, "creator")) {
    throw new AuthError(`m.room.create in room version ${version.id} must have content.creator`, "1.4");
  }
}

/** Rules 1.2 to 1.4 of room version 12. */
function checkCreateV12(pdu: Pdu): void {
  if (Object.hasOwn(pdu, "room_id")) {
    throw new AuthError("m.room.create must not have a room_id in room version 12: the room ID is derived from it", "1.2");
  }
  checkCreateRoomVersion(pdu);
  if (Object.hasOwn(pdu.content, "additional_creators")) {
    const extra = pdu.content.additional_creators;
    if (!Array.isArray(extra)) throw new AuthError("additional_creators must be an array of user IDs", "1.4");
    for (const user of extra) {
      if (typeof user !== "string" || !isValidUserId(user)) {
        throw new AuthError(`additional_creators holds ${JSON.stringify(user)}, which is not a valid user ID`, "1.4");
      }
    }
  }
}

function checkCreateRoomVersion(pdu: Pdu): void {
  if (Object.hasOwn(pdu.content, "room_version")) {
    const rv = pdu.content.room_version;
    if (typeof rv !== "string" || getRoomVersion(rv) === undefined) {
      throw new AuthError(`m.room.create names an unrecognised room version: ${JSON.stringify(rv)}`, "1.3");
    }
  }
}

/** Rule 8, or MSC3757's version of it. */
function checkStateKeyOwnership(
  stateKey: string,
  sender: string,
  senderLevel: number,
  levels: PowerLevels,
  version: RoomVersion,
): void {
  if (!version.msc3757OwnedStateKeys) {
    if (stateKey.startsWith("@") && stateKey !== sender) {
      throw new AuthError(`state key ${stateKey} belongs to another user; only that user may set it`, "8");
    }
    return;
  }
  if (!stateKey.startsWith("@")) {
    const size = utf8Length(stateKey);
    if (size > 255) throw new AuthError(`state key is ${size} bytes; the limit is 255`, "8.2");
    return;
  }
  const owner = stateKeyOwner(stateKey);
  if (owner === undefined) {
    throw new AuthError(
      `state key ${JSON.stringify(stateKey)} starts with "@" but neither is a user ID nor starts with one followed by "_"`,
      "8.1.1",
    );
  }
  const suffixSize = utf8Length(stateKey) - utf8Length(owner);
  if (suffixSize > 256) {
    throw new AuthError(`state key suffix after the user ID is ${suffixSize} bytes; the limit is 256`, "8.1.2");
  }
  if (owner !== sender) {
    const ownerLevel = levels.userLevel(owner);
    if (senderLevel <= ownerLevel) {
      throw new AuthError(
        `state key ${stateKey} belongs to ${owner}; only that user or someone with a higher power level may set it ` +
          `(you have ${senderLevel}, they have ${ownerLevel})`,
        "8.1.3",
      );
    }
  }
}

/**
 * MSC3757: the user ID that owns a state key starting with `@` — the key up to the first
 * `_` after the first `:`, or the whole key — or `undefined` when that is not a valid user ID.
 */
export function stateKeyOwner(stateKey: string): string | undefined {
  if (!stateKey.startsWith("@")) return undefined;
  const colon = stateKey.indexOf(":");
  if (colon < 0) return undefined;
  const underscore = stateKey.indexOf("_", colon + 1);
  const owner = underscore < 0 ? stateKey : stateKey.slice(0, underscore);
  return isValidUserId(owner) ? owner : undefined;
}

/** Rule 9 (10 in v12). */
function checkPowerLevelsEvent(pdu: Pdu, state: StateLookup, create: Pdu, senderLevel: number, version: RoomVersion): void {
  const shape = powerLevelsContentProblem(pdu.content, version);
  if (shape) throw new AuthError(shape, "9.1");
  if (version.privilegedCreators) {
    const creators = creatorsInUsersProblem(pdu.content, roomCreators(create, version));
    if (creators) throw new V12AuthError(creators, "10.4");
  }
  const previous = state(EventTypes.powerLevels, "");
  if (!previous) return;
  const change = powerLevelsChangeProblem(previous.content, pdu.content, pdu.sender, senderLevel, version);
  if (change) throw new AuthError(change, "9.5");
}

/**
 * "Auth events selection" (server-server spec): the `(type, state_key)` pairs whose current
 * state events are the `auth_events` of a new event. Empty for `m.room.create`; in room
 * version 12 the create event is never selected (the room ID stands for it).
 */
export function authEventTypes(
  type: string,
  stateKey: string | undefined,
  sender: string,
  content: Record<string, unknown>,
  version: RoomVersion,
): StateKeyPair[] {
  if (type === EventTypes.create) return [];
  const pairs: StateKeyPair[] = [
    ...(version.roomIdIsCreateEventId ? [] : [[EventTypes.create, ""] as StateKeyPair]),
    [EventTypes.powerLevels, ""],
    [EventTypes.member, sender],
  ];
  if (type === EventTypes.member && typeof stateKey === "string") {
    const membership = content.membership;
    pairs.push([EventTypes.member, stateKey]);
    if (membership === "join" || membership === "invite" || membership === "knock") {
      pairs.push([EventTypes.joinRules, ""]);
    }
    const tpi = content.third_party_invite;
    if (membership === "invite" && isRecord(tpi) && isRecord(tpi.signed) && typeof tpi.signed.token === "string") {
      pairs.push([EventTypes.thirdPartyInvite, tpi.signed.token]);
    }
    const via = content.join_authorised_via_users_server;
    if (membership === "join" && version.restrictedJoinRule && typeof via === "string") {
      pairs.push([EventTypes.member, via]);
    }
  }
  const seen = new Set<string>();
  return pairs.filter(([t, k]) => {
    const key = `${t}\u0000${k}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/**
 * The `(type, state_key)` pairs of the room state that `checkEventAuth` reads for a new
 * event: its auth events selection, plus (room version 12) the create event, which is
 * no longer among the auth events but which the rules still need.
 */
export function authStateKeys(
  type: string,
  stateKey: string | undefined,
  sender: string,
  content: Record<string, unknown>,
  version: RoomVersion,
): StateKeyPair[] {
  const pairs = authEventTypes(type, stateKey, sender, content, version);
  if (type !== EventTypes.create && version.roomIdIsCreateEventId) pairs.unshift([EventTypes.create, ""]);
  return pairs;
}

/**
 * Rule 2 (3 in v12) for an event received with its auth events: no duplicate `(type, state_key)`,
 * nothing outside the auth events selection, a create event among them, all in this room.
 * (Rule 2.3, that none of them was itself rejected, is the caller's.)
 */
export function checkAuthEventsList(pdu: Pdu, authEvents: readonly Pdu[], version: RoomVersion): void {
  const allowed = new Set(
    authEventTypes(pdu.type, pdu.state_key, pdu.sender, pdu.content, version).map(([t, k]) => `${t}\u0000${k}`),
  );
  const v12 = version.roomIdIsCreateEventId;
  const rule = (v11Rule: string) => (v12 ? v12RuleNumber(v11Rule) : v11Rule);
  const seen = new Set<string>();
  let hasCreate = false;
  for (const event of authEvents) {
    const key = `${event.type}\u0000${event.state_key ?? ""}`;
    if (typeof event.state_key !== "string") {
      throw new AuthError(`auth event of type ${event.type} is not a state event`, rule("2.2"));
    }
    if (seen.has(key)) throw new AuthError(`duplicate auth event for (${event.type}, ${event.state_key})`, rule("2.1"));
    seen.add(key);
    if (v12 && event.type === EventTypes.create) {
      throw new AuthError("in room version 12 the auth events must not include the m.room.create event", "3.2");
    }
    if (!allowed.has(key)) {
      throw new AuthError(`auth event (${event.type}, ${event.state_key}) is not one this event may cite`, rule("2.2"));
    }
    if (event.room_id !== pdu.room_id) throw new AuthError(`auth event ${event.type} belongs to another room`, rule("2.5"));
    if (event.type === EventTypes.create) hasCreate = true;
  }
  if (pdu.type !== EventTypes.create && !hasCreate && !v12) {
    throw new AuthError("the auth events do not include the m.room.create event", "2.4");
  }
}

/** A {@link StateLookup} over a list of state events (later events replace earlier ones). */
export function stateLookupFromEvents(events: Iterable<Pdu>): StateLookup {
  const map = new Map<string, Pdu>();
  for (const e of events) {
    if (typeof e.state_key === "string") map.set(`${e.type}\u0000${e.state_key}`, e);
  }
  return (type, stateKey) => map.get(`${type}\u0000${stateKey}`);
}
