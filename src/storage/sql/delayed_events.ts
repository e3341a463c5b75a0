/** Delayed events (MSC4140): every transition is one conditional statement, in both dialects. */
import type {
  DelayedEventRecord,
  DelayedEventStore,
  DelayedListQuery,
  DelayedReason,
  DelayedTxn,
  NewDelayedEvent,
  SendClaim,
} from "../delayed_events.js";
import { FOR_UPDATE, inJsonList, SKIP_LOCKED, sql, type Executor, type SqlValue, type Transaction } from "./executor.js";

interface Row {
  delay_id: string;
  user_id: string;
  room_id: string;
  type: string;
  state_key: string | null;
  content: string;
  delay_ms: number;
  running_since: number;
  send_at: number;
  parent_delay_id: string | null;
  sticky_duration_ms: number | null;
  status: "scheduled" | "sending" | "finalised";
  outcome: "send" | "cancel" | null;
  reason: DelayedReason | null;
  finalised_ts: number | null;
  event_id: string | null;
  error: string | null;
}

const toRecord = (r: Row): DelayedEventRecord => ({
  delayId: r.delay_id,
  userId: r.user_id,
  roomId: r.room_id,
  type: r.type,
  stateKey: r.state_key,
  content: JSON.parse(r.content) as Record<string, unknown>,
  delayMs: r.delay_ms,
  runningSince: r.running_since,
  sendAt: r.send_at,
  parentDelayId: r.parent_delay_id,
  stickyDurationMs: r.sticky_duration_ms,
  status: r.status,
  outcome: r.outcome,
  reason: r.reason,
  finalisedTs: r.finalised_ts,
  eventId: r.event_id,
  error: r.error === null ? null : (JSON.parse(r.error) as Record<string, unknown>),
});

/** What each `order_by` orders by: finalisation time, or the send time while still scheduled, for `origin_server_ts`. */
const ORDER_KEYS = {
  send_ts: "send_at",
  origin_server_ts: "COALESCE(finalised_ts, send_at)",
  running_since: "running_since",
} as const;

/** MSC4140's outcomes: a failed send counts as "error", whatever was being attempted. */
const OUTCOME_FILTERS = {
  send: "status = 'finalised' AND outcome = 'send' AND error IS NULL",
  cancel: "status = 'finalised' AND outcome = 'cancel' AND error IS NULL",
  error: "status = 'finalised' AND error IS NOT NULL",
} as const;

const COUNT = "SELECT COUNT(*) AS n FROM delayed_events WHERE user_id = ? AND status = 'scheduled'";

export class SqlDelayedEventStore implements DelayedEventStore {
  constructor(private readonly db: Executor) {}

