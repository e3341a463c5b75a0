/** Pushers over SQL; see storage/pushers.ts. Every claim is one conditional statement. */
import type { NewPusher, PendingPush, PusherClaim, PusherKey, PusherProgress, PusherRecord, PusherStore } from "../pushers.js";
import { inJsonList, limitRows, SKIP_LOCKED, sql, type Executor } from "./executor.js";
import { ACTION_TABLES, bothTables, READ_UP_TO, twice } from "./push.js";

interface Row {
  user_id: string;
  app_id: string;
  pushkey: string;
  kind: string;
  app_display_name: string;
  device_display_name: string;
  profile_tag: string | null;
  lang: string;
  data: string;
  device_id: string | null;
  created_ts: number;
  last_stream_ordering: number;
  last_success_ts: number | null;
  failing_since: number | null;
  claimed_by: string | null;
  lease_until: number | null;
}

const orNull = (v: number | string | null) => (v === null ? null : Number(v));

const toRecord = (r: Row): PusherRecord => ({
  userId: r.user_id,
  appId: r.app_id,
  pushkey: r.pushkey,
  kind: r.kind,
  appDisplayName: r.app_display_name,
  deviceDisplayName: r.device_display_name,
  profileTag: r.profile_tag,
  lang: r.lang,
  data: JSON.parse(r.data) as Record<string, unknown>,
  deviceId: r.device_id,
  createdTs: Number(r.created_ts),
  lastStreamOrdering: Number(r.last_stream_ordering),
  lastSuccessTs: orNull(r.last_success_ts),
  failingSince: orNull(r.failing_since),
  claimedBy: r.claimed_by,
  leaseUntil: orNull(r.lease_until),
});

interface PendingRow {
  room_id: string;
  event_id: string;
  stream_ordering: number;
  actions: string;
  ts: number;
}

const PENDING_COLUMNS = "a.room_id, a.event_id, a.stream_ordering, a.actions, a.ts";

const toPending = (r: PendingRow): Omit<PendingPush, "read"> => ({
  roomId: r.room_id,
  eventId: r.event_id,
  streamOrdering: Number(r.stream_ordering),
  actions: r.actions,
  ts: Number(r.ts),
});

const KEY = "app_id = ? AND pushkey = ? AND user_id = ?";
const keyParams = (k: PusherKey) => [k.appId, k.pushkey, k.userId];
const idOf = (k: PusherKey) => `${k.appId}\u0000${k.pushkey}\u0000${k.userId}`;
/** The order rows are written in by every statement that takes several, so that two processes touching overlapping rows do not deadlock. */
const inKeyOrder = (x: PusherKey, y: PusherKey) => {
  const a = idOf(x);
  const b = idOf(y);
  return a < b ? -1 : a > b ? 1 : 0;
};

/** Nobody holds the row: never claimed, released, the lease ran out, or the holder is gone. Takes `now` and the live list. */
const FREE = sql`(claimed_by IS NULL OR lease_until <= ? OR NOT ${inJsonList("claimed_by")})`;

/** The recorded badge was read before the one given (a parameter, in microseconds): the given one may replace it. */
const BADGE_IS_OLDER = "(last_badge_read_us IS NULL OR last_badge_read_us < ?)";

/** The user has notifications after the pusher's position. */
const HAS_PENDING = ACTION_TABLES.map(
  (table) => `EXISTS (SELECT 1 FROM ${table} a WHERE a.user_id = p.user_id AND a.notify = 1 AND a.stream_ordering > p.last_stream_ordering)`,
).join(" OR ");

export class SqlPusherStore implements PusherStore {
  constructor(private readonly db: Executor) {}

