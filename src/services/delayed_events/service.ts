/**
 * Delayed events (MSC4140): events a client schedules now for the server to
 * send later unless it is told otherwise. A crashed call client's "leave" is
 * one; the client keeps restarting its timer while alive.
 */
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { Config } from "../../config/config.js";
import { Errors, MatrixError } from "../../errors.js";
import type { DelayedEventRecord, DelayedReason } from "../../storage/delayed_events.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import type { Clock } from "../clock.js";
import { DELAYED_EVENT_TXN_DEVICE } from "../rooms/client_format.js";
import type { EventPersister } from "../rooms/persister.js";
import { DelayScheduler } from "./scheduler.js";

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

export class DelayedEventService {
  readonly #scheduler: DelayScheduler;
  /** Events found mid-send at start: the previous process died while writing them. */
  readonly #interrupted = new Set<string>();
  #stopping = false;

  constructor(
    private readonly config: Config,
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly persister: EventPersister,
    private readonly logger: Pick<Logger, "warn" | "error" | "info">,
  ) {
    this.#scheduler = new DelayScheduler(
      clock,
      (ids) => this.#fireDue(ids),
      (err) => logger.error({ err }, "delayed-event scheduler failed"),
    );
    persister.onPersisted(async (event) => {
      const { pdu } = event;
      if (pdu.state_key === undefined) return;
      // Someone else took over this piece of state: a pending write of it by its old owner is obsolete.
      const obsolete = await storage.delayedEvents.scheduledStateOthers(pdu.room_id, pdu.type, pdu.state_key, pdu.sender);
      for (const id of obsolete) await storage.delayedEvents.cancel(id, "action", clock.now());
    });
  }

  /** Loads what is pending; what fell due while the server was down fires now. */
  async start(): Promise<number> {
    const pending = await this.storage.delayedEvents.pending();
    for (const p of pending) {
      // "sending" means the process died mid-send; sending again is safe, it is idempotent by delay ID.
      if (p.status === "sending") this.#interrupted.add(p.delayId);
      this.#scheduler.add(p.delayId, p.status === "sending" ? 0 : p.sendAt);
    }
    return pending.length;
  }

  /** Stops firing; resolves once an event being written has been recorded, so storage may close. */
  stop(): Promise<void> {
    this.#stopping = true;
    return this.#scheduler.stop();
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

  async schedule(requester: Requester, req: ScheduleRequest): Promise<{ delay_id: string }> {
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
    const delayId = `syd_${randomBytes(15).toString("base64url")}`;
    const ok = await this.storage.delayedEvents.schedule(
      {
        delayId,
        userId: requester.userId,
        roomId: req.roomId,
        type: req.type,
        stateKey: req.stateKey ?? null,
        content: req.content,
        delayMs,
        runningSince: now,
        parentDelayId: req.parentDelayId ?? null,
        stickyDurationMs: req.stickyDurationMs ?? null,
      },
      this.config.delayedEvents.maxPerUser,
    );
    if (!ok) {
      const soonest = (await this.storage.delayedEvents.scheduledOf(requester.userId)).reduce(
        (min, e) => Math.min(min, e.sendAt),
        Infinity,
      );
      throw Errors.limitExceeded(Math.max(1000, Math.min(soonest - now, 3_600_000)));
    }
    this.#scheduler.add(delayId, now + delayMs);
    return { delay_id: delayId };
  }

  /**
   * Applies an action. With `owner` set, only that user's events are found;
   * without it the delay ID alone is the capability, as MSC4140 allows.
   * `idempotent` (the v1 API) makes a repeated action succeed and a
   * conflicting one answer 409.
   */
  async act(delayId: string, action: DelayedAction, opts: { owner?: string; idempotent?: boolean } = {}): Promise<void> {
    const record = await this.storage.delayedEvents.get(delayId);
    if (!record || (opts.owner !== undefined && record.userId !== opts.owner)) throw Errors.notFound("Unknown delayed event");
    const now = this.clock.now();
    let done: boolean;
    let failure: MatrixError | undefined;
    if (action === "cancel") done = await this.storage.delayedEvents.cancel(delayId, "action", now);
    else if (action === "restart") {
      const restarted = await this.storage.delayedEvents.restart(delayId, now);
      if (restarted) this.#scheduler.add(delayId, restarted.sendAt);
      done = restarted !== undefined;
    } else {
      const sent = await this.#send(delayId, "action");
      done = sent.claimed;
      failure = sent.failure;
    }
    if (done) {
      await this.#cascade(delayId, action);
      // The event was claimed and is finalised as failed; the caller learns why, as from a direct send.
      if (failure) throw failure;
      return;
    }
    if (!opts.idempotent) throw Errors.notFound("The delayed event is no longer scheduled");
    const after = await this.storage.delayedEvents.get(delayId);
    // Mid-send counts as sent: the send that claimed it is writing the event.
    const outcome = after?.status === "sending" ? "send" : after?.status === "finalised" ? after.outcome : null;
    // A repeat is one whose effect already holds, whoever brought it about: cancelled, or sent (not failed).
    const sameOutcome = (action === "cancel" && outcome === "cancel") || (action === "send" && outcome === "send" && after?.reason !== "error");
    if (!sameOutcome) {
      throw new MatrixError(409, "M_UNKNOWN", `The delayed event was already finalised (${outcome ?? "unknown"})`);
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

  async #fireDue(ids: string[]): Promise<void> {
    for (const id of ids) {
      // What is left stays scheduled in the store and fires at the next start.
      if (this.#stopping) return;
      try {
        await this.#fireOne(id);
      } catch (err) {
        // Not a verdict on the event (that is recorded as a failed send): the store failed. Try again
        // shortly instead of dropping the event, and let the rest of the batch fire.
        this.logger.error({ err, delay_id: id }, "firing a delayed event failed; trying again");
        this.#scheduler.add(id, this.clock.now() + FIRE_RETRY_MS);
      }
    }
  }

  async #fireOne(id: string): Promise<void> {
    const record = await this.storage.delayedEvents.get(id);
    if (!record) return;
    if (record.status === "sending") {
      // Only an event the previous process left mid-send is resent here; at any other time a
      // "sending" event belongs to the call that claimed it.
      if (this.#interrupted.delete(id)) await this.#resend(record);
      return;
    }
    // A restarted event left a stale entry behind; its fresh entry is in the heap already.
    if (record.status !== "scheduled") return;
    // The claim itself checks the send time, so a restart that lands between the read and the claim wins.
    const sent = await this.#send(id, "delay", this.clock.now());
    if (sent.claimed) await this.#cascade(id, "send");
  }

  /** Claims and sends; `claimed` is false when someone else already finalised it (or, with `dueBy`, restarted it). */
  async #send(delayId: string, reason: DelayedReason, dueBy?: number): Promise<{ claimed: boolean; failure?: MatrixError }> {
    if (!(await this.storage.delayedEvents.claimForSending(delayId, dueBy))) return { claimed: false };
    const record = await this.storage.delayedEvents.get(delayId);
    if (!record) return { claimed: true };
    return { claimed: true, failure: await this.#resend(record, reason) };
  }

  /** Writes the event through the normal path and records the outcome; returns the error when it was refused. */
  async #resend(record: DelayedEventRecord, reason: DelayedReason = "delay"): Promise<MatrixError | undefined> {
    let failure: MatrixError | undefined;
    let result: { eventId: string } | { error: Record<string, unknown> };
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
      result = { eventId: event.eventId };
    } catch (err) {
      failure = err instanceof MatrixError ? err : new MatrixError(500, "M_UNKNOWN", "The delayed event could not be sent");
      if (!(err instanceof MatrixError)) this.logger.error({ err, delay_id: record.delayId }, "delayed event failed to send");
      result = { error: failure.body() };
    }
    await this.storage.delayedEvents.finishSending(record.delayId, result, "error" in result ? "error" : reason, this.clock.now());
    return failure;
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

  async get(requester: Requester, delayId: string): Promise<DelayedEventRecord> {
    const record = await this.storage.delayedEvents.get(delayId);
    if (!record || record.userId !== requester.userId) throw Errors.notFound("Unknown delayed event");
    return record;
  }

  capabilities() {
    return { max_delay_ms: this.config.delayedEvents.maxDelayMs, max_scheduled: this.config.delayedEvents.maxPerUser };
  }
}

export function scheduledView(r: DelayedEventRecord) {
  return {
    delay_id: r.delayId,
    room_id: r.roomId,
    type: r.type,
    ...(r.stateKey !== null ? { state_key: r.stateKey } : {}),
    delay: r.delayMs,
    running_since: r.runningSince,
    content: r.content,
    ...(r.parentDelayId ? { parent_delay_id: r.parentDelayId } : {}),
  };
}

export function finalisedView(r: DelayedEventRecord) {
  return {
    delayed_event: scheduledView(r),
    outcome: r.outcome,
    reason: r.reason,
    ...(r.error ? { error: r.error } : {}),
    ...(r.eventId ? { event_id: r.eventId } : {}),
    ...(r.finalisedTs !== null ? { origin_server_ts: r.finalisedTs } : {}),
  };
}

/**
 * `GET U4140/delayed_events/{id}`: the list item's fields, plus the form
 * matrix-js-sdk declares (`delay_ms`, `delayed_since_ts`, and `finalised`
 * once the event is done).
 */
export function lookupView(r: DelayedEventRecord) {
  return {
    ...scheduledView(r),
    delay_ms: r.delayMs,
    delayed_since_ts: r.runningSince,
    ...(r.status === "finalised"
      ? {
          finalised: {
            ...(r.error ? { error: r.error } : {}),
            ...(r.eventId ? { event_id: r.eventId } : {}),
            finalised_ts: r.finalisedTs ?? r.runningSince,
          },
          outcome: r.outcome,
          reason: r.reason,
        }
      : {}),
  };
}

/** The v1 status form of MSC4140's latest draft. */
export function statusView(r: DelayedEventRecord) {
  return {
    delay_id: r.delayId,
    room_id: r.roomId,
    type: r.type,
    ...(r.stateKey !== null ? { state_key: r.stateKey } : {}),
    content: r.content,
    delay_ms: r.delayMs,
    scheduled_at: r.sendAt,
    status: r.status === "finalised" ? "finalised" : "scheduled",
    ...(r.finalisedTs !== null ? { finalised_ts: r.finalisedTs } : {}),
    ...(r.outcome ? { outcome: r.outcome, reason: r.reason } : {}),
    ...(r.eventId ? { event_id: r.eventId } : {}),
    ...(r.error ? { error: r.error } : {}),
  };
}