  schedule(e: NewDelayedEvent, maxPerUser: number): Promise<boolean> {
    return this.db.transaction(async (tx) => (await this.#insert(tx, e, maxPerUser)) !== undefined);
  }

  scheduleOnce(e: NewDelayedEvent, maxPerUser: number, txn: DelayedTxn): Promise<{ delayId: string; fresh: boolean } | undefined> {
    return this.db.transaction(async (tx) => this.#insert(tx, e, maxPerUser, txn));
  }

  /** Count, look up the transaction and insert, under the user's lock; undefined when at the limit. */
  async #insert(tx: Transaction, e: NewDelayedEvent, maxPerUser: number, txn?: DelayedTxn): Promise<{ delayId: string; fresh: boolean } | undefined> {
    // The user's row lock makes count-then-insert (and a retry's look-up) atomic against the
    // user's other requests on PostgreSQL; SQLite's write transaction already does.
    await tx.get(sql`SELECT user_id FROM users WHERE user_id = ? ${FOR_UPDATE}`, [e.userId]);
    if (txn) {
      const existing = await tx.get<{ delay_id: string }>(
        "SELECT delay_id FROM delayed_events WHERE user_id = ? AND txn_device = ? AND txn_key = ?",
        [e.userId, txn.deviceId, txn.key],
      );
      if (existing) return { delayId: existing.delay_id, fresh: false };
    }
    if (((await tx.get<{ n: number }>(COUNT, [e.userId]))?.n ?? 0) >= maxPerUser) return undefined;
    await tx.run(
      `INSERT INTO delayed_events (delay_id, user_id, room_id, type, state_key, content, delay_ms, running_since, send_at,
         parent_delay_id, sticky_duration_ms, status, txn_device, txn_key)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'scheduled', ?, ?)`,
      [
        e.delayId,
        e.userId,
        e.roomId,
        e.type,
        e.stateKey,
        JSON.stringify(e.content),
        e.delayMs,
        e.runningSince,
        e.runningSince + e.delayMs,
        e.parentDelayId,
        e.stickyDurationMs,
        txn?.deviceId ?? null,
        txn?.key ?? null,
      ],
    );
    return { delayId: e.delayId, fresh: true };
  }

  async get(delayId: string): Promise<DelayedEventRecord | undefined> {
    const row = await this.db.get<Row>("SELECT * FROM delayed_events WHERE delay_id = ?", [delayId]);
    return row && toRecord(row);
  }

  async restart(delayId: string, now: number): Promise<DelayedEventRecord | undefined> {
    const row = await this.db.get<Row>(
      `UPDATE delayed_events SET running_since = ?, send_at = ? + delay_ms WHERE delay_id = ? AND status = 'scheduled'
       RETURNING *`,
      [now, now, delayId],
    );
    return row && toRecord(row);
  }

  async cancel(delayId: string, reason: DelayedReason, now: number): Promise<boolean> {
    const n = await this.db.run(
      `UPDATE delayed_events SET status = 'finalised', outcome = 'cancel', reason = ?, finalised_ts = ?
       WHERE delay_id = ? AND status = 'scheduled'`,
      [reason, now, delayId],
    );
    return n > 0;
  }

  async claimForSending(delayId: string, claim: SendClaim, dueBy?: number): Promise<boolean> {
    const n =
      dueBy === undefined
        ? await this.db.run(
            "UPDATE delayed_events SET status = 'sending', claimed_by = ?, lease_until = ? WHERE delay_id = ? AND status = 'scheduled'",
            [claim.worker, claim.leaseUntil, delayId],
          )
        : await this.db.run(
            `UPDATE delayed_events SET status = 'sending', claimed_by = ?, lease_until = ?
             WHERE delay_id = ? AND status = 'scheduled' AND send_at <= ?`,
            [claim.worker, claim.leaseUntil, delayId, dueBy],
          );
    return n > 0;
  }

  async claimDue(now: number, claim: SendClaim, limit: number, live: readonly string[]): Promise<DelayedEventRecord[]> {
    // The inner SELECT locks what it picks and skips what another process has locked, so
    // processes firing at once share the due rows instead of queueing behind each other.
    const rows = await this.db.all<Row>(
      sql`UPDATE delayed_events SET status = 'sending', claimed_by = ?, lease_until = ?
          WHERE delay_id IN (
            SELECT delay_id FROM delayed_events
            WHERE (status = 'scheduled' AND send_at <= ?)
               OR (status = 'sending' AND (COALESCE(lease_until, 0) <= ? OR claimed_by IS NULL OR NOT ${inJsonList("claimed_by")}))
            ORDER BY send_at LIMIT ? ${SKIP_LOCKED})
          RETURNING *`,
      [claim.worker, claim.leaseUntil, now, now, JSON.stringify(live), limit],
    );
    return rows.map(toRecord).sort((a, b) => a.sendAt - b.sendAt);
  }

  async releaseClaims(delayIds: readonly string[], worker: string): Promise<void> {
    if (delayIds.length === 0) return;
    await this.db.run(
      sql`UPDATE delayed_events SET status = 'scheduled', claimed_by = NULL, lease_until = NULL
          WHERE status = 'sending' AND claimed_by = ? AND ${inJsonList("delay_id")}`,
      [worker, JSON.stringify(delayIds)],
    );
  }

  async finishSending(
    delayId: string,
    result: { eventId: string } | { error: Record<string, unknown> },
    reason: DelayedReason,
    now: number,
  ): Promise<void> {
    const eventId = "eventId" in result ? result.eventId : null;
    const error = "error" in result ? JSON.stringify(result.error) : null;
    await this.db.run(
      `UPDATE delayed_events SET status = 'finalised', outcome = 'send', reason = ?, finalised_ts = ?, event_id = ?, error = ?
       WHERE delay_id = ? AND status = 'sending'`,
      [reason, now, eventId, error, delayId],
    );
  }

  async scheduledOf(userId: string): Promise<DelayedEventRecord[]> {
    const rows = await this.db.all<Row>(
      "SELECT * FROM delayed_events WHERE user_id = ? AND status = 'scheduled' ORDER BY running_since, delay_id",
      [userId],
    );
    return rows.map(toRecord);
  }

  async finalisedOf(userId: string, limit: number): Promise<DelayedEventRecord[]> {
    const rows = await this.db.all<Row>(
      "SELECT * FROM delayed_events WHERE user_id = ? AND status = 'finalised' ORDER BY finalised_ts DESC, delay_id LIMIT ?",
      [userId, limit],
    );
    return rows.map(toRecord);
  }

  async pending(live: readonly string[]) {
    const rows = await this.db.all<{ delay_id: string; send_at: number; status: string; lease_until: number | null; claimed_by: string | null }>(
      "SELECT delay_id, send_at, status, lease_until, claimed_by FROM delayed_events WHERE status != 'finalised'",
    );
    const wakeAt = (r: (typeof rows)[number]) => {
      if (r.status !== "sending") return r.send_at;
      return r.claimed_by !== null && live.includes(r.claimed_by) ? (r.lease_until ?? 0) : 0;
    };
    return rows.map((r) => ({ delayId: r.delay_id, wakeAt: wakeAt(r) }));
  }

  async scheduledStateOthers(roomId: string, type: string, stateKey: string, exceptUser: string): Promise<string[]> {
    const rows = await this.db.all<{ delay_id: string }>(
      `SELECT delay_id FROM delayed_events
       WHERE room_id = ? AND type = ? AND state_key = ? AND status = 'scheduled' AND user_id != ?`,
      [roomId, type, stateKey, exceptUser],
    );
    return rows.map((r) => r.delay_id);
  }

  async childrenOf(parentDelayId: string): Promise<string[]> {
    const rows = await this.db.all<{ delay_id: string }>(
      "SELECT delay_id FROM delayed_events WHERE parent_delay_id = ? AND status = 'scheduled'",
      [parentDelayId],
    );
    return rows.map((r) => r.delay_id);
  }

  async page(q: DelayedListQuery): Promise<{ record: DelayedEventRecord; key: number }[]> {
    const key = ORDER_KEYS[q.orderBy];
    const forward = q.dir === "f";
    const where: string[] = ["user_id = ?"];
    const params: SqlValue[] = [q.userId];
    if (q.from.key === null) {
      // "end": the latest possible point; going forward from there there is nothing.
      if (forward) return [];
    } else if (q.from.afterId === undefined) {
      where.push(`${key} ${forward ? ">=" : "<="} ?`);
      params.push(q.from.key);
    } else {
      const cmp = forward ? ">" : "<";
      where.push(`(${key} ${cmp} ? OR (${key} = ? AND delay_id ${cmp} ?))`);
      params.push(q.from.key, q.from.key, q.from.afterId);
    }
    if (q.status === "scheduled") where.push("status != 'finalised'");
    if (q.status === "finalised") where.push("status = 'finalised'");
    if (q.roomId !== undefined) {
      where.push("room_id = ?");
      params.push(q.roomId);
    }
    if (q.type !== undefined) {
      where.push("type = ?");
      params.push(q.type);
    }
    if (q.outcome !== undefined) where.push(OUTCOME_FILTERS[q.outcome]);
    if (q.reason !== undefined) {
      where.push("status = 'finalised' AND reason = ?");
      params.push(q.reason);
    }
    const order = forward ? "ASC" : "DESC";
    const rows = await this.db.all<Row & { sort_key: number }>(
      `SELECT *, ${key} AS sort_key FROM delayed_events WHERE ${where.join(" AND ")}
       ORDER BY sort_key ${order}, delay_id ${order} LIMIT ?`,
      [...params, q.limit],
    );
    return rows.map((r) => ({ record: toRecord(r), key: Number(r.sort_key) }));
  }

  pruneFinalised(olderThan: number, keepPerUser: number): Promise<number> {
    // Conditional deletes: whichever process runs them, and however often, the result is the
    // same. In a transaction, so that PostgreSQL runs it again should two sweeps deadlock.
    return this.db.transaction(async (tx) => {
      const old = await tx.run("DELETE FROM delayed_events WHERE status = 'finalised' AND finalised_ts < ?", [olderThan]);
      const surplus = await tx.run(
        `DELETE FROM delayed_events WHERE delay_id IN (
           SELECT delay_id FROM (
             SELECT delay_id, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY finalised_ts DESC, delay_id DESC) AS n
             FROM delayed_events WHERE status = 'finalised'
           ) ranked WHERE n > ?)`,
        [keepPerUser],
      );
      return old + surplus;
    });
  }
}
