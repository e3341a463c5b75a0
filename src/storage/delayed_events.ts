/**
 * Delayed events (MSC4140). Every transition out of "scheduled" is a single
 * conditional update, so whichever of timer, cancel, send or restart arrives
 * first wins, and each delayed event is finalised exactly once.
 */

export type DelayedOutcome = "send" | "cancel";
/**
 * What finalised it: a management action or its timer. Rows written before schema step
 * "delayed events as accepted" may say "error" (a failed send); a failure is now told by `error`.
 */
export type DelayedReason = "action" | "delay" | "error";

export interface DelayedEventRecord {
  delayId: string;
  userId: string;
  roomId: string;
  type: string;
  stateKey: string | null;
  content: Record<string, unknown>;
  delayMs: number;
  runningSince: number;
  sendAt: number;
  parentDelayId: string | null;
  stickyDurationMs: number | null;
  /** "sending" is held only while the event is being written. */
  status: "scheduled" | "sending" | "finalised";
  outcome: DelayedOutcome | null;
  reason: DelayedReason | null;
  finalisedTs: number | null;
  eventId: string | null;
  error: Record<string, unknown> | null;
}

export type NewDelayedEvent = Omit<
  DelayedEventRecord,
  "status" | "outcome" | "reason" | "finalisedTs" | "eventId" | "error" | "sendAt"
>;

/** The transaction a scheduling request came with: per user and device, scoped to its endpoint. */
export interface DelayedTxn {
  deviceId: string;
  key: string;
}

export type DelayedOrder = "send_ts" | "origin_server_ts" | "running_since";

/** One page of a user's delayed events, as MSC4140's list endpoint asks for it. */
export interface DelayedListQuery {
  userId: string;
  orderBy: DelayedOrder;
  dir: "f" | "b";
  /**
   * Where the page starts: at `key` inclusive (null: the latest possible), or strictly past
   * (`key`, `afterId`) when continuing from a previous page.
   */
  from: { key: number | null; afterId?: string };
  status?: "scheduled" | "finalised";
  roomId?: string;
  type?: string;
  outcome?: "send" | "cancel" | "error";
  reason?: "action" | "delay";
  limit: number;
}

/** Who is sending a claimed event, and until when the claim holds if it never finishes. */
export interface SendClaim {
  worker: string;
  leaseUntil: number;
}

export interface DelayedEventStore {
  /** Inserts unless the user already has `maxPerUser` scheduled; false when at the limit. */
  schedule(event: NewDelayedEvent, maxPerUser: number): Promise<boolean>;
  /**
   * As `schedule`, once per transaction: a retry (same user, device and key) schedules nothing
   * and answers the first one's delay ID (`fresh` false). Undefined when at the limit.
   */
  scheduleOnce(event: NewDelayedEvent, maxPerUser: number, txn: DelayedTxn): Promise<{ delayId: string; fresh: boolean } | undefined>;
  get(delayId: string): Promise<DelayedEventRecord | undefined>;
  /** Moves a scheduled event's timer to start at `now`; false when it is not scheduled. */
  restart(delayId: string, now: number): Promise<DelayedEventRecord | undefined>;
  /** Finalises a scheduled event as cancelled; false when it is not scheduled. */
  cancel(delayId: string, reason: DelayedReason, now: number): Promise<boolean>;
  /**
   * Claims a scheduled event for sending, leased to `claim.worker` until `claim.leaseUntil`;
   * only one caller ever gets true. With `dueBy` (the timer's claim), only when its send time
   * is not after `dueBy`, so a restart that landed first wins over the timer.
   */
  claimForSending(delayId: string, claim: SendClaim, dueBy?: number): Promise<boolean>;
  /**
   * Claims up to `limit` events that are due at `now`: scheduled ones whose time has come, and
   * ones being sent by a process not in `live` or whose lease ran out (it died mid-send, or
   * hangs). Rows another process is claiming right now are skipped, not waited for.
   */
  claimDue(now: number, claim: SendClaim, limit: number, live: readonly string[]): Promise<DelayedEventRecord[]>;
  /** Gives claimed events that were not sent back to the schedule (a clean stop mid-batch). */
  releaseClaims(delayIds: readonly string[], worker: string): Promise<void>;
  /** Records the outcome of a claimed send. */
  finishSending(delayId: string, result: { eventId: string } | { error: Record<string, unknown> }, reason: DelayedReason, now: number): Promise<void>;
  /** Scheduled events of a user, oldest first. */
  scheduledOf(userId: string): Promise<DelayedEventRecord[]>;
  /** Finalised events of a user, newest first, at most `limit`, before `beforeTs` when given. */
  finalisedOf(userId: string, limit: number): Promise<DelayedEventRecord[]>;
  /**
   * Every event still to send, and when it will next need a look: its send time, or for one
   * being sent, when its sender's lease runs out (at once if the sender is not in `live`).
   */
  pending(live: readonly string[]): Promise<{ delayId: string; wakeAt: number }[]>;
  /** Scheduled state events at (room, type, state_key) owned by users other than `exceptUser`. */
  scheduledStateOthers(roomId: string, type: string, stateKey: string, exceptUser: string): Promise<string[]>;
  /** Scheduled children of a parent delayed event. */
  childrenOf(parentDelayId: string): Promise<string[]>;
  /** A page of a user's events in the query's order, each with the value it is ordered by. */
  page(query: DelayedListQuery): Promise<{ record: DelayedEventRecord; key: number }[]>;
  /**
   * Forgets finalised events finalised before `olderThan`, and all but each user's newest
   * `keepPerUser`. Any process may run it at any time.
   */
  pruneFinalised(olderThan: number, keepPerUser: number): Promise<number>;
}
