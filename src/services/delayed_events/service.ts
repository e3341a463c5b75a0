/**
 * Delayed events (MSC4140): events a client schedules now for the server to
 * send later unless it is told otherwise. A crashed call client's "leave" is
 * one; the client keeps restarting its timer while alive.
 */
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { Config } from "../../config/config.js";
import { Errors, MatrixError } from "../../errors.js";
import { roomIdOfEvent } from "../../events/index.js";
import type { DelayedEventRecord, DelayedTxn } from "../../storage/delayed_events.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import type { Clock } from "../clock.js";
import { DELAYED_EVENT_TXN_DEVICE } from "../rooms/client_format.js";
import type { EventPersister } from "../rooms/persister.js";
import { listPage, parseListQuery } from "./listing.js";
import { DelayScheduler } from "./scheduler.js";
import type { SendClaim } from "../../storage/delayed_events.js";
import { finalisedView, scheduledView } from "./views.js";

/** The pseudo-device under which fired events record their delay ID as a transaction ID. */
export const DELAYED_TXN_DEVICE = DELAYED_EVENT_TXN_DEVICE;

export type DelayedAction = "cancel" | "restart" | "send";

export interface ScheduleRequest {
  roomId: string;
  type: string;
  stateKey?: string;
  content: Record<string, unknown>;
  delayMs?: number;
  parentDelayId?: string;
  stickyDurationMs?: number;
}

/** When firing hits trouble that is not a verdict on the event itself (storage), it is tried again after this. */
const FIRE_RETRY_MS = 1000;
/**
 * How long a process's claim on an event it is sending holds. Sending takes milliseconds; a
 * claim still held after this belongs to a process that died mid-send, and another takes over
 * (the send is idempotent by delay ID, so the event is not written twice).
 */
export const SEND_LEASE_MS = 10_000;
/** Due events claimed per statement. */
const CLAIM_BATCH = 100;
/** How long finalised events stay to be looked up, and how many of them per user (MSC4140's advice). */
export const FINALISED_RETENTION_MS = 7 * 24 * 3_600_000;
export const FINALISED_PER_USER = 1000;
/** How often each process forgets what is past retention (the deletes are idempotent, so several may). */
const PRUNE_EVERY_MS = 15 * 60_000;

export class DelayedEventService {
  readonly #scheduler: DelayScheduler;
  #stopping = false;
  #pruneTimer: NodeJS.Timeout | undefined;
  #pruning: Promise<void> | undefined;

  constructor(
    private readonly config: Config,
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly persister: EventPersister,
    private readonly logger: Pick<Logger, "warn" | "error" | "info">,
  ) {
    this.#scheduler = new DelayScheduler(
      clock,
      () => this.#fireDue(),
      (err) => logger.error({ err }, "delayed-event scheduler failed"),
    );
    persister.onPersisted(async (event) => {
      const { pdu } = event;
      if (pdu.state_key === undefined) return;
      // Someone else took over this piece of state: a pending write of it by its old owner is obsolete.
      const obsolete = await storage.delayedEvents.scheduledStateOthers(roomIdOfEvent(pdu, event.eventId), pdu.type, pdu.state_key, pdu.sender);
      for (const id of obsolete) await storage.delayedEvents.cancel(id, "action", clock.now());
    });
    // Every process keeps a timer for every pending event, whoever scheduled it, so that one
    // fires it on time even if the one that scheduled it has died; the claim decides which.
    storage.cluster.subscribe("delayed", (body) => {
      const b = body as { id?: unknown; at?: unknown } | null;
      if (b && typeof b.id === "string" && typeof b.at === "number") this.#scheduler.add(b.id, b.at);
    });
    // A process that died may have held claims: they are free now.
    storage.cluster.onWorkerGone(() => void this.#loadPending().catch((err: unknown) => logger.error({ err }, "reading pending delayed events failed")));
  }

