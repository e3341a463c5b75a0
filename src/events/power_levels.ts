/**
 * Reading `m.room.power_levels` and checking changes to it.
 *
 * Defaults per the `m.room.power_levels` event schema and the server-server spec's
 * "Definitions": users_default 0 (with no power levels event the creator has 100),
 * events_default 0, state_default 50, invite 0, kick/ban/redact 50, notifications.room 50.
 * In room version 12 (MSC4289) the room's creators have an infinite power level, with or
 * without a power levels event; it is represented as `Infinity`.
 */
import { isValidUserId } from "./ids.js";
import type { RoomVersion } from "./room_versions.js";
import { isRecord, type Pdu } from "./types.js";

/** The seven top-level integer properties the change rules look at. */
export const POWER_LEVEL_SCALARS = [
  "users_default",
  "events_default",
  "state_default",
  "ban",
  "redact",
  "kick",
  "invite",
] as const;

/** The room creator: `content.creator` of the create event, or (room version 11) its sender. */
export function roomCreator(create: Pdu | undefined, version: RoomVersion): string | undefined {
  if (!create) return undefined;
  if (version.implicitRoomCreator) return create.sender;
  const creator = create.content.creator;
  return typeof creator === "string" ? creator : undefined;
}

/**
 * Room version 12 (MSC4289): the room creators, the create event's sender followed by
 * `content.additional_creators`. Empty in versions without privileged creators.
 */
export function roomCreators(create: Pdu | undefined, version: RoomVersion): string[] {
  if (!create || !version.privilegedCreators) return [];
  const extra = create.content.additional_creators;
  const more = Array.isArray(extra) ? extra.filter((u): u is string => typeof u === "string") : [];
  return [...new Set([create.sender, ...more])];
}

function intOr(value: unknown, fallback: number): number {
  return typeof value === "number" && Number.isInteger(value) ? value : fallback;
}

function mapEntry(map: unknown, key: string): unknown {
  return isRecord(map) && Object.hasOwn(map, key) ? map[key] : undefined;
}

/** The effective power levels of a room: its power levels event, or the defaults without one. */
export class PowerLevels {
  /** Whether the room has a power levels event (if not, the creator has 100). */
  readonly hasEvent: boolean;
  private readonly content: Record<string, unknown>;

  private readonly creators: ReadonlySet<string>;

  /**
   * @param creator the creator who has 100 when there is no power levels event (v10/v11)
   * @param creators the privileged creators of room version 12, who always have `Infinity`
   */
  constructor(
    powerLevelsEvent: Pdu | undefined,
    private readonly creator: string | undefined,
    creators: readonly string[] = [],
  ) {
    this.content = powerLevelsEvent?.content ?? {};
    this.hasEvent = powerLevelsEvent !== undefined;
    this.creators = new Set(creators);
  }

  static fromState(
    lookup: (type: string, stateKey: string) => Pdu | undefined,
    version: RoomVersion,
  ): PowerLevels {
    const create = lookup("m.room.create", "");
    return new PowerLevels(lookup("m.room.power_levels", ""), roomCreator(create, version), roomCreators(create, version));
  }

  /** True for a room version 12 creator, whose level is infinite. */
  isCreator(userId: string): boolean {
    return this.creators.has(userId);
  }

  /**
   * A user's level: `Infinity` for a room version 12 creator; else `users[user]`, else
   * `users_default`; with no event, 100 for the creator, else 0.
   */
  userLevel(userId: string): number {
    if (this.creators.has(userId)) return Infinity;
    if (!this.hasEvent) return userId === this.creator ? 100 : 0;
    const explicit = mapEntry(this.content.users, userId);
    if (typeof explicit === "number" && Number.isInteger(explicit)) return explicit;
    return intOr(this.content.users_default, 0);
  }

  /** The level needed to send an event: `events[type]`, else `state_default` (50) or `events_default` (0). */
  requiredLevel(type: string, isState: boolean): number {
    const explicit = mapEntry(this.content.events, type);
    if (typeof explicit === "number" && Number.isInteger(explicit)) return explicit;
    return isState ? intOr(this.content.state_default, 50) : intOr(this.content.events_default, 0);
  }

  get invite(): number {
    return intOr(this.content.invite, 0);
  }
  get kick(): number {
    return intOr(this.content.kick, 50);
  }
  get ban(): number {
    return intOr(this.content.ban, 50);
  }
  get redact(): number {
    return intOr(this.content.redact, 50);
  }

  /** The level needed to trigger a notification of kind `key` (`room` defaults to 50). */
  notificationLevel(key: string): number {
    return intOr(mapEntry(this.content.notifications, key), 50);
  }
}

