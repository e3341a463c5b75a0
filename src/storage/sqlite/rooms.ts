import type Database from "better-sqlite3";
import {
  stateKeyOf,
  type MembershipRecord,
  type NewEvent,
  type RoomRecord,
  type RoomStore,
  type RoomTip,
  type StateMap,
  type StoredEvent,
} from "../rooms.js";

interface EventRow {
  stream_ordering: number;
  event_id: string;
  room_id: string;
  type: string;
  state_key: string | null;
  sender: string;
  origin_server_ts: number;
  depth: number;
  json: string;
  redacted_by: string | null;
  txn_device_id: string | null;
  txn_id: string | null;
}

interface MembershipRow {
  room_id: string;
  user_id: string;
  membership: string;
  event_id: string;
  stream_ordering: number;
}

const toEvent = (r: EventRow): StoredEvent => ({
  streamOrdering: r.stream_ordering,
  eventId: r.event_id,
  roomId: r.room_id,
  type: r.type,
  stateKey: r.state_key,
  sender: r.sender,
  originServerTs: r.origin_server_ts,
  depth: r.depth,
  json: r.json,
  redactedBy: r.redacted_by,
  txn: r.txn_device_id !== null && r.txn_id !== null ? { deviceId: r.txn_device_id, txnId: r.txn_id } : null,
});

const toMembership = (r: MembershipRow): MembershipRecord => ({
  roomId: r.room_id,
  userId: r.user_id,
  membership: r.membership,
  eventId: r.event_id,
  streamOrdering: r.stream_ordering,
});

function toStateMap(rows: EventRow[]): StateMap {
  const map: StateMap = new Map();
  for (const r of rows) map.set(stateKeyOf(r.type, r.state_key ?? ""), toEvent(r));
  return map;
}

interface RoomRow {
  room_id: string;
  room_version: string;
  creator: string;
  created_ts: number;
  is_public: number;
}

const toRoom = (r: RoomRow): RoomRecord => ({
  roomId: r.room_id,
  roomVersion: r.room_version,
  creator: r.creator,
  createdTs: r.created_ts,
  isPublic: r.is_public === 1,
});

export class SqliteRoomStore implements RoomStore {
  readonly #append: (e: NewEvent) => number;
  readonly #s;