  /** Loads what is pending; what fell due while the server was down fires now. */
  async start(): Promise<number> {
    const prune = () => {
      if (this.#pruning || this.#stopping) return;
      // Only housekeeping: a failure is logged and tried again at the next round.
      this.#pruning = this.pruneFinalised()
        .then(() => undefined, (err: unknown) => this.logger.error({ err }, "pruning finalised delayed events failed"))
        .finally(() => (this.#pruning = undefined));
    };
    this.#pruneTimer = setInterval(prune, PRUNE_EVERY_MS);
    this.#pruneTimer.unref();
    prune();
    return this.#loadPending();
  }

  /** Forgets finalised events past MSC4140's recommended retention. */
  pruneFinalised(): Promise<number> {
    return this.storage.delayedEvents.pruneFinalised(this.clock.now() - FINALISED_RETENTION_MS, FINALISED_PER_USER);
  }

  async #loadPending(): Promise<number> {
    const pending = await this.storage.delayedEvents.pending(this.storage.cluster.workers());
    for (const p of pending) this.#scheduler.add(p.delayId, p.wakeAt);
    return pending.length;
  }

  /** Arms this process's timer and every other process's for an event's send time. */
  #due(delayId: string, at: number): void {
    this.#scheduler.add(delayId, at);
    this.storage.cluster.publish("delayed", { id: delayId, at });
  }

  #claim(): SendClaim {
    return { worker: this.storage.cluster.workerId, leaseUntil: this.clock.now() + SEND_LEASE_MS };
  }

  /** Stops firing; resolves once an event being written has been recorded, so storage may close. */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#pruneTimer);
    await Promise.all([this.#scheduler.stop(), this.#pruning]);
  }

  get enabled(): boolean {
    return this.config.delayedEvents.enabled;
  }

  /** Validates the delay query parameter; throws the errors deployed clients expect. */
  parseDelay(raw: unknown): number | undefined {
    if (raw === undefined) return undefined;
    if (!this.enabled) throw Errors.forbidden("Delayed events are not enabled on this server");
    const text = String(raw);
    if (!/^[0-9]+$/.test(text)) throw Errors.invalidParam("The delay must be a non-negative integer of milliseconds");
    const delay = Number(text);
    const max = this.config.delayedEvents.maxDelayMs;
    if (delay > max) {
      throw new MatrixError(403, "M_FORBIDDEN", `The requested delay exceeds the allowed maximum of ${max} ms`, {
        "org.matrix.msc4140.errcode": "M_MAX_DELAY_EXCEEDED",
        "org.matrix.msc4140.max_delay": max,
      });
    }
    return delay;
  }

  /**
   * The `delay` of the accepted `PUT …/delayed_event/{type}/{txnId}` body: a positive integer
   * of milliseconds; one above the maximum is 400 M_MAX_DELAY_EXCEEDED with `max_delay`.
   */
  parseBodyDelay(raw: unknown): number {
    if (!this.enabled) throw Errors.forbidden("Delayed events are not enabled on this server");
    if (raw === undefined) throw Errors.missingParam("Missing parameter: delay");
    if (typeof raw !== "number" || !Number.isSafeInteger(raw) || raw <= 0) {
      throw Errors.invalidParam("delay must be a positive integer of milliseconds");
    }
    const max = this.config.delayedEvents.maxDelayMs;
    if (raw > max) {
      throw new MatrixError(400, "M_MAX_DELAY_EXCEEDED", `The requested delay exceeds the allowed maximum of ${max} ms`, {
        max_delay: max,
        // The unstable names, for clients of the draft.
        "org.matrix.msc4140.errcode": "M_MAX_DELAY_EXCEEDED",
        "org.matrix.msc4140.max_delay": max,
      });
    }
    return raw;
  }

  /**
   * Schedules an event. With `txn`, once: a retry of the same request (same user, device and
   * transaction key) answers the first one's delay ID and schedules nothing.
   */
  async schedule(requester: Requester, req: ScheduleRequest, txn?: DelayedTxn): Promise<{ delay_id: string }> {
    if (!this.enabled) throw Errors.forbidden("Delayed events are not enabled on this server");
    const room = await this.storage.rooms.getRoom(req.roomId);
    const membership = room ? await this.storage.rooms.membership(req.roomId, requester.userId) : undefined;
    if (membership?.membership !== "join") throw Errors.forbidden("You are not joined to this room");
    let delayMs = req.delayMs;
    if (req.parentDelayId !== undefined) {
      const parent = await this.storage.delayedEvents.get(req.parentDelayId);
      if (!parent || parent.userId !== requester.userId || parent.status !== "scheduled") {
        throw Errors.notFound("The parent delayed event is not scheduled");
      }
      delayMs ??= parent.delayMs;
    }
    if (delayMs === undefined) throw Errors.missingParam("A delay or a parent delay ID is required");
    const now = this.clock.now();
    const event = {
      delayId: `syd_${randomBytes(15).toString("base64url")}`,
      userId: requester.userId,
      roomId: req.roomId,
      type: req.type,
      stateKey: req.stateKey ?? null,
      content: req.content,
      delayMs,
      runningSince: now,
      parentDelayId: req.parentDelayId ?? null,
      stickyDurationMs: req.stickyDurationMs ?? null,
    };
    const max = this.config.delayedEvents.maxPerUser;
    const result = txn
      ? await this.storage.delayedEvents.scheduleOnce(event, max, txn)
      : (await this.storage.delayedEvents.schedule(event, max))
        ? { delayId: event.delayId, fresh: true }
        : undefined;
    if (!result) {
      // MSC4140: Retry-After is the time until the user's next event is due to be sent.
      const soonest = (await this.storage.delayedEvents.scheduledOf(requester.userId)).reduce((min, e) => Math.min(min, e.sendAt), Infinity);
      throw Errors.limitExceeded(Number.isFinite(soonest) ? Math.max(1000, soonest - now) : 1000);
    }
    if (result.fresh) this.#due(result.delayId, now + delayMs);
    return { delay_id: result.delayId };
  }

  /**
   * Applies an action. With `owner` set, only that user's events are found;
   * without it the delay ID alone is the capability, as MSC4140 allows.
   * `accepted` (the v1 API of the accepted MSC) makes a repeated action
   * succeed and a conflicting one answer 409, and keeps an event whose send
   * was refused scheduled; the unstable forms answer 404 and record the
   * refusal, as deployed clients expect.
   */
  async act(delayId: string, action: DelayedAction, opts: { owner?: string; accepted?: boolean } = {}): Promise<void> {
    const record = await this.storage.delayedEvents.get(delayId);
    if (!record || (opts.owner !== undefined && record.userId !== opts.owner)) throw Errors.notFound("Unknown delayed event");
    const now = this.clock.now();
    let done: boolean;
    let failure: MatrixError | undefined;
    if (action === "cancel") done = await this.storage.delayedEvents.cancel(delayId, "action", now);
    else if (action === "restart") {
      const restarted = await this.storage.delayedEvents.restart(delayId, now);
      if (restarted) this.#due(delayId, restarted.sendAt);
      done = restarted !== undefined;
    } else {
      const sent = await this.#send(delayId, opts.accepted === true);
      if (sent.kept) throw sent.failure;
      done = sent.claimed;
      failure = sent.failure;
    }
    if (done) {
      await this.#cascade(delayId, action);
      // The event was claimed and is finalised as failed; the caller learns why, as from a direct send.
      if (failure) throw failure;
      return;
    }
    if (!opts.accepted) throw Errors.notFound("The delayed event is no longer scheduled");
    const after = await this.storage.delayedEvents.get(delayId);
    // Mid-send counts as sent: the send that claimed it is writing the event.
    const outcome = after?.status === "sending" ? "send" : after?.status === "finalised" ? after.outcome : null;
    // A send that failed counts as cancelled (by an error), as MSC4140 has it.
    const failed = after?.status === "finalised" && after.error !== null;
    const sameOutcome = (action === "cancel" && (outcome === "cancel" || failed)) || (action === "send" && outcome === "send" && !failed);
    if (!sameOutcome) {
      throw new MatrixError(409, "M_UNKNOWN", `The delayed event was already finalised (${failed ? "error" : (outcome ?? "unknown")})`);
    }
  }

  /** A parent's action applies to its scheduled children too. */
  async #cascade(parentId: string, action: DelayedAction): Promise<void> {
    for (const child of await this.storage.delayedEvents.childrenOf(parentId)) {
      await this.act(child, action).catch((err: unknown) => {
        if (!(err instanceof MatrixError)) throw err;
      });
    }
  }