/**
 * Auth rules 9.1-9.3: the shape of a new power levels event's content. Returns the
 * reason it is invalid, or `undefined` when it is fine.
 */
export function powerLevelsContentProblem(content: Record<string, unknown>, version: RoomVersion): string | undefined {
  if (version.enforceIntPowerLevels) {
    for (const key of POWER_LEVEL_SCALARS) {
      if (Object.hasOwn(content, key) && !Number.isInteger(content[key])) {
        return `power levels: "${key}" must be an integer`;
      }
    }
    for (const key of ["events", "notifications"] as const) {
      if (!Object.hasOwn(content, key)) continue;
      const map = content[key];
      if (!isRecord(map)) return `power levels: "${key}" must be an object`;
      for (const [k, v] of Object.entries(map)) {
        if (!Number.isInteger(v)) return `power levels: "${key}.${k}" must be an integer`;
      }
    }
  }
  if (Object.hasOwn(content, "users")) {
    const users = content.users;
    if (!isRecord(users)) return `power levels: "users" must be an object`;
    for (const [user, level] of Object.entries(users)) {
      if (!isValidUserId(user)) return `power levels: "users" key ${JSON.stringify(user)} is not a valid user ID`;
      if (!Number.isInteger(level)) return `power levels: "users.${user}" must be an integer`;
    }
  }
  return undefined;
}

/**
 * Room version 12 rule 10.4 (MSC4289): a power levels event may not list a creator in
 * `users`. Returns the reason, or `undefined` when none is listed.
 */
export function creatorsInUsersProblem(content: Record<string, unknown>, creators: readonly string[]): string | undefined {
  const users = content.users;
  if (!isRecord(users)) return undefined;
  const listed = creators.filter((c) => Object.hasOwn(users, c));
  if (listed.length === 0) return undefined;
  return `power levels: "users" may not list the room's creators (${listed.join(", ")}): their power level is infinite`;
}

function describe(v: unknown): string {
  return v === undefined ? "unset" : String(v);
}

/**
 * Auth rules 9.5-9.9: may `sender` (at `senderLevel`) replace the power levels `oldContent`
 * with `newContent`? Returns the reason it may not, or `undefined` when it may.
 */
export function powerLevelsChangeProblem(
  oldContent: Record<string, unknown>,
  newContent: Record<string, unknown>,
  sender: string,
  senderLevel: number,
  version: RoomVersion,
): string | undefined {
  // 9.5: the scalar levels.
  for (const key of POWER_LEVEL_SCALARS) {
    const before = oldContent[key];
    const after = newContent[key];
    if (before === after) continue;
    if (typeof before === "number" && before > senderLevel) {
      return `cannot change "${key}" from ${before}: it is above your power level (${senderLevel})`;
    }
    if (typeof after === "number" && after > senderLevel) {
      return `cannot set "${key}" to ${after}: it is above your power level (${senderLevel})`;
    }
  }

  // 9.6 and 9.7: `events` and (v6+) `notifications`.
  const maps: ("events" | "notifications")[] = ["events"];
  if (version.limitNotificationsPowerLevels) maps.push("notifications");
  for (const mapName of maps) {
    const before = isRecord(oldContent[mapName]) ? (oldContent[mapName] as Record<string, unknown>) : {};
    const after = isRecord(newContent[mapName]) ? (newContent[mapName] as Record<string, unknown>) : {};
    for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
      const b = Object.hasOwn(before, key) ? before[key] : undefined;
      const a = Object.hasOwn(after, key) ? after[key] : undefined;
      if (b === a) continue;
      if (typeof b === "number" && b > senderLevel) {
        return `cannot change ${mapName}["${key}"] from ${b}: it is above your power level (${senderLevel})`;
      }
      if (typeof a === "number" && a > senderLevel) {
        return `cannot set ${mapName}["${key}"] to ${a}: it is above your power level (${senderLevel})`;
      }
    }
  }

  // 9.8 and 9.9: `users`.
  const before = isRecord(oldContent.users) ? oldContent.users : {};
  const after = isRecord(newContent.users) ? newContent.users : {};
  for (const user of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const b = Object.hasOwn(before, user) ? before[user] : undefined;
    const a = Object.hasOwn(after, user) ? after[user] : undefined;
    if (b === a) continue;
    if (user !== sender && typeof b === "number" && b >= senderLevel) {
      return `cannot change the power level of ${user} (${describe(b)} -> ${describe(a)}): it is not below your own (${senderLevel})`;
    }
    if (typeof a === "number" && a > senderLevel) {
      return `cannot give ${user} power level ${a}: it is above your own (${senderLevel})`;
    }
  }
  return undefined;
}
