/** Push actions over SQL; see storage/push.ts. */
import type { NotificationCounts, NotificationRecord, PushActionRecord, PushActionStore, RoomCounts } from "../push.js";
import { inJsonList, jsonRows, sql, type Executor, type Query } from "./executor.js";

interface ActionRow {
  user_id: string;
  room_id: string;
  event_id: string;
  stream_ordering: number;
  thread_id: string;
  actions: string;
  notify: number;
  highlight: number;
  ts: number;
}

/** The columns of both push-action tables, in one order (their keys order them differently). */
const COLUMNS = "user_id, room_id, event_id, stream_ordering, thread_id, actions, notify, highlight, ts";
const COLUMNS_OF_A = COLUMNS.split(", ").map((c) => `a.${c}`).join(", ");

/**
 * Where push actions are: written to the staging table (keyed by room and position, so an
 * event's rows are written together), then moved by `settle` to the user-keyed table that
 * per-user reads use. A row is in one or the other, never both, so a reader reads both.
 */
export const ACTION_TABLES = ["event_push_actions", "event_push_actions_staging"] as const;
const STAGING = ACTION_TABLES[1];

/**
 * The query `arm` makes for each push-action table, as one `UNION ALL`; its parameters come
 * `twice`. `sameRoom` matches `a`'s room to `m`'s, with the staging table's room-first key out
 * of the planners' reach (an expression): there a room's rows are every member's, and each
 * member's count would scan them all, where the per-user index reaches only the member's own.
 */
export function bothTables(arm: (table: string, sameRoom: string) => Query): Query {
  return sql`${arm(ACTION_TABLES[0], "a.room_id = m.room_id")} UNION ALL ${arm(ACTION_TABLES[1], "(a.room_id || '') = m.room_id")}`;
}
export const twice = <T>(params: readonly T[]): T[] => [...params, ...params];

/**
 * The position `row`'s user has read up to in its room: the newest of their `m.read` and
 * `m.read.private` receipts whose thread satisfies `threads` (a condition on `r.thread_id`), or
 * `otherwise` without one.
 */
const readUpTo = (row: string, threads: string, otherwise = "0") => `COALESCE((
  SELECT MAX(e.stream_ordering) FROM receipts r JOIN events e ON e.event_id = r.event_id
  WHERE r.room_id = ${row}.room_id AND r.user_id = ${row}.user_id
    AND r.receipt_type IN ('m.read', 'm.read.private') AND ${threads}
), ${otherwise})`;

/** Where the user has read up to for the row `a`'s thread: receipts unthreaded or in that thread. */
export const READ_UP_TO = readUpTo("a", "(r.thread_id = '' OR r.thread_id = a.thread_id)");

/**
 * Staged rows arrive as one JSON array of rows (in COLUMNS' order): one parameter and one
 * statement whatever the number of recipients. A parameter per value made a statement of its own
 * for each room size, each kept prepared, and failed outright past SQLite's 32,766 parameters
 * (an event notifying 3,641 members) or PostgreSQL's 65,535.
 */
const STAGE_ROWS: Query = sql`INSERT INTO ${STAGING} (${COLUMNS})
  SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2, ${{ sqlite: "r.value ->> 3", postgres: "(r.value ->> 3)::bigint" }}, r.value ->> 4, r.value ->> 5,
    ${{ sqlite: "r.value ->> 6, r.value ->> 7, r.value ->> 8", postgres: "(r.value ->> 6)::int, (r.value ->> 7)::int, (r.value ->> 8)::bigint" }}
  FROM ${jsonRows("r")} WHERE true ON CONFLICT DO NOTHING`;

const toRecord = (r: ActionRow): PushActionRecord => ({
  userId: r.user_id,
  roomId: r.room_id,
  eventId: r.event_id,
  streamOrdering: Number(r.stream_ordering),
  threadId: r.thread_id,
  actions: r.actions,
  notify: Number(r.notify) === 1,
  highlight: Number(r.highlight) === 1,
  ts: Number(r.ts),
});

export class SqlPushActionStore implements PushActionStore {
  constructor(private readonly db: Executor) {}

  async add(records: readonly PushActionRecord[]): Promise<void> {
    if (records.length === 0) return;
    // Every recipient of an event (or a batch of events) in one statement, into the staging
    // table, where an event's rows are side by side; `settle` moves them on.
    await this.db.run(
      STAGE_ROWS,
      [JSON.stringify(records.map((r) => [r.userId, r.roomId, r.eventId, r.streamOrdering, r.threadId, r.actions, r.notify ? 1 : 0, r.highlight ? 1 : 0, r.ts]))],
    );
  }

  settle(): Promise<number> {
    return this.db.transaction(async (tx) => {
      if (tx.dialect === "sqlite") {
        // One writer at a time: nothing can come between the copy and the delete.
        const moved = await tx.run(`INSERT INTO event_push_actions (${COLUMNS}) SELECT ${COLUMNS} FROM ${STAGING} WHERE true ON CONFLICT DO NOTHING`);
        await tx.run(`DELETE FROM ${STAGING}`);
        return moved;
      }
      // The delete locks what it moves: a receipt's `forgetRead` that deletes the same rows
      // either waits and then finds them moved, or goes first and they are not moved at all.
      return tx.run(
        `WITH moved AS (DELETE FROM ${STAGING} RETURNING ${COLUMNS})
         INSERT INTO event_push_actions (${COLUMNS}) SELECT ${COLUMNS} FROM moved ON CONFLICT DO NOTHING`,
      );
    });
  }