  /** Claims what is due (here or, if it died, on another process) and sends it, in batches. */
  async #fireDue(): Promise<void> {
    while (!this.#stopping) {
      let claimed: DelayedEventRecord[];
      try {
        claimed = await this.storage.delayedEvents.claimDue(this.clock.now(), this.#claim(), CLAIM_BATCH, this.storage.cluster.workers());
      } catch (err) {
        // Not a verdict on any event: the store failed. Look again shortly instead of dropping them.
        this.logger.error({ err }, "claiming due delayed events failed; trying again");
        this.#scheduler.add("", this.clock.now() + FIRE_RETRY_MS);
        return;
      }
      if (claimed.length === 0) return;
      for (const [i, record] of claimed.entries()) {
        if (this.#stopping) {
          // A clean stop leaves nothing half-sent: what this batch did not reach goes back to the schedule.
          const rest = claimed.slice(i).map((r) => r.delayId);
          await this.storage.delayedEvents.releaseClaims(rest, this.storage.cluster.workerId).catch((err: unknown) => {
            this.logger.error({ err }, "could not release claimed delayed events; their lease runs out instead");
          });
          return;
        }
        try {
          await this.#resend(record);
          await this.#cascade(record.delayId, "send");
        } catch (err) {
          this.logger.error({ err, delay_id: record.delayId }, "firing a delayed event failed; its lease will run out and it is tried again");
          this.#scheduler.add(record.delayId, this.clock.now() + SEND_LEASE_MS);
        }
      }
    }
  }

