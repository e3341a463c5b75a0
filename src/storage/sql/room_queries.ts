/**
 * The room store's rows, how they become records, and its query texts (one set for both
 * dialects; where they differ, both texts side by side). Used by rooms.ts.
 */
import { stateKeyOf, type MembershipRecord, type RoomRecord, type StateMap, type StoredEvent } from "../rooms.js";
import { FOR_UPDATE, inJsonList, sql } from "./executor.js";

export interface EventRow {
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

export interface MembershipRow {
  room_id: string;
  user_id: string;
  membership: string;
  event_id: string;
  stream_ordering: number;
}

export interface RoomRow {
  room_id: string;
  room_version: string;
  creator: string;
  created_ts: number;
  is_public: number;
}

export const toEvent = (r: EventRow): StoredEvent => ({
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

export const toMembership = (r: MembershipRow): MembershipRecord => ({
  roomId: r.room_id,
  userId: r.user_id,
  membership: r.membership,
  eventId: r.event_id,
  streamOrdering: r.stream_ordering,
});

export const toRoom = (r: RoomRow): RoomRecord => ({
  roomId: r.room_id,
  roomVersion: r.room_version,
  creator: r.creator,
  createdTs: r.created_ts,
  isPublic: r.is_public === 1,
});

export function toStateMap(rows: EventRow[]): StateMap {
  const map: StateMap = new Map();
  for (const r of rows) map.set(stateKeyOf(r.type, r.state_key ?? ""), toEvent(r));
  return map;
}

export const Q = {
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
  // The keys drive, each found through current_state's key: joined the other way round (both
  // planners' choice) the query read every state event of the room, so that each send into a
  // room of thousands cost thousands of lookups. SQLite keeps a CROSS JOIN's order; PostgreSQL
  // evaluates a LATERAL subquery per key (its LIMIT, which the key makes true anyway, keeps the
  // planner from flattening it back into the join).
  currentStateEvents: {
    sqlite: `SELECT e.* FROM json_each(?) k CROSS JOIN current_state c CROSS JOIN events e
      WHERE c.room_id = ? AND c.type = json_extract(k.value, '$[0]') AND c.state_key = json_extract(k.value, '$[1]')
        AND e.event_id = c.event_id`,
    postgres: `SELECT e.* FROM json_array_elements(?::json) k
      CROSS JOIN LATERAL (SELECT c.event_id FROM current_state c WHERE c.room_id = ? AND c.type = k.value->>0 AND c.state_key = k.value->>1 LIMIT 1) c
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
  joinedAmong: sql`SELECT * FROM memberships WHERE ${inJsonList("user_id")} AND ${inJsonList("room_id")} AND membership = 'join'`,
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