  async counts(userId: string, roomIds: readonly string[], upTo: number): Promise<Map<string, RoomCounts>> {
    const out = new Map<string, RoomCounts>();
    if (roomIds.length === 0) return out;
    // Room by room, as for badges: each room is scanned from where its count starts, the
    // user's unthreaded receipt or else their membership (the join), and a threaded row is
    // checked against its thread's receipt too. Per row, the three lookups cost a /sync of a
    // user with a long unread backlog milliseconds.
    const rows = await this.db.all<{ room_id: string; thread_id: string; notify: number; highlight: number }>(
      bothTables(
        (table, sameRoom) =>
          sql`SELECT a.room_id, a.thread_id, SUM(a.notify) AS notify, SUM(a.highlight) AS highlight
              FROM memberships m CROSS JOIN ${table} a
              WHERE m.user_id = ? AND ${inJsonList("m.room_id")} AND a.user_id = m.user_id AND ${sameRoom}
                AND a.stream_ordering > ${readUpTo("m", "r.thread_id = ''", "m.stream_ordering")} AND a.stream_ordering <= ? AND a.notify = 1
                AND (a.thread_id = '' OR a.stream_ordering > ${readUpTo("a", "r.thread_id = a.thread_id")})
              GROUP BY a.room_id, a.thread_id`,
      ),
      twice([userId, JSON.stringify(roomIds), upTo]),
    );
    // A room's or thread's rows may be in both tables: its counts are the two rows' sum.
    for (const r of rows) {
      let room = out.get(r.room_id);
      if (!room) out.set(r.room_id, (room = { notify: 0, highlight: 0, threads: new Map<string, NotificationCounts>() }));
      const notify = Number(r.notify);
      const highlight = Number(r.highlight);
      room.notify += notify;
      room.highlight += highlight;
      const thread = room.threads.get(r.thread_id);
      if (thread) {
        thread.notify += notify;
        thread.highlight += highlight;
      } else {
        room.threads.set(r.thread_id, { notify, highlight });
      }
    }
    return out;
  }

  async badges(userIds: readonly string[], upTo: number): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    if (userIds.length === 0) return out;
    const users = JSON.stringify(userIds);
    const add = (rows: { user_id: string; n: number }[]) => {
      for (const r of rows) out.set(r.user_id, (out.get(r.user_id) ?? 0) + Number(r.n));
    };
    add(
      await this.db.all(
        // Room by room (CROSS JOIN keeps SQLite from starting at the actions), each scanned
        // from the room's unthreaded receipt: that position is looked up once per room, and a
        // thread's own receipt only for a threaded row. Per row, as READ_UP_TO is, the lookups
        // made a push to a user with thousands of unread notifications cost milliseconds.
        bothTables(
          (table, sameRoom) =>
            sql`SELECT m.user_id, COUNT(*) AS n FROM memberships m CROSS JOIN ${table} a
                WHERE ${inJsonList("m.user_id")} AND m.membership = 'join' AND a.user_id = m.user_id AND ${sameRoom}
                  AND a.stream_ordering > ${readUpTo("m", "r.thread_id = ''")} AND a.stream_ordering <= ? AND a.notify = 1
                  AND (a.thread_id = '' OR a.stream_ordering > ${readUpTo("a", "r.thread_id = a.thread_id")})
                GROUP BY m.user_id`,
        ),
        twice([users, upTo]),
      ),
    );
    add(await this.db.all(sql`SELECT user_id, COUNT(*) AS n FROM memberships WHERE ${inJsonList("user_id")} AND membership = 'invite' GROUP BY user_id`, [users]));
    return out;
  }

  async notifications(userId: string, opts: { before?: number; limit: number; onlyHighlight: boolean }): Promise<NotificationRecord[]> {
    const highlightOnly = opts.onlyHighlight ? "AND a.highlight = 1" : "";
    const rows = await this.db.all<ActionRow & { read_up_to: number }>(
      sql`${bothTables(
        (table) => `SELECT ${COLUMNS_OF_A}, ${READ_UP_TO} AS read_up_to FROM ${table} a
                    WHERE a.user_id = ? AND a.notify = 1 AND a.stream_ordering < ? ${highlightOnly}`,
      )} ORDER BY stream_ordering DESC LIMIT ?`,
      [...twice([userId, opts.before ?? Number.MAX_SAFE_INTEGER]), opts.limit],
    );
    return rows.map((r) => ({ ...toRecord(r), read: Number(r.stream_ordering) <= Number(r.read_up_to) }));
  }

  forgetRead(userId: string, roomId: string, upTo: number, threadId: string | null): Promise<void> {
    const thread = threadId === null ? "" : " AND thread_id = ?";
    const params = threadId === null ? [roomId, userId, upTo] : [roomId, userId, upTo, threadId];
    return this.db.transaction(async (tx) => {
      // The staged rows first: if `settle` is moving them, this waits for it, and the second
      // statement then finds them in the other table (see `settle`).
      for (const table of [STAGING, ACTION_TABLES[0]]) {
        await tx.run(`DELETE FROM ${table} WHERE room_id = ? AND user_id = ? AND stream_ordering <= ? AND highlight = 0${thread}`, params);
      }
    });
  }

  async prune(before: number): Promise<number> {
    let pruned = 0;
    for (const table of ACTION_TABLES) pruned += await this.db.run(`DELETE FROM ${table} WHERE ts < ?`, [before]);
    return pruned;
  }
}
