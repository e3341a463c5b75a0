/** Rooms as a DAG (see ../room_dag.ts): one set of queries for both dialects. */
import type { BackfilledEvent, CurrentStateEntry, EventDagRecord, Extremity, NewStateGroup, RoomDagHead, RoomDagStore, StoredPdu } from "../room_dag.js";
import type { RoomRecord } from "../rooms.js";
import { FOR_UPDATE, inJsonList, sql, type Executor } from "./executor.js";
import { setCurrentStateEntry } from "./rooms.js";

const Q = {
  lock: sql`SELECT room_version, extremities, state_group FROM rooms WHERE room_id = ? ${FOR_UPDATE}`,
  setDag: "UPDATE rooms SET extremities = ?, state_group = ? WHERE room_id = ?",
  insertGroup: "INSERT INTO state_groups (id, room_id, prev_group, delta, chain) VALUES (?, ?, ?, ?, ?)",
  // The group and its ancestors in one statement; chains are short (a full map every few dozen).
  chain: `WITH RECURSIVE g(id, prev_group, delta, chain, n) AS (
      SELECT id, prev_group, delta, chain, 0 FROM state_groups WHERE id = ?
      UNION ALL SELECT s.id, s.prev_group, s.delta, s.chain, g.n + 1 FROM state_groups s JOIN g ON s.id = g.prev_group)
    SELECT id, prev_group, delta, chain FROM g ORDER BY n`,
  dagRecords: sql`SELECT event_id, room_id, stream_ordering, state_group, outlier FROM events WHERE ${inJsonList("event_id")}`,
  pdus: sql`SELECT event_id, room_id, json, NULL AS rejected, 1 - outlier AS in_timeline, 1 AS in_events, 0 AS soft_failed FROM events
    WHERE ${inJsonList("event_id")}
    UNION ALL SELECT event_id, room_id, json, rejected, 0 AS in_timeline, 0 AS in_events,
      CASE WHEN state_group IS NULL THEN 0 ELSE 1 END AS soft_failed FROM event_outliers WHERE ${inJsonList("event_id")}`,
  insertOutlier: `INSERT INTO event_outliers (event_id, room_id, json, rejected, received_ts) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (event_id) DO NOTHING`,
  insertSoftFailed: `INSERT INTO event_outliers (event_id, room_id, json, rejected, received_ts, state_group) VALUES (?, ?, ?, NULL, ?, ?)
    ON CONFLICT (event_id) DO UPDATE SET rejected = NULL, state_group = excluded.state_group`,
  softFailedGroups: sql`SELECT event_id, state_group FROM event_outliers WHERE ${inJsonList("event_id")} AND state_group IS NOT NULL`,
  // Two servers' invites, or two users' joins, may make the same unknown room at once.
  ensureRoom: `INSERT INTO rooms (room_id, room_version, creator, created_ts, is_public) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (room_id) DO NOTHING`,
  removeState: "DELETE FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
  removeMembership: "DELETE FROM memberships WHERE room_id = ? AND user_id = ?",
  remoteJoined: "SELECT user_id FROM memberships WHERE room_id = ? AND membership = 'join' AND user_id NOT LIKE ? ESCAPE '\\'",
  oldest: "SELECT event_id, room_id, json FROM events WHERE room_id = ? AND outlier = 0 ORDER BY stream_ordering ASC LIMIT 1",
  // Negative positions, each lower than any before: the negation of a sequence.
  nextBackfill: {
    sqlite: "UPDATE stream_sequences SET last_value = last_value + 1 WHERE name = 'backfill' RETURNING last_value AS value",
    postgres: "SELECT nextval('backfill_ordering') AS value",
  },
  insertBackfilled: `INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, origin_server_ts, depth, json, outlier)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (event_id) DO NOTHING`,
  addPendingRedaction: `INSERT INTO pending_redactions (room_id, target_event_id, redaction_event_id) VALUES (?, ?, ?)
    ON CONFLICT (target_event_id, redaction_event_id) DO NOTHING`,
  pendingRedactions: "SELECT room_id, redaction_event_id FROM pending_redactions WHERE target_event_id = ? ORDER BY redaction_event_id",
  deletePendingRedactions: "DELETE FROM pending_redactions WHERE target_event_id = ?",
} as const;

export class SqlRoomDagStore implements RoomDagStore {
  constructor(private readonly db: Executor) {}

  async lockRoomDag(roomId: string): Promise<RoomDagHead | undefined> {
    const row = await this.db.get<{ room_version: string; extremities: string | null; state_group: string | null }>(Q.lock, [roomId]);
    if (!row) return undefined;
    return {
      roomVersion: row.room_version,
      extremities: row.extremities === null ? null : (JSON.parse(row.extremities) as [string, number][]).map(([eventId, depth]) => ({ eventId, depth })),
      stateGroup: row.state_group,
    };
  }

  async setRoomDag(roomId: string, extremities: readonly Extremity[], stateGroup: string | null): Promise<void> {
    await this.db.run(Q.setDag, [JSON.stringify(extremities.map((e) => [e.eventId, e.depth])), stateGroup, roomId]);
  }

  async insertStateGroup(g: NewStateGroup): Promise<void> {
    await this.db.run(Q.insertGroup, [g.id, g.roomId, g.prevGroup, JSON.stringify(g.delta), g.chain]);
  }

