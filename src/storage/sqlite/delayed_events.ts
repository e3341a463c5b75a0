import type Database from "better-sqlite3";
import type { DelayedEventRecord, DelayedEventStore, DelayedReason, NewDelayedEvent } from "../delayed_events.js";

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

export class SqliteDelayedEventStore implements DelayedEventStore {
  readonly #schedule: (e: NewDelayedEvent, max: number) => boolean;
  readonly #s;

  constructor(db: Database.Database) {
    const s = {
      count: db.prepare<[string], { n: number }>("SELECT COUNT(*) AS n FROM delayed_events WHERE user_id = ? AND status = 'scheduled'"),
      insert: db.prepare(
        `INSERT INTO delayed_events (delay_id, user_id, room_id, type, state_key, content, delay_ms, running_since, send_at,
           parent_delay_id, sticky_duration_ms, status)
         VALUES (@delayId, @userId, @roomId, @type, @stateKey, @content, @delayMs, @runningSince, @sendAt, @parentDelayId,
           @stickyDurationMs, 'scheduled')`,
      ),
      get: db.prepare<[string], Row>("SELECT * FROM delayed_events WHERE delay_id = ?"),
      restart: db.prepare(
        "UPDATE delayed_events SET running_since = @now, send_at = @now + delay_ms WHERE delay_id = @id AND status = 'scheduled'",
      ),
      cancel: db.prepare(
        `UPDATE delayed_events SET status = 'finalised', outcome = 'cancel', reason = ?, finalised_ts = ?
         WHERE delay_id = ? AND status = 'scheduled'`,
      ),
      claim: db.prepare("UPDATE delayed_events SET status = 'sending' WHERE delay_id = ? AND status = 'scheduled'"),
      claimDue: db.prepare(
        "UPDATE delayed_events SET status = 'sending' WHERE delay_id = ? AND status = 'scheduled' AND send_at <= ?",
      ),
      finish: db.prepare(
        `UPDATE delayed_events SET status = 'finalised', outcome = 'send', reason = ?, finalised_ts = ?, event_id = ?, error = ?
         WHERE delay_id = ? AND status = 'sending'`,
      ),
      scheduledOf: db.prepare<[string], Row>(
        "SELECT * FROM delayed_events WHERE user_id = ? AND status = 'scheduled' ORDER BY running_since, delay_id",
      ),
      finalisedOf: db.prepare<[string, number], Row>(
        "SELECT * FROM delayed_events WHERE user_id = ? AND status = 'finalised' ORDER BY finalised_ts DESC, delay_id LIMIT ?",
      ),
      pending: db.prepare<[], { delay_id: string; send_at: number; status: "scheduled" | "sending" }>(
        "SELECT delay_id, send_at, status FROM delayed_events WHERE status != 'finalised'",
      ),
      stateOthers: db.prepare<[string, string, string, string], { delay_id: string }>(
        `SELECT delay_id FROM delayed_events
         WHERE room_id = ? AND type = ? AND state_key = ? AND status = 'scheduled' AND user_id != ?`,
      ),
      children: db.prepare<[string], { delay_id: string }>(
        "SELECT delay_id FROM delayed_events WHERE parent_delay_id = ? AND status = 'scheduled'",
      ),
    };
    this.#s = s;
    this.#schedule = db.transaction((e: NewDelayedEvent, max: number) => {
      if ((s.count.get(e.userId)?.n ?? 0) >= max) return false;
      s.insert.run({ ...e, content: JSON.stringify(e.content), sendAt: e.runningSince + e.delayMs });
      return true;
    });
  }

  async schedule(event: NewDelayedEvent, maxPerUser: number): Promise<boolean> {
    return this.#schedule(event, maxPerUser);
  }

  async get(delayId: string): Promise<DelayedEventRecord | undefined> {
    const row = this.#s.get.get(delayId);
    return row && toRecord(row);
  }

  async restart(delayId: string, now: number): Promise<DelayedEventRecord | undefined> {
    if (this.#s.restart.run({ now, id: delayId }).changes === 0) return undefined;
    return this.get(delayId);
  }

  async cancel(delayId: string, reason: DelayedReason, now: number): Promise<boolean> {
    return this.#s.cancel.run(reason, now, delayId).changes > 0;
  }

  async claimForSending(delayId: string, dueBy?: number): Promise<boolean> {
    const result = dueBy === undefined ? this.#s.claim.run(delayId) : this.#s.claimDue.run(delayId, dueBy);
    return result.changes > 0;
  }

  async finishSending(
    delayId: string,
    result: { eventId: string } | { error: Record<string, unknown> },
    reason: DelayedReason,
    now: number,
  ): Promise<void> {
    const eventId = "eventId" in result ? result.eventId : null;
    const error = "error" in result ? JSON.stringify(result.error) : null;
    this.#s.finish.run(reason, now, eventId, error, delayId);
  }

  async scheduledOf(userId: string): Promise<DelayedEventRecord[]> {
    return this.#s.scheduledOf.all(userId).map(toRecord);
  }

  async finalisedOf(userId: string, limit: number): Promise<DelayedEventRecord[]> {
    return this.#s.finalisedOf.all(userId, limit).map(toRecord);
  }

  async pending() {
    return this.#s.pending.all().map((r) => ({ delayId: r.delay_id, sendAt: r.send_at, status: r.status }));
  }

  async scheduledStateOthers(roomId: string, type: string, stateKey: string, exceptUser: string): Promise<string[]> {
    return this.#s.stateOthers.all(roomId, type, stateKey, exceptUser).map((r) => r.delay_id);
  }

  async childrenOf(parentDelayId: string): Promise<string[]> {
    return this.#s.children.all(parentDelayId).map((r) => r.delay_id);
  }

  async countScheduled(userId: string): Promise<number> {
    return this.#s.count.get(userId)?.n ?? 0;
  }
}
