/**
 * The authorisation rules of room versions 10 and 11 (content/rooms/v10.md and v11.md,
 * "Authorization rules", in matrix-org/matrix-spec), plus MSC3757's replacement of rule 8
 * in the `org.matrix.msc3757.*` versions (proposals/3757-restricting-who-can-overwrite-a-
 * state-event.md in matrix-org/matrix-spec-proposals).
 *
 * Each rejection is an {@link AuthError} whose `rule` is the spec's rule number.
 */
import { AuthError, type AuthContext, type AuthOptions } from "./auth_common.js";
import { checkMembership } from "./auth_membership.js";
import { eventIdFor } from "./hashes.js";
import { isValidUserId, serverNameOf, utf8Length } from "./ids.js";
import { PowerLevels, powerLevelsChangeProblem, powerLevelsContentProblem } from "./power_levels.js";
import { getRoomVersion, type RoomVersion } from "./room_versions.js";
import { EventTypes, isRecord, membershipOf, type Pdu, type StateKeyPair, type StateLookup } from "./types.js";

export { AuthError, type AuthOptions } from "./auth_common.js";

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

  // Rule 2.5: every auth event must belong to this room.
  const state: StateLookup = (type, stateKey) => {
    const event = authState(type, stateKey);
    if (event && event.room_id !== pdu.room_id) {
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
  if (pdu.type === EventTypes.powerLevels) checkPowerLevelsEvent(pdu, state, senderLevel, version);

  // Rule 10: allow.
}

/** Rule 1. */
function checkCreate(pdu: Pdu, version: RoomVersion): void {
  if (pdu.prev_events.length > 0) throw new AuthError("m.room.create must not have prev_events", "1.1");
  const roomDomain = serverNameOf(pdu.room_id);
  const senderDomain = serverNameOf(pdu.sender);
  if (roomDomain === undefined || roomDomain !== senderDomain) {
    throw new AuthError(
      `the room ID's domain (${roomDomain ?? "none"}) does not match the sender's (${senderDomain ?? "none"})`,
      "1.2",
    );
  }
  if (Object.hasOwn(pdu.content, "room_version")) {
    const rv = pdu.content.room_version;
    if (typeof rv !== "string" || getRoomVersion(rv) === undefined) {
      throw new AuthError(`m.room.create names an unrecognised room version: ${JSON.stringify(rv)}`, "1.3");
    }
  }
  if (!version.implicitRoomCreator && !Object.hasOwn(pdu.content, "creator")) {
    throw new AuthError(`m.room.create in room version ${version.id} must have content.creator`, "1.4");
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

/** Rule 9. */
function checkPowerLevelsEvent(pdu: Pdu, state: StateLookup, senderLevel: number, version: RoomVersion): void {
  const shape = powerLevelsContentProblem(pdu.content, version);
  if (shape) throw new AuthError(shape, "9.1");
  const previous = state(EventTypes.powerLevels, "");
  if (!previous) return;
  const change = powerLevelsChangeProblem(previous.content, pdu.content, pdu.sender, senderLevel, version);
  if (change) throw new AuthError(change, "9.5");
}

/**
 * "Auth events selection" (server-server spec): the `(type, state_key)` pairs whose current
 * state events are the `auth_events` of a new event. Empty for `m.room.create`.
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
    [EventTypes.create, ""],
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
 * Rule 2 for an event received with its auth events: no duplicate `(type, state_key)`,
 * nothing outside the auth events selection, a create event among them, all in this room.
 * (Rule 2.3, that none of them was itself rejected, is the caller's.)
 */
export function checkAuthEventsList(pdu: Pdu, authEvents: readonly Pdu[], version: RoomVersion): void {
  const allowed = new Set(
    authEventTypes(pdu.type, pdu.state_key, pdu.sender, pdu.content, version).map(([t, k]) => `${t}\u0000${k}`),
  );
  const seen = new Set<string>();
  let hasCreate = false;
  for (const event of authEvents) {
    const key = `${event.type}\u0000${event.state_key ?? ""}`;
    if (typeof event.state_key !== "string") {
      throw new AuthError(`auth event of type ${event.type} is not a state event`, "2.2");
    }
    if (seen.has(key)) throw new AuthError(`duplicate auth event for (${event.type}, ${event.state_key})`, "2.1");
    seen.add(key);
    if (!allowed.has(key)) {
      throw new AuthError(`auth event (${event.type}, ${event.state_key}) is not one this event may cite`, "2.2");
    }
    if (event.room_id !== pdu.room_id) throw new AuthError(`auth event ${event.type} belongs to another room`, "2.5");
    if (event.type === EventTypes.create) hasCreate = true;
  }
  if (pdu.type !== EventTypes.create && !hasCreate) {
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
