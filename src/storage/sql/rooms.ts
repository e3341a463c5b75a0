/** Rooms, events, state and memberships: one set of queries for both dialects. */
import {
  HISTORY_FLOOR,
  stateKeyOf,
  type MembershipRecord,
  type NewEvent,
  type RoomRecord,
  type RoomStore,
  type RoomTip,
  type StateMap,
  type StoredEvent,
} from "../rooms.js";
import type { CurrentStateEntry } from "../room_dag.js";
import { FOR_UPDATE, inJsonList, sql, type Executor, type Transaction } from "./executor.js";

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

interface RoomRow {
  room_id: string;
  room_version: string;
  creator: string;
  created_ts: number;
  is_public: number;
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

const toRoom = (r: RoomRow): RoomRecord => ({
  roomId: r.room_id,
  roomVersion: r.room_version,
  creator: r.creator,
  createdTs: r.created_ts,
  isPublic: r.is_public === 1,
});

function toStateMap(rows: EventRow[]): StateMap {
  const map: StateMap = new Map();
  for (const r of rows) map.set(stateKeyOf(r.type, r.state_key ?? ""), toEvent(r));
  return map;
}

const Q = {
  insertEvent: `INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, origin_server_ts, depth, json,
      txn_device_id, txn_id, state_group, outlier) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  insertTxn: "INSERT INTO event_txns (user_id, device_id, txn_id, event_id) VALUES (?, ?, ?, ?)",
  upsertState: `INSERT INTO current_state (room_id, type, state_key, event_id, stream_ordering) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id, stream_ordering = excluded.stream_ordering`,
  upsertMembership: `INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, event_id = excluded.event_id,
      stream_ordering = excluded.stream_ordering`,
  // An event a state resolution makes current again already has its row.
  insertMembershipHistory: `INSERT INTO membership_history (stream_ordering, room_id, user_id, membership, event_id) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (stream_ordering) DO NOTHING`,
  unforget: "DELETE FROM forgotten_rooms WHERE user_id = ? AND room_id = ?",
  // Sticky events last an hour at most, so the table stays small: expired rows go as new ones come.
  pruneSticky: "DELETE FROM sticky_events WHERE expires_ts <= ?",
  insertSticky: "INSERT INTO sticky_events (stream_ordering, room_id, expires_ts) VALUES (?, ?, ?)",
  lockRoom: sql`SELECT room_version FROM rooms WHERE room_id = ? ${FOR_UPDATE}`,
  tip: "SELECT event_id, depth, stream_ordering FROM events WHERE room_id = ? ORDER BY stream_ordering DESC LIMIT 1",
  event: "SELECT * FROM events WHERE event_id = ?",
  txn: "SELECT event_id FROM event_txns WHERE user_id = ? AND device_id = ? AND txn_id = ?",
  currentState: "SELECT e.* FROM current_state c JOIN events e ON e.event_id = c.event_id WHERE c.room_id = ?",
  currentStateEvent: `SELECT e.* FROM current_state c JOIN events e ON e.event_id = c.event_id
    WHERE c.room_id = ? AND c.type = ? AND c.state_key = ?`,
  // The keys are one JSON array of [type, state_key] pairs: one round trip for any number of keys.
  currentStateEvents: {
    sqlite: `SELECT e.* FROM json_each(?) k
      JOIN current_state c ON c.room_id = ? AND c.type = json_extract(k.value, '$[0]') AND c.state_key = json_extract(k.value, '$[1]')
      JOIN events e ON e.event_id = c.event_id`,
    postgres: `SELECT e.* FROM json_array_elements(?::json) k
      JOIN current_state c ON c.room_id = ? AND c.type = k.value->>0 AND c.state_key = k.value->>1
      JOIN events e ON e.event_id = c.event_id`,
  },
  // The latest state event per (type, state_key) in a range: MAX per group, then the rows holding it.
  stateAt: `SELECT * FROM events WHERE stream_ordering IN (
      SELECT MAX(stream_ordering) FROM events WHERE room_id = ? AND state_key IS NOT NULL AND stream_ordering <= ?
      GROUP BY type, state_key)`,
  stateDelta: `SELECT * FROM events WHERE stream_ordering IN (
      SELECT MAX(stream_ordering) FROM events
      WHERE room_id = ? AND state_key IS NOT NULL AND stream_ordering > ? AND stream_ordering <= ?
      GROUP BY type, state_key)`,
  roomsWithEvents: sql`SELECT DISTINCT room_id FROM events WHERE ${inJsonList("room_id")}
    AND stream_ordering > ? AND stream_ordering <= ?`,
  between: `SELECT * FROM events WHERE room_id = ? AND stream_ordering > ? AND stream_ordering <= ? AND outlier = 0
    ORDER BY stream_ordering DESC LIMIT ?`,
  back: `SELECT * FROM events WHERE room_id = ? AND stream_ordering < ? AND stream_ordering > ? AND outlier = 0
    ORDER BY stream_ordering DESC LIMIT ?`,
  forward: `SELECT * FROM events WHERE room_id = ? AND stream_ordering > ? AND stream_ordering <= ? AND outlier = 0
    ORDER BY stream_ordering ASC LIMIT ?`,
  // PostgreSQL reads each room's newest events with one index scan per room in one statement.
  // SQLite has no LATERAL, and no round trips to save: it runs `between` per room.
  betweenMany: `SELECT e.* FROM json_array_elements_text(?::json) AS r(room_id)
    CROSS JOIN LATERAL (SELECT * FROM events WHERE room_id = r.room_id AND stream_ordering > ? AND stream_ordering <= ? AND outlier = 0
      ORDER BY stream_ordering DESC LIMIT ?) e`,
  membershipsIn: sql`SELECT * FROM memberships WHERE ${inJsonList("room_id")}`,
  // The window is short for an incremental sync, so the primary key's range is read, then filtered.
  membershipChangesAround: sql`SELECT * FROM membership_history WHERE stream_ordering > ? AND stream_ordering <= ?
    AND (user_id = ? OR ${inJsonList("room_id")}) ORDER BY stream_ordering`,
  joinedRoomsOfUsers: sql`SELECT * FROM memberships WHERE ${inJsonList("user_id")} AND membership = 'join'`,
  liveStickyMany: sql`SELECT e.* FROM sticky_events s JOIN events e ON e.stream_ordering = s.stream_ordering
    WHERE ${inJsonList("s.room_id")} AND s.stream_ordering > ? AND s.stream_ordering <= ? AND s.expires_ts > ?
    AND e.redacted_by IS NULL ORDER BY s.stream_ordering`,
  membership: "SELECT * FROM memberships WHERE room_id = ? AND user_id = ?",
  membershipsOf: "SELECT * FROM memberships WHERE user_id = ?",
  membersOf: "SELECT * FROM memberships WHERE room_id = ? AND membership = ? ORDER BY user_id",
  membershipChanges: `SELECT * FROM membership_history WHERE user_id = ? AND stream_ordering > ? AND stream_ordering <= ?
    ORDER BY stream_ordering`,
  everJoined: `SELECT 1 AS one FROM membership_history WHERE user_id = ? AND room_id = ? AND stream_ordering <= ?
    AND membership = 'join' LIMIT 1`,
  redact: "UPDATE events SET json = ?, redacted_by = ? WHERE event_id = ?",
  liveSticky: `SELECT e.* FROM sticky_events s JOIN events e ON e.stream_ordering = s.stream_ordering
    WHERE s.room_id = ? AND s.stream_ordering > ? AND s.stream_ordering <= ? AND s.expires_ts > ? AND e.redacted_by IS NULL
    ORDER BY s.stream_ordering`,
  eventsByIds: sql`SELECT * FROM events WHERE ${inJsonList("event_id")}`,
  // Per room, the newest event of the types at or below its cap: an index walk backwards per room.
  latestOfTypes: {
    sqlite: `SELECT json_extract(r.value, '$[0]') AS room_id, (SELECT MAX(e.stream_ordering) FROM events e
        WHERE e.room_id = json_extract(r.value, '$[0]') AND e.stream_ordering <= json_extract(r.value, '$[1]')
        AND e.type IN (SELECT value FROM json_each(?))) AS position
      FROM json_each(?) r`,
    postgres: `SELECT r.value->>0 AS room_id, (SELECT MAX(e.stream_ordering) FROM events e
        WHERE e.room_id = r.value->>0 AND e.stream_ordering <= (r.value->>1)::bigint
        AND e.type IN (SELECT json_array_elements_text(?::json))) AS position
      FROM json_array_elements(?::json) r`,
  },
  currentStateMany: {
    sqlite: `SELECT e.* FROM current_state c JOIN events e ON e.event_id = c.event_id
      WHERE c.room_id IN (SELECT value FROM json_each(?)) AND (c.type IN (SELECT value FROM json_each(?))
        OR EXISTS (SELECT 1 FROM json_each(?) k WHERE json_extract(k.value, '$[0]') = c.type AND json_extract(k.value, '$[1]') = c.state_key))`,
    postgres: `SELECT e.* FROM current_state c JOIN events e ON e.event_id = c.event_id
      WHERE c.room_id IN (SELECT json_array_elements_text(?::json)) AND (c.type IN (SELECT json_array_elements_text(?::json))
        OR EXISTS (SELECT 1 FROM json_array_elements(?::json) k WHERE k.value->>0 = c.type AND k.value->>1 = c.state_key))`,
  },
} as const;

/**
 * Makes an event the room's current state for its key, and for a member event the member's
 * membership (with its history, which sync reads, and un-forgetting on a join or invite).
 */
export async function setCurrentStateEntry(tx: Executor, roomId: string, e: CurrentStateEntry): Promise<void> {
  await tx.run(Q.upsertState, [roomId, e.type, e.stateKey, e.eventId, e.streamOrdering]);
  if (e.type !== "m.room.member" || e.membership === null) return;
  await tx.run(Q.upsertMembership, [roomId, e.stateKey, e.membership, e.eventId, e.streamOrdering]);
  await tx.run(Q.insertMembershipHistory, [e.streamOrdering, roomId, e.stateKey, e.membership, e.eventId]);
  if (e.membership === "join" || e.membership === "invite") await tx.run(Q.unforget, [e.stateKey, roomId]);
}

export class SqlRoomStore implements RoomStore {
  constructor(private readonly db: Executor) {}

  async createRoom(room: RoomRecord): Promise<void> {
    await this.db.run("INSERT INTO rooms (room_id, room_version, creator, created_ts, is_public) VALUES (?, ?, ?, ?, ?)", [
      room.roomId,
      room.roomVersion,
      room.creator,
      room.createdTs,
      room.isPublic ? 1 : 0,
    ]);
  }

  async getRoom(roomId: string): Promise<RoomRecord | undefined> {
    const row = await this.db.get<RoomRow>("SELECT * FROM rooms WHERE room_id = ?", [roomId]);
    return row && toRoom(row);
  }

  async lockRoom(roomId: string): Promise<boolean> {
    return (await this.lockRoomVersion(roomId)) !== undefined;
  }

  async lockRoomVersion(roomId: string): Promise<string | undefined> {
    return (await this.db.get<{ room_version: string }>(Q.lockRoom, [roomId]))?.room_version;
  }

  async setRoomPublic(roomId: string, isPublic: boolean): Promise<void> {
    await this.db.run("UPDATE rooms SET is_public = ? WHERE room_id = ?", [isPublic ? 1 : 0, roomId]);
  }

  appendEvent(e: NewEvent): Promise<number> {
    return this.db.transaction((tx) => this.#append(tx, e));
  }

  async #append(tx: Transaction, e: NewEvent): Promise<number> {
    const ordering = await tx.nextPosition("events");
    await tx.run(Q.insertEvent, [
      ordering,
      e.eventId,
      e.roomId,
      e.type,
      e.stateKey,
      e.sender,
      e.originServerTs,
      e.depth,
      e.json,
      e.txn?.deviceId ?? null,
      e.txn?.txnId ?? null,
      e.stateGroup ?? null,
      e.outlier ? 1 : 0,
    ]);
    if (e.txn) await tx.run(Q.insertTxn, [e.txn.userId, e.txn.deviceId, e.txn.key ?? e.txn.txnId, e.eventId]);
    if (e.stickyUntil !== undefined) {
      await tx.run(Q.pruneSticky, [e.originServerTs]);
      await tx.run(Q.insertSticky, [ordering, e.roomId, e.stickyUntil]);
    }
    if (e.stateKey !== null && e.updatesCurrentState !== false) {
      await setCurrentStateEntry(tx, e.roomId, { type: e.type, stateKey: e.stateKey, eventId: e.eventId, streamOrdering: ordering, membership: e.membership });
    }
    return ordering;
  }

  async getTip(roomId: string): Promise<RoomTip | undefined> {
    const row = await this.db.get<{ event_id: string; depth: number; stream_ordering: number }>(Q.tip, [roomId]);
    return row && { eventId: row.event_id, depth: row.depth, streamOrdering: row.stream_ordering };
  }

  async getEvent(eventId: string): Promise<StoredEvent | undefined> {
    const row = await this.db.get<EventRow>(Q.event, [eventId]);
    return row && toEvent(row);
  }

  async getEventByTxn(userId: string, deviceId: string, key: string): Promise<string | undefined> {
    return (await this.db.get<{ event_id: string }>(Q.txn, [userId, deviceId, key]))?.event_id;
  }

  async redactEvent(eventId: string, redactedJson: string, redactedBy: string): Promise<void> {
    await this.db.run(Q.redact, [redactedJson, redactedBy, eventId]);
  }

  async currentState(roomId: string): Promise<StateMap> {
    return toStateMap(await this.db.all<EventRow>(Q.currentState, [roomId]));
  }

  async currentStateEvents(roomId: string, keys: readonly (readonly [string, string])[]): Promise<StateMap> {
    if (keys.length === 0) return new Map();
    return toStateMap(await this.db.all<EventRow>(Q.currentStateEvents, [JSON.stringify(keys), roomId]));
  }

  async currentStateEvent(roomId: string, type: string, stateKey: string): Promise<StoredEvent | undefined> {
    const row = await this.db.get<EventRow>(Q.currentStateEvent, [roomId, type, stateKey]);
    return row && toEvent(row);
  }

  async stateAt(roomId: string, streamOrdering: number): Promise<StateMap> {
    return toStateMap(await this.db.all<EventRow>(Q.stateAt, [roomId, streamOrdering]));
  }

  async stateDelta(roomId: string, from: number, to: number): Promise<StateMap> {
    if (to <= from) return new Map();
    return toStateMap(await this.db.all<EventRow>(Q.stateDelta, [roomId, from, to]));
  }

  async eventsBetween(roomId: string, from: number, to: number, limit: number) {
    const rows = await this.db.all<EventRow>(Q.between, [roomId, from, to, limit + 1]);
    const limited = rows.length > limit;
    return { events: rows.slice(0, limit).reverse().map(toEvent), limited };
  }

  async eventsBetweenMany(roomIds: readonly string[], from: number, to: number, limit: number) {
    const out = new Map<string, { events: StoredEvent[]; limited: boolean }>();
    if (roomIds.length === 0) return out;
    let rows: EventRow[];
    if (this.db.dialect === "postgres") {
      rows = await this.db.all<EventRow>(Q.betweenMany, [JSON.stringify(roomIds), from, to, limit + 1]);
    } else {
      rows = [];
      for (const roomId of roomIds) rows.push(...(await this.db.all<EventRow>(Q.between, [roomId, from, to, limit + 1])));
    }
    const byRoom = new Map<string, EventRow[]>(roomIds.map((id) => [id, []]));
    for (const r of rows) byRoom.get(r.room_id)?.push(r);
    for (const [roomId, list] of byRoom) {
      list.sort((a, b) => b.stream_ordering - a.stream_ordering);
      out.set(roomId, { events: list.slice(0, limit).reverse().map(toEvent), limited: list.length > limit });
    }
    return out;
  }

  async paginate(roomId: string, from: number, dir: "b" | "f", limit: number, to?: number): Promise<StoredEvent[]> {
    const rows =
      dir === "b"
        ? await this.db.all<EventRow>(Q.back, [roomId, from, to ?? HISTORY_FLOOR, limit])
        : await this.db.all<EventRow>(Q.forward, [roomId, from, to ?? Number.MAX_SAFE_INTEGER, limit]);
    return rows.map(toEvent);
  }

  async liveStickyEvents(roomId: string, from: number, to: number, now: number): Promise<StoredEvent[]> {
    return (await this.db.all<EventRow>(Q.liveSticky, [roomId, from, to, now])).map(toEvent);
  }

  async liveStickyEventsMany(roomIds: readonly string[], from: number, to: number, now: number): Promise<StoredEvent[]> {
    if (roomIds.length === 0 || to <= from) return [];
    return (await this.db.all<EventRow>(Q.liveStickyMany, [JSON.stringify(roomIds), from, to, now])).map(toEvent);
  }

  async getEvents(eventIds: readonly string[]): Promise<StoredEvent[]> {
    if (eventIds.length === 0) return [];
    return (await this.db.all<EventRow>(Q.eventsByIds, [JSON.stringify(eventIds)])).map(toEvent);
  }

  async latestOfTypes(caps: readonly (readonly [string, number])[], types: readonly string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    if (caps.length === 0 || types.length === 0) return out;
    const rows = await this.db.all<{ room_id: string; position: number | string | null }>(Q.latestOfTypes, [
      JSON.stringify(types),
      JSON.stringify(caps),
    ]);
    // PostgreSQL answers BIGINT aggregates as text.
    for (const r of rows) if (r.position !== null) out.set(r.room_id, Number(r.position));
    return out;
  }

  async currentStateMany(
    roomIds: readonly string[],
    types: readonly string[],
    keys: readonly (readonly [string, string])[],
  ): Promise<StoredEvent[]> {
    if (roomIds.length === 0 || (types.length === 0 && keys.length === 0)) return [];
    const params = [JSON.stringify(roomIds), JSON.stringify(types), JSON.stringify(keys)];
    return (await this.db.all<EventRow>(Q.currentStateMany, params)).map(toEvent);
  }

  async forgottenRooms(userId: string): Promise<string[]> {
    return (await this.db.all<{ room_id: string }>("SELECT room_id FROM forgotten_rooms WHERE user_id = ?", [userId])).map((r) => r.room_id);
  }

  async membershipsIn(roomIds: readonly string[]): Promise<MembershipRecord[]> {
    if (roomIds.length === 0) return [];
    return (await this.db.all<MembershipRow>(Q.membershipsIn, [JSON.stringify(roomIds)])).map(toMembership);
  }

  async membership(roomId: string, userId: string): Promise<MembershipRecord | undefined> {
    const row = await this.db.get<MembershipRow>(Q.membership, [roomId, userId]);
    return row && toMembership(row);
  }

  async membershipsOf(userId: string): Promise<MembershipRecord[]> {
    return (await this.db.all<MembershipRow>(Q.membershipsOf, [userId])).map(toMembership);
  }

  async membersOf(roomId: string, membership: string): Promise<MembershipRecord[]> {
    return (await this.db.all<MembershipRow>(Q.membersOf, [roomId, membership])).map(toMembership);
  }

  async membershipChangesAround(userId: string, roomIds: readonly string[], from: number, to: number): Promise<MembershipRecord[]> {
    if (to <= from) return [];
    return (await this.db.all<MembershipRow>(Q.membershipChangesAround, [from, to, userId, JSON.stringify(roomIds)])).map(toMembership);
  }

  async joinedRoomsOfUsers(userIds: readonly string[]): Promise<MembershipRecord[]> {
    if (userIds.length === 0) return [];
    return (await this.db.all<MembershipRow>(Q.joinedRoomsOfUsers, [JSON.stringify(userIds)])).map(toMembership);
  }

  async membershipChanges(userId: string, from: number, to: number): Promise<MembershipRecord[]> {
    if (to <= from) return [];
    return (await this.db.all<MembershipRow>(Q.membershipChanges, [userId, from, to])).map(toMembership);
  }

  async everJoined(userId: string, roomId: string, upTo: number): Promise<boolean> {
    return (await this.db.get(Q.everJoined, [userId, roomId, upTo])) !== undefined;
  }

  async roomsWithEventsBetween(roomIds: string[], from: number, to: number): Promise<string[]> {
    if (roomIds.length === 0 || to <= from) return [];
    return (await this.db.all<{ room_id: string }>(Q.roomsWithEvents, [JSON.stringify(roomIds), from, to])).map((r) => r.room_id);
  }

  async forgetRoom(userId: string, roomId: string): Promise<void> {
    await this.db.run("INSERT INTO forgotten_rooms (user_id, room_id) VALUES (?, ?) ON CONFLICT DO NOTHING", [userId, roomId]);
  }

  async isForgotten(userId: string, roomId: string): Promise<boolean> {
    return (await this.db.get("SELECT 1 AS one FROM forgotten_rooms WHERE user_id = ? AND room_id = ?", [userId, roomId])) !== undefined;
  }

  async setAlias(alias: string, roomId: string, creator: string): Promise<boolean> {
    const n = await this.db.run("INSERT INTO room_aliases (alias, room_id, creator) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [
      alias,
      roomId,
      creator,
    ]);
    return n > 0;
  }

  async getAlias(alias: string) {
    const row = await this.db.get<{ room_id: string; creator: string }>("SELECT room_id, creator FROM room_aliases WHERE alias = ?", [
      alias,
    ]);
    return row && { roomId: row.room_id, creator: row.creator };
  }

  async deleteAlias(alias: string): Promise<boolean> {
    return (await this.db.run("DELETE FROM room_aliases WHERE alias = ?", [alias])) > 0;
  }

  async aliasesOf(roomId: string): Promise<string[]> {
    return (await this.db.all<{ alias: string }>("SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY alias", [roomId])).map(
      (r) => r.alias,
    );
  }
}