  async stateGroupChain(id: string) {
    const rows = await this.db.all<{ id: string; prev_group: string | null; delta: string; chain: number }>(Q.chain, [id]);
    return rows.map((r) => ({ id: r.id, prevGroup: r.prev_group, delta: JSON.parse(r.delta) as Record<string, string>, chain: r.chain }));
  }

  async eventDagRecords(eventIds: readonly string[]): Promise<Map<string, EventDagRecord>> {
    const out = new Map<string, EventDagRecord>();
    if (eventIds.length === 0) return out;
    const rows = await this.db.all<{ event_id: string; room_id: string; stream_ordering: number; state_group: string | null; outlier: number }>(
      Q.dagRecords,
      [JSON.stringify(eventIds)],
    );
    for (const r of rows) {
      out.set(r.event_id, { eventId: r.event_id, roomId: r.room_id, streamOrdering: r.stream_ordering, stateGroup: r.state_group, outlier: r.outlier === 1 });
    }
    return out;
  }

  async getPdus(eventIds: readonly string[]): Promise<Map<string, StoredPdu>> {
    const out = new Map<string, StoredPdu>();
    if (eventIds.length === 0) return out;
    const list = JSON.stringify(eventIds);
    const rows = await this.db.all<{
      event_id: string;
      room_id: string;
      json: string;
      rejected: string | null;
      in_timeline: number;
      in_events: number;
      soft_failed: number;
    }>(
      Q.pdus,
      [list, list],
    );
    for (const r of rows) {
      // An event in both places is the events table's (it was an outlier first, then stored as an event).
      if (out.get(r.event_id)?.inEvents) continue;
      out.set(r.event_id, {
        eventId: r.event_id,
        roomId: r.room_id,
        json: r.json,
        rejected: r.rejected,
        inTimeline: Number(r.in_timeline) === 1,
        inEvents: Number(r.in_events) === 1,
        softFailed: Number(r.soft_failed) === 1,
      });
    }
    return out;
  }

  async insertOutlier(eventId: string, roomId: string, json: string, rejected: string | null, receivedTs: number): Promise<void> {
    await this.db.run(Q.insertOutlier, [eventId, roomId, json, rejected, receivedTs]);
  }

  async insertSoftFailed(eventId: string, roomId: string, json: string, stateGroup: string, receivedTs: number): Promise<void> {
    await this.db.run(Q.insertSoftFailed, [eventId, roomId, json, receivedTs, stateGroup]);
  }

  async softFailedGroups(eventIds: readonly string[]): Promise<Map<string, string>> {
    if (eventIds.length === 0) return new Map();
    const rows = await this.db.all<{ event_id: string; state_group: string }>(Q.softFailedGroups, [JSON.stringify(eventIds)]);
    return new Map(rows.map((r) => [r.event_id, r.state_group]));
  }

  async setCurrentState(roomId: string, entries: readonly CurrentStateEntry[]): Promise<void> {
    for (const e of entries) await setCurrentStateEntry(this.db, roomId, e);
  }

  async ensureRoom(room: RoomRecord): Promise<void> {
    await this.db.run(Q.ensureRoom, [room.roomId, room.roomVersion, room.creator, room.createdTs, room.isPublic ? 1 : 0]);
  }

  async removeCurrentState(roomId: string, keys: readonly (readonly [string, string])[]): Promise<void> {
    for (const [type, stateKey] of keys) {
      await this.db.run(Q.removeState, [roomId, type, stateKey]);
      if (type === "m.room.member") await this.db.run(Q.removeMembership, [roomId, stateKey]);
    }
  }

  async remoteJoinedMembers(roomId: string, localServer: string): Promise<string[]> {
    const pattern = `%:${localServer.replace(/[\\%_]/g, (c) => `\\${c}`)}`;
    return (await this.db.all<{ user_id: string }>(Q.remoteJoined, [roomId, pattern])).map((r) => r.user_id);
  }

  async oldestTimelineEvent(roomId: string): Promise<StoredPdu | undefined> {
    const r = await this.db.get<{ event_id: string; room_id: string; json: string }>(Q.oldest, [roomId]);
    return r && { eventId: r.event_id, roomId: r.room_id, json: r.json, rejected: null, inTimeline: true, inEvents: true, softFailed: false };
  }

  async insertBackfilled(events: readonly BackfilledEvent[]): Promise<number> {
    let stored = 0;
    for (const e of events) {
      // A position is spent on a known event too: positions only need to go down, not be dense.
      const next = await this.db.get<{ value: number }>(Q.nextBackfill, []);
      stored += await this.db.run(Q.insertBackfilled, [-next!.value, e.eventId, e.roomId, e.type, e.stateKey, e.sender, e.originServerTs, e.depth, e.json]);
    }
    return stored;
  }

  async addPendingRedaction(roomId: string, targetEventId: string, redactionEventId: string): Promise<void> {
    await this.db.run(Q.addPendingRedaction, [roomId, targetEventId, redactionEventId]);
  }

  async pendingRedactions(targetEventId: string): Promise<{ roomId: string; redactionEventId: string }[]> {
    const rows = await this.db.all<{ room_id: string; redaction_event_id: string }>(Q.pendingRedactions, [targetEventId]);
    return rows.map((r) => ({ roomId: r.room_id, redactionEventId: r.redaction_event_id }));
  }

  async deletePendingRedactions(targetEventId: string): Promise<void> {
    await this.db.run(Q.deletePendingRedactions, [targetEventId]);
  }
}