  /**
   * Claims and sends; `claimed` is false when someone else already finalised it. A refused
   * send is recorded as failed, or with `keepOnFailure` put back on the schedule (`kept`).
   */
  async #send(delayId: string, keepOnFailure: boolean): Promise<{ claimed: boolean; failure?: MatrixError; kept?: boolean }> {
    if (!(await this.storage.delayedEvents.claimForSending(delayId, this.#claim()))) return { claimed: false };
    const record = await this.storage.delayedEvents.get(delayId);
    if (!record) return { claimed: true };
    const result = await this.#write(record);
    if ("error" in result && keepOnFailure) {
      // The cause may be gone by its send time (MSC4140): it stays scheduled, on its timer.
      await this.storage.delayedEvents.releaseClaims([delayId], this.storage.cluster.workerId);
      this.#due(delayId, record.sendAt);
      return { claimed: true, failure: result.failure, kept: true };
    }
    await this.storage.delayedEvents.finishSending(delayId, "error" in result ? { error: result.error } : result, "action", this.clock.now());
    return { claimed: true, failure: "error" in result ? result.failure : undefined };
  }

  /** Writes the event through the normal path; on refusal, the error to record and to answer with. */
  async #write(record: DelayedEventRecord): Promise<{ eventId: string } | { error: Record<string, unknown>; failure: MatrixError }> {
    try {
      // The normal write path: the auth rules apply as of now, not as of scheduling.
      const event = await this.persister.persist({
        roomId: record.roomId,
        sender: record.userId,
        type: record.type,
        stateKey: record.stateKey ?? undefined,
        content: record.content,
        txn: { deviceId: DELAYED_TXN_DEVICE, txnId: record.delayId },
        stickyDurationMs: record.stickyDurationMs ?? undefined,
      });
      return { eventId: event.eventId };
    } catch (err) {
      const failure = err instanceof MatrixError ? err : new MatrixError(500, "M_UNKNOWN", "The delayed event could not be sent");
      if (!(err instanceof MatrixError)) this.logger.error({ err, delay_id: record.delayId }, "delayed event failed to send");
      return { error: failure.body(), failure };
    }
  }

  /** Sends a claimed event and records the outcome; a refusal is recorded, not retried (MSC4140). */
  async #resend(record: DelayedEventRecord): Promise<void> {
    const result = await this.#write(record);
    await this.storage.delayedEvents.finishSending(record.delayId, "error" in result ? { error: result.error } : result, "delay", this.clock.now());
  }

  async list(requester: Requester, opts: { status?: string; delayIds?: string[] }) {
    const wanted = (r: DelayedEventRecord) => !opts.delayIds?.length || opts.delayIds.includes(r.delayId);
    const scheduled =
      opts.status === "finalised" ? [] : (await this.storage.delayedEvents.scheduledOf(requester.userId)).filter(wanted);
    const finalised =
      opts.status === "scheduled" ? [] : (await this.storage.delayedEvents.finalisedOf(requester.userId, 100)).filter(wanted);
    const items = scheduled.map(scheduledView);
    return {
      delayed_events: items,
      scheduled: items,
      finalised: finalised.map(finalisedView),
    };
  }

  /** A page of the accepted list (`GET /v1/delayed_events`); `query` holds its query parameters. */
  async listPage(requester: Requester, query: Record<string, unknown>) {
    return listPage(this.storage.delayedEvents, parseListQuery(requester.userId, query, this.clock.now()));
  }

  async get(requester: Requester, delayId: string): Promise<DelayedEventRecord> {
    const record = await this.storage.delayedEvents.get(delayId);
    if (!record || record.userId !== requester.userId) throw Errors.notFound("Unknown delayed event");
    return record;
  }

  capabilities() {
    return { max_delay_ms: this.config.delayedEvents.maxDelayMs, max_scheduled: this.config.delayedEvents.maxPerUser };
  }
}