  set(p: NewPusher, append: boolean): Promise<void> {
    return this.db.transaction(async (tx) => {
      // The spec's `append: false`: one pushkey of an app serves one user at a time.
      if (!append) await tx.run("DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id != ?", [p.appId, p.pushkey, p.userId]);
      // A pusher set again starts from now with a clean slate (as in Synapse), though never
      // back (another process's "now" may lag); whoever is delivering for it keeps its claim
      // and picks up the new settings on its next read.
      await tx.run(
        `INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data,
           device_id, created_ts, last_stream_ordering)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = excluded.kind, app_display_name = excluded.app_display_name,
           device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag, lang = excluded.lang,
           data = excluded.data, device_id = excluded.device_id, failing_since = NULL,
           last_stream_ordering = CASE WHEN pushers.last_stream_ordering > excluded.last_stream_ordering
             THEN pushers.last_stream_ordering ELSE excluded.last_stream_ordering END`,
        [
          p.userId,
          p.appId,
          p.pushkey,
          p.kind,
          p.appDisplayName,
          p.deviceDisplayName,
          p.profileTag,
          p.lang,
          JSON.stringify(p.data),
          p.deviceId,
          p.createdTs,
          p.lastStreamOrdering,
        ],
      );
    });
  }

  async delete(key: PusherKey): Promise<boolean> {
    return (await this.db.run(`DELETE FROM pushers WHERE ${KEY}`, keyParams(key))) > 0;
  }

  async get(key: PusherKey): Promise<PusherRecord | undefined> {
    const row = await this.db.get<Row>(`SELECT * FROM pushers WHERE ${KEY}`, keyParams(key));
    return row && toRecord(row);
  }

  async listOf(userId: string): Promise<PusherRecord[]> {
    const rows = await this.db.all<Row>("SELECT * FROM pushers WHERE user_id = ? ORDER BY created_ts, app_id, pushkey", [userId]);
    return rows.map(toRecord);
  }

  async ofUsers(userIds: readonly string[]): Promise<PusherRecord[]> {
    if (userIds.length === 0) return [];
    const rows = await this.db.all<Row>(sql`SELECT * FROM pushers WHERE ${inJsonList("user_id")}`, [JSON.stringify(userIds)]);
    return rows.map(toRecord);
  }

  async claim(keys: readonly PusherKey[], claim: PusherClaim): Promise<PusherRecord[]> {
    if (keys.length === 0) return [];
    // One statement each: on PostgreSQL a row another process is claiming at this moment is
    // waited for and then judged again, so exactly one of them gets it. All in one transaction
    // (one commit for a whole room's recipients), taken in key order so that two processes
    // claiming overlapping sets do not deadlock.
    const sorted = [...keys].sort(inKeyOrder);
    return this.db.transaction(async (tx) => {
      const out: PusherRecord[] = [];
      for (const key of sorted) {
        const row = await tx.get<Row>(
          sql`UPDATE pushers SET claimed_by = ?, lease_until = ? WHERE ${KEY} AND (claimed_by = ? OR ${FREE}) RETURNING *`,
          [claim.worker, claim.leaseUntil, ...keyParams(key), claim.worker, claim.now, JSON.stringify(claim.live)],
        );
        if (row) out.push(toRecord(row));
      }
      return out;
    });
  }

  async claimPending(claim: PusherClaim, limit: number): Promise<PusherRecord[]> {
    const rows = await this.db.all<Row>(
      sql`UPDATE pushers SET claimed_by = ?, lease_until = ?
          WHERE (app_id, pushkey, user_id) IN (
            SELECT p.app_id, p.pushkey, p.user_id FROM pushers p
            WHERE ${FREE} AND (${HAS_PENDING})
            LIMIT ? ${SKIP_LOCKED})
          RETURNING *`,
      [claim.worker, claim.leaseUntil, claim.now, JSON.stringify(claim.live), limit],
    );
    return rows.map(toRecord);
  }

  async renew(worker: string, userIds: readonly string[], leaseUntil: number): Promise<void> {
    if (userIds.length === 0) return;
    await this.db.run(sql`UPDATE pushers SET lease_until = ? WHERE claimed_by = ? AND ${inJsonList("user_id")}`, [
      leaseUntil,
      worker,
      JSON.stringify(userIds),
    ]);
  }