  constructor(private readonly db: Database.Database) {
    const s = {
      insertEvent: db.prepare(
        `INSERT INTO events (event_id, room_id, type, state_key, sender, origin_server_ts, depth, json, txn_device_id, txn_id)
         VALUES (@eventId, @roomId, @type, @stateKey, @sender, @originServerTs, @depth, @json, @txnDevice, @txnId)`,
      ),
      insertTxn: db.prepare("INSERT INTO event_txns (user_id, device_id, txn_id, event_id) VALUES (?, ?, ?, ?)"),
      upsertState: db.prepare(
        `INSERT INTO current_state (room_id, type, state_key, event_id, stream_ordering) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id, stream_ordering = excluded.stream_ordering`,
      ),
      upsertMembership: db.prepare(
        `INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, event_id = excluded.event_id,
           stream_ordering = excluded.stream_ordering`,
      ),
      insertMembershipHistory: db.prepare(
        "INSERT INTO membership_history (stream_ordering, room_id, user_id, membership, event_id) VALUES (?, ?, ?, ?, ?)",
      ),
      unforget: db.prepare("DELETE FROM forgotten_rooms WHERE user_id = ? AND room_id = ?"),
      tip: db.prepare<[string], { event_id: string; depth: number; stream_ordering: number }>(
        "SELECT event_id, depth, stream_ordering FROM events WHERE room_id = ? ORDER BY stream_ordering DESC LIMIT 1",
      ),
      event: db.prepare<[string], EventRow>("SELECT * FROM events WHERE event_id = ?"),
      txn: db.prepare<[string, string, string], { event_id: string }>(
        "SELECT event_id FROM event_txns WHERE user_id = ? AND device_id = ? AND txn_id = ?",
      ),
      currentState: db.prepare<[string], EventRow>(
        "SELECT e.* FROM current_state c JOIN events e ON e.event_id = c.event_id WHERE c.room_id = ?",
      ),
      currentStateEvent: db.prepare<[string, string, string], EventRow>(
        `SELECT e.* FROM current_state c JOIN events e ON e.event_id = c.event_id
         WHERE c.room_id = ? AND c.type = ? AND c.state_key = ?`,
      ),
      // SQLite returns the row that holds the MAX() for bare columns: the latest state event per key.
      stateAt: db.prepare<[string, number], EventRow & { m: number }>(
        `SELECT *, MAX(stream_ordering) AS m FROM events
         WHERE room_id = ? AND state_key IS NOT NULL AND stream_ordering <= ? GROUP BY type, state_key`,
      ),
      // The room list is one JSON array, so one prepared statement serves any number of rooms.
      roomsWithEvents: db.prepare<[string, number, number], { room_id: string }>(
        `SELECT DISTINCT room_id FROM events WHERE room_id IN (SELECT value FROM json_each(?))
         AND stream_ordering > ? AND stream_ordering <= ?`,
      ),
      stateDelta: db.prepare<[string, number, number], EventRow & { m: number }>(
        `SELECT *, MAX(stream_ordering) AS m FROM events
         WHERE room_id = ? AND state_key IS NOT NULL AND stream_ordering > ? AND stream_ordering <= ? GROUP BY type, state_key`,
      ),
      between: db.prepare<[string, number, number, number], EventRow>(
        `SELECT * FROM events WHERE room_id = ? AND stream_ordering > ? AND stream_ordering <= ?
         ORDER BY stream_ordering DESC LIMIT ?`,
      ),
      back: db.prepare<[string, number, number, number], EventRow>(
        `SELECT * FROM events WHERE room_id = ? AND stream_ordering < ? AND stream_ordering > ?
         ORDER BY stream_ordering DESC LIMIT ?`,
      ),
      forward: db.prepare<[string, number, number, number], EventRow>(
        `SELECT * FROM events WHERE room_id = ? AND stream_ordering > ? AND stream_ordering <= ?
         ORDER BY stream_ordering ASC LIMIT ?`,
      ),
      maxStream: db.prepare<[], { m: number | null }>("SELECT MAX(stream_ordering) AS m FROM events"),
      membership: db.prepare<[string, string], MembershipRow>("SELECT * FROM memberships WHERE room_id = ? AND user_id = ?"),
      membershipsOf: db.prepare<[string], MembershipRow>("SELECT * FROM memberships WHERE user_id = ?"),
      membersOf: db.prepare<[string, string], MembershipRow>(
        "SELECT * FROM memberships WHERE room_id = ? AND membership = ? ORDER BY user_id",
      ),
      membershipChanges: db.prepare<[string, number, number], MembershipRow>(
        `SELECT * FROM membership_history WHERE user_id = ? AND stream_ordering > ? AND stream_ordering <= ?
         ORDER BY stream_ordering`,
      ),
      redact: db.prepare("UPDATE events SET json = ?, redacted_by = ? WHERE event_id = ?"),
      insertSticky: db.prepare("INSERT INTO sticky_events (stream_ordering, room_id, expires_ts) VALUES (?, ?, ?)"),
      // Sticky events last an hour at most, so the table stays small: expired rows go as new ones come.
      pruneSticky: db.prepare("DELETE FROM sticky_events WHERE expires_ts <= ?"),
      liveSticky: db.prepare<[string, number, number, number], EventRow>(
        `SELECT e.* FROM sticky_events s JOIN events e ON e.stream_ordering = s.stream_ordering
         WHERE s.room_id = ? AND s.stream_ordering > ? AND s.stream_ordering <= ? AND s.expires_ts > ? AND e.redacted_by IS NULL
         ORDER BY s.stream_ordering`,
      ),
    };
    this.#s = s;
    this.#append = db.transaction((e: NewEvent): number => {
      const res = s.insertEvent.run({
        ...e,
        txnDevice: e.txn?.deviceId ?? null,
        txnId: e.txn?.txnId ?? null,
      });
      const ordering = Number(res.lastInsertRowid);
      if (e.txn) s.insertTxn.run(e.txn.userId, e.txn.deviceId, e.txn.key ?? e.txn.txnId, e.eventId);
      if (e.stickyUntil !== undefined) {
        s.pruneSticky.run(e.originServerTs);
        s.insertSticky.run(ordering, e.roomId, e.stickyUntil);
      }
      if (e.stateKey !== null) {
        s.upsertState.run(e.roomId, e.type, e.stateKey, e.eventId, ordering);
        if (e.type === "m.room.member" && e.membership !== null) {
          s.upsertMembership.run(e.roomId, e.stateKey, e.membership, e.eventId, ordering);
          s.insertMembershipHistory.run(ordering, e.roomId, e.stateKey, e.membership, e.eventId);
          if (e.membership === "join" || e.membership === "invite") s.unforget.run(e.stateKey, e.roomId);
        }
      }
      return ordering;
    });
  }

  async createRoom(room: RoomRecord): Promise<void> {
    this.db
      .prepare("INSERT INTO rooms (room_id, room_version, creator, created_ts, is_public) VALUES (?, ?, ?, ?, ?)")
      .run(room.roomId, room.roomVersion, room.creator, room.createdTs, room.isPublic ? 1 : 0);
  }

  async getRoom(roomId: string): Promise<RoomRecord | undefined> {
    const row = this.db.prepare<[string], RoomRow>("SELECT * FROM rooms WHERE room_id = ?").get(roomId);
    return row && toRoom(row);
  }

  async setRoomPublic(roomId: string, isPublic: boolean): Promise<void> {
    this.db.prepare("UPDATE rooms SET is_public = ? WHERE room_id = ?").run(isPublic ? 1 : 0, roomId);
  }

  async listPublicRooms(): Promise<RoomRecord[]> {
    return this.db.prepare<[], RoomRow>("SELECT * FROM rooms WHERE is_public = 1 ORDER BY created_ts").all().map(toRoom);
  }

  async appendEvent(event: NewEvent): Promise<number> {
    return this.#append(event);
  }

  async getTip(roomId: string): Promise<RoomTip | undefined> {
    const row = this.#s.tip.get(roomId);
    return row && { eventId: row.event_id, depth: row.depth, streamOrdering: row.stream_ordering };
  }

  async getEvent(eventId: string): Promise<StoredEvent | undefined> {
    const row = this.#s.event.get(eventId);
    return row && toEvent(row);
  }

  async getEventByTxn(userId: string, deviceId: string, key: string): Promise<string | undefined> {
    return this.#s.txn.get(userId, deviceId, key)?.event_id;
  }

  async redactEvent(eventId: string, redactedJson: string, redactedBy: string): Promise<void> {
    this.#s.redact.run(redactedJson, redactedBy, eventId);
  }

  async currentState(roomId: string): Promise<StateMap> {
    return toStateMap(this.#s.currentState.all(roomId));
  }

  async currentStateEvents(roomId: string, keys: readonly (readonly [string, string])[]): Promise<StateMap> {
    const map: StateMap = new Map();
    for (const [type, stateKey] of keys) {
      const row = this.#s.currentStateEvent.get(roomId, type, stateKey);
      if (row) map.set(stateKeyOf(type, stateKey), toEvent(row));
    }
    return map;
  }

  async currentStateEvent(roomId: string, type: string, stateKey: string): Promise<StoredEvent | undefined> {
    const row = this.#s.currentStateEvent.get(roomId, type, stateKey);
    return row && toEvent(row);
  }

  async stateAt(roomId: string, streamOrdering: number): Promise<StateMap> {
    return toStateMap(this.#s.stateAt.all(roomId, streamOrdering));
  }

  async stateDelta(roomId: string, from: number, to: number): Promise<StateMap> {
    if (to <= from) return new Map();
    return toStateMap(this.#s.stateDelta.all(roomId, from, to));
  }

  async eventsBetween(roomId: string, from: number, to: number, limit: number) {
    const rows = this.#s.between.all(roomId, from, to, limit + 1);
    const limited = rows.length > limit;
    return { events: rows.slice(0, limit).reverse().map(toEvent), limited };
  }

  async paginate(roomId: string, from: number, dir: "b" | "f", limit: number, to?: number): Promise<StoredEvent[]> {
    if (dir === "b") return this.#s.back.all(roomId, from, to ?? 0, limit).map(toEvent);
    return this.#s.forward.all(roomId, from, to ?? Number.MAX_SAFE_INTEGER, limit).map(toEvent);
  }

  async liveStickyEvents(roomId: string, from: number, to: number, now: number): Promise<StoredEvent[]> {
    return this.#s.liveSticky.all(roomId, from, to, now).map(toEvent);
  }

  async maxStreamOrdering(): Promise<number> {
    return this.#s.maxStream.get()?.m ?? 0;
  }

  async membership(roomId: string, userId: string): Promise<MembershipRecord | undefined> {
    const row = this.#s.membership.get(roomId, userId);
    return row && toMembership(row);
  }

  async membershipsOf(userId: string): Promise<MembershipRecord[]> {
    return this.#s.membershipsOf.all(userId).map(toMembership);
  }

  async membersOf(roomId: string, membership: string): Promise<MembershipRecord[]> {
    return this.#s.membersOf.all(roomId, membership).map(toMembership);
  }

  async membershipChanges(userId: string, from: number, to: number): Promise<MembershipRecord[]> {
    return this.#s.membershipChanges.all(userId, from, to).map(toMembership);
  }

  async roomsWithEventsBetween(roomIds: string[], from: number, to: number): Promise<string[]> {
    if (roomIds.length === 0 || to <= from) return [];
    return this.#s.roomsWithEvents.all(JSON.stringify(roomIds), from, to).map((r) => r.room_id);
  }

  async forgetRoom(userId: string, roomId: string): Promise<void> {
    this.db.prepare("INSERT OR IGNORE INTO forgotten_rooms (user_id, room_id) VALUES (?, ?)").run(userId, roomId);
  }

  async isForgotten(userId: string, roomId: string): Promise<boolean> {
    return !!this.db.prepare("SELECT 1 FROM forgotten_rooms WHERE user_id = ? AND room_id = ?").get(userId, roomId);
  }

  async setAlias(alias: string, roomId: string, creator: string): Promise<boolean> {
    return (
      this.db.prepare("INSERT OR IGNORE INTO room_aliases (alias, room_id, creator) VALUES (?, ?, ?)").run(alias, roomId, creator)
        .changes > 0
    );
  }

  async getAlias(alias: string) {
    const row = this.db
      .prepare<[string], { room_id: string; creator: string }>("SELECT room_id, creator FROM room_aliases WHERE alias = ?")
      .get(alias);
    return row && { roomId: row.room_id, creator: row.creator };
  }

  async deleteAlias(alias: string): Promise<boolean> {
    return this.db.prepare("DELETE FROM room_aliases WHERE alias = ?").run(alias).changes > 0;
  }

  async aliasesOf(roomId: string): Promise<string[]> {
    return this.db
      .prepare<[string], { alias: string }>("SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY alias")
      .all(roomId)
      .map((r) => r.alias);
  }
}
