/**
 * A user's memberships and each joined room's latest bump event, as of a position, kept from
 * one request to the next. Computing them afresh reads every room of the user (two queries over
 * hundreds of rows for a user in hundreds of rooms), on every request, for every connection;
 * moving a kept snapshot on to a newer position reads only what happened in between: the user's
 * membership changes (any, and the snapshot is read afresh) and the rooms that had events (only
 * their bump stamps are read again). Requests at the same position share one read.
 */
import type { Storage } from "../../storage/interfaces.js";
import type { MembershipRecord } from "../../storage/rooms.js";
import type { Clock } from "../clock.js";
import { membershipsAt } from "../sync/memberships.js";
import { trimOldest } from "../bounded_map.js";

/** Event types that move a room up the list (MSC4186's list, as Synapse's). */
export const BUMP_TYPES = ["m.room.create", "m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite", "m.poll.start", "m.beacon_info"];

/** Users kept; the least recently used goes first. A snapshot is a few hundred small records. */
const MAX_USERS = 1000;
/**
 * A snapshot is read afresh at least this often. Memberships also change without a history row
 * (state resolution over federation rewrites current state): rooms with events are checked, and
 * this bounds anything that escapes the check.
 */
const MAX_AGE_MS = 30_000;

export interface UserRooms {
  /** The user's membership in each room as of the position (`membershipsAt`). */
  memberships: MembershipRecord[];
  /** Joined rooms only: the newest bump event at or before the position, where there is one. */
  latest: Map<string, number>;
}

interface Snapshot extends UserRooms {
  position: number;
  /** When it was read afresh (the clock's time). */
  readAt: number;
}

export class UserRoomsCache {
  /** By user, least recently used first: the newest position asked for, and its snapshot (or the read under way). */
  readonly #users = new Map<string, { position: number; snapshot: Promise<Snapshot> }>();

  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
  ) {}

  /** The user's rooms as of `position`, from the kept snapshot where it can be moved on. */
  at(userId: string, position: number): Promise<UserRooms> {
    const kept = this.#users.get(userId);
    if (kept && kept.position === position) {
      this.#touch(userId, kept);
      return kept.snapshot;
    }
    if (kept && kept.position > position) return this.#read(userId, position); // an older position: answered, not kept
    const snapshot = kept
      ? kept.snapshot.then(
          (s) => this.#moveOn(userId, s, position),
          () => this.#read(userId, position),
        )
      : this.#read(userId, position);
    const entry = { position, snapshot };
    this.#touch(userId, entry);
    trimOldest(this.#users, MAX_USERS);
    // A failed read is not kept: the next request reads afresh.
    snapshot.catch(() => {
      if (this.#users.get(userId) === entry) this.#users.delete(userId);
    });
    return snapshot;
  }

  #touch(userId: string, entry: { position: number; snapshot: Promise<Snapshot> }): void {
    this.#users.delete(userId);
    this.#users.set(userId, entry);
  }

  async #moveOn(userId: string, s: Snapshot, position: number): Promise<Snapshot> {
    const storage = this.storage;
    if (this.clock.now() - s.readAt >= MAX_AGE_MS) return this.#read(userId, position);
    if ((await storage.rooms.membershipChanges(userId, s.position, position)).length > 0) return this.#read(userId, position);
    const joined = s.memberships.filter((m) => m.membership === "join");
    const changed = await storage.rooms.roomsWithEventsBetween(
      joined.map((m) => m.roomId),
      s.position,
      position,
    );
    const latest = new Map(s.latest);
    if (changed.length > 0) {
      const before = new Map(joined.map((m) => [m.roomId, m.eventId]));
      for (const id of changed) {
        if ((await storage.rooms.membership(id, userId))?.eventId !== before.get(id)) return this.#read(userId, position);
      }
      const fresh = await storage.rooms.latestOfTypes(
        changed.map((id) => [id, position] as const),
        BUMP_TYPES,
      );
      for (const id of changed) {
        const at = fresh.get(id);
        if (at === undefined) latest.delete(id);
        else latest.set(id, at);
      }
    }
    return { position, readAt: s.readAt, memberships: s.memberships, latest };
  }

  async #read(userId: string, position: number): Promise<Snapshot> {
    const readAt = this.clock.now();
    const memberships = await membershipsAt(this.storage, userId, position);
    const joined = memberships.filter((m) => m.membership === "join");
    const latest = await this.storage.rooms.latestOfTypes(
      joined.map((m) => [m.roomId, position] as const),
      BUMP_TYPES,
    );
    return { position, readAt, memberships, latest };
  }
}