  async release(worker: string, keys?: readonly PusherKey[]): Promise<void> {
    if (keys === undefined) {
      await this.db.run("UPDATE pushers SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = ?", [worker]);
      return;
    }
    for (const key of keys) {
      await this.db.run(`UPDATE pushers SET claimed_by = NULL, lease_until = NULL WHERE ${KEY} AND claimed_by = ?`, [...keyParams(key), worker]);
    }
  }

  async pending(userId: string, after: number, count: number): Promise<PendingPush[]> {
    const rows = await this.db.all<PendingRow & { read_up_to: number }>(
      sql`${bothTables(
        (table) => `SELECT ${PENDING_COLUMNS}, ${READ_UP_TO} AS read_up_to FROM ${table} a
                    WHERE a.user_id = ? AND a.notify = 1 AND a.stream_ordering > ?`,
      )} ORDER BY stream_ordering ${limitRows(count)}`,
      twice([userId, after]),
    );
    return rows.map((r) => ({ ...toPending(r), read: Number(r.stream_ordering) <= Number(r.read_up_to) }));
  }

  async pendingEvents(userId: string, eventIds: readonly string[]): Promise<PendingPush[]> {
    if (eventIds.length === 0) return [];
    const rows = await this.db.all<PendingRow>(
      sql`${bothTables(
        (table) =>
          sql`SELECT ${PENDING_COLUMNS} FROM ${table} a
              WHERE a.user_id = ? AND a.stream_ordering IN (SELECT e.stream_ordering FROM events e WHERE ${inJsonList("e.event_id")})
                AND a.notify = 1 AND a.stream_ordering > ${READ_UP_TO}`,
      )} ORDER BY stream_ordering`,
      twice([userId, JSON.stringify(eventIds)]),
    );
    return rows.map((r) => ({ ...toPending(r), read: false }));
  }

  advance(progress: readonly PusherProgress[]): Promise<boolean[]> {
    if (progress.length === 0) return Promise.resolve([]);
    // One commit for a room's worth of pushers. In key order, as claims are taken, so that two
    // processes touching overlapping rows do not deadlock.
    const order = progress.map((_, i) => i).sort((x, y) => inKeyOrder(progress[x]!.key, progress[y]!.key));
    return this.db.transaction(async (tx) => {
      const out = new Array<boolean>(progress.length);
      for (const i of order) {
        const { key, worker, streamOrdering, successTs, badge } = progress[i]!;
        const success = successTs === null ? "" : ", last_success_ts = ?, failing_since = NULL";
        // Both CASEs see the row as it was: the badge and its time go together, or not at all.
        const sentBadge =
          badge === undefined
            ? ""
            : `, last_badge = CASE WHEN ${BADGE_IS_OLDER} THEN ? ELSE last_badge END,
                 last_badge_read_us = CASE WHEN ${BADGE_IS_OLDER} THEN ? ELSE last_badge_read_us END`;
        const n = await tx.run(
          `UPDATE pushers SET last_stream_ordering = CASE WHEN last_stream_ordering < ? THEN ? ELSE last_stream_ordering END${success}${sentBadge}
           WHERE ${KEY} AND claimed_by = ?`,
          [
            streamOrdering,
            streamOrdering,
            ...(successTs === null ? [] : [successTs]),
            ...(badge === undefined ? [] : [badge.readUs, badge.count, badge.readUs, badge.readUs]),
            ...keyParams(key),
            worker,
          ],
        );
        out[i] = n > 0;
      }
      return out;
    });
  }

  async noteBadge(key: PusherKey, badge: { count: number; readUs: number }): Promise<boolean> {
    const n = await this.db.run(
      `UPDATE pushers SET last_badge = ?, last_badge_read_us = ?
       WHERE ${KEY} AND ${BADGE_IS_OLDER} AND (last_badge IS NULL OR last_badge <> ?)`,
      [badge.count, badge.readUs, ...keyParams(key), badge.readUs, badge.count],
    );
    return n > 0;
  }

  async setFailingSince(key: PusherKey, worker: string, since: number | null): Promise<void> {
    await this.db.run(`UPDATE pushers SET failing_since = ? WHERE ${KEY} AND claimed_by = ?`, [since, ...keyParams(key), worker]);
  }
}
