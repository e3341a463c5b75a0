/**
 * The delivery loop of HTTP pushers (see pushers.ts for the design). Each pusher this process
 * holds has a job: it reads the user's unread notifications after the pusher's position, sends
 * them one by one, and moves the position on; on failure it waits (1 s, doubling to an hour)
 * while still holding the pusher, and after a day of failure gives up on that notification.
 *
 * Notifications are stored after their event commits, so one may land below a position a job
 * has already passed (two events close together, evaluated out of order). Whoever stores it
 * tells the pusher's job (here, or in the process holding it) the event IDs, and the job sends
 * any of those it finds behind its position: as "late" notifications, without moving back.
 *
 * Costs, since every recipient of a busy room's events has a pusher: a batch moves the position
 * once, after its last push; the user's badge is read once per batch; an event and its names
 * are read once for all its recipients (push_content.ts); and a job that has gone idle keeps
 * its claim a few seconds, so that a burst of events claims and lets go of a pusher once.
 */
import { setMaxListeners } from "node:events";
import type { PendingPush, PusherClaim, PusherKey, PusherProgress, PusherRecord } from "../../storage/pushers.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Clock } from "../clock.js";
import type { Fetcher } from "../outbound/safe_fetch.js";
import { buildNotification, notifyGateway } from "./gateway.js";
import type { Badge } from "../../storage/pushers.js";
import { PushContent } from "./push_content.js";
import { BatchQueue } from "../batch_queue.js";
import { trimOldest } from "../bounded_map.js";

export interface DeliveryLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** A claim lasts this long unless renewed; a holder renews it three times as often. */
const LEASE_MS = 30_000;
const RENEW_INTERVAL_MS = 10_000;
/** Notifications read per query. */
const BATCH = 10;
/** Pushers claimed per sweep statement, and at most this many jobs run at once from sweeps. */
const SWEEP_BATCH = 50;
const MAX_SWEPT_JOBS = 500;
const GATEWAY_TIMEOUT_MS = 10_000;
const INITIAL_BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 3_600_000;
/** A gateway failing this long has each notification given up on (and one older is not sent). */
export const GIVE_UP_MS = 86_400_000;
/** (pusher, event) pairs remembered as sent, so a late notice of one sent meanwhile sends nothing. */
const RECENT_LIMIT = 10_000;
/** An idle job keeps its claim this long, in case more comes (renewed meanwhile like any other). */
const LINGER_MS = 5_000;

interface Job {
  key: PusherKey;
  id: string;
  /** Events this process was told were stored for the user: any behind the position are late. */
  late: Set<string>;
  /** Told of new notifications while working: read once more before letting go. */
  dirty: boolean;
  backoffMs: number;
  retry?: NodeJS.Timeout;
  /** Pushing; waiting to retry; idle but still holding the claim; letting go of it. */
  state: "running" | "waiting" | "lingering" | "leaving";
  linger?: NodeJS.Timeout;
  /** The row as claimed, used instead of reading it again for the first round. */
  fresh?: PusherRecord;
  /** Progress not yet written: the position reached, and the last success. */
  advanceTo: number;
  successTs: number | null;
  /** The badge of the last push delivered since the last write. */
  badge?: Badge;
  /** The furthest position this job has written. */
  written: number;
}

type Outcome = "next" | "idle" | "gone" | "backoff";

/** For a batch whose pushes are all read or too old to send: none is delivered, so it is never recorded. */
const NO_BADGE: Badge = { count: 0, readUs: 0 };

const idOf = (k: PusherKey) => JSON.stringify([k.appId, k.pushkey, k.userId]);
const keyOf = (p: PusherRecord): PusherKey => ({ appId: p.appId, pushkey: p.pushkey, userId: p.userId });

export class PushDelivery {
  readonly #jobs = new Map<string, Job>();
  readonly #running = new Set<Promise<void>>();
  readonly #recent = new Set<string>();
  /**
   * Stream positions of events whose notifications this process stored: a late notice of one
   * after a pusher's position needs no query of its own, since reading the pending ones finds it.
   */
  readonly #orderings = new Map<string, number>();
  #abort = new AbortController();
  #renewer: NodeJS.Timeout | undefined;
  #stopping = true;
  #sweeping = false;
  readonly #content: PushContent;
  /** Progress written by the jobs of one turn of the event loop (a room's pushers, say) goes in one transaction. */
  readonly #progress = new BatchQueue<PusherProgress, boolean>(async (_key, items) => (await this.storage.pushers.advance(items)).map((value) => ({ value })));

  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly fetcher: Fetcher,
    private readonly includeContent: boolean,
    private readonly logger: DeliveryLogger,
  ) {
    this.#content = new PushContent(storage, clock);
  }

  /** The user's badge, as pushes carry it. */
  badge(userId: string): Promise<Badge> {
    return this.#content.badge(userId);
  }

  get #me(): string {
    return this.storage.cluster.workerId;
  }

  #claim(): PusherClaim {
    const now = this.clock.now();
    return { worker: this.#me, leaseUntil: now + LEASE_MS, live: this.storage.cluster.workers(), now };
  }

  start(): void {
    this.#stopping = false;
    this.#abort = new AbortController();
    // Every request in flight (one per pusher being served) listens for the stop: many at once is expected.
    setMaxListeners(0, this.#abort.signal);
    this.#renewer = setInterval(() => {
      const users = [...new Set([...this.#jobs.values()].map((j) => j.key.userId))];
      this.storage.pushers
        .renew(this.#me, users, this.clock.now() + LEASE_MS)
        .catch((err: unknown) => this.logger.warn({ err }, "push: renewing pusher leases failed"));
    }, RENEW_INTERVAL_MS);
    this.#renewer.unref();
  }

  /**
   * Delivers for these users' pushers, telling each job which events were just stored. Pushers
   * another live process holds are passed to `elsewhere`, for it to tell that process.
   */
  async wake(users: Map<string, Set<string>>, elsewhere: (users: Map<string, Set<string>>) => void, orderings?: ReadonlyMap<string, number>): Promise<void> {
    if (this.#stopping || users.size === 0) return;
    for (const [eventId, ordering] of orderings ?? []) {
      this.#orderings.set(eventId, ordering);
      trimOldest(this.#orderings, RECENT_LIMIT);
    }
    const rows = await this.storage.pushers.ofUsers([...users.keys()]);
    const claim = this.#claim();
    const held = new Map<string, Set<string>>();
    const wanted: PusherRecord[] = [];
    for (const row of rows) {
      const events = users.get(row.userId) ?? new Set<string>();
      const job = this.#jobs.get(idOf(row));
      if (job) {
        job.dirty = true;
        for (const e of events) job.late.add(e);
        if (job.state === "lingering") {
          // The row just read spares the job reading it again, unless it was read before the
          // job's last progress was written (then its position is behind, and would re-push).
          if (row.claimedBy === this.#me && row.lastStreamOrdering >= job.written) job.fresh = row;
          clearTimeout(job.linger);
          this.#drive(job);
        }
      } else if (row.claimedBy !== null && row.claimedBy !== this.#me && (row.leaseUntil ?? 0) > claim.now && claim.live.includes(row.claimedBy)) {
        held.set(row.userId, events);
      } else {
        wanted.push(row);
      }
    }
    const claimed = await this.storage.pushers.claim(wanted.map(keyOf), claim);
    const got = new Set(claimed.map(idOf));
    // Lost to another process that claimed it just now: it may have read before these were stored.
    for (const row of wanted) if (!got.has(idOf(row))) held.set(row.userId, users.get(row.userId) ?? new Set());
    for (const row of claimed) this.#startJob(row, users.get(row.userId) ?? new Set());
    if (held.size > 0) elsewhere(held);
  }

  /** Claims and delivers for pushers with something to push that nobody holds. */
  async sweep(): Promise<void> {
    if (this.#stopping || this.#sweeping) return;
    this.#sweeping = true;
    try {
      // A pusher done within the sweep can be claimed again: the sweep ends when it comes round.
      const seen = new Set<string>();
      while (!this.#stopping && this.#jobs.size < MAX_SWEPT_JOBS) {
        const claimed = await this.storage.pushers.claimPending(this.#claim(), SWEEP_BATCH);
        let fresh = 0;
        for (const row of claimed) {
          if (!seen.has(idOf(row))) fresh++;
          seen.add(idOf(row));
          this.#startJob(row, new Set());
        }
        if (claimed.length < SWEEP_BATCH || fresh === 0) break;
      }
    } finally {
      this.#sweeping = false;
    }
  }

  /** A pusher was set again (a new URL, say): if it waits to retry here, it tries now, from a clean slate. */
  retryNow(key: PusherKey): void {
    const job = this.#jobs.get(idOf(key));
    if (!job?.retry || this.#stopping) return;
    clearTimeout(job.retry);
    job.backoffMs = INITIAL_BACKOFF_MS;
    this.#drive(job);
  }

  /** Stops every job (an unanswered request is abandoned: its notification is sent again later) and lets go of every pusher. */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#renewer);
    for (const job of this.#jobs.values()) {
      clearTimeout(job.retry);
      clearTimeout(job.linger);
    }
    this.#abort.abort();
    await Promise.allSettled([...this.#running]);
    this.#jobs.clear();
    await this.storage.pushers.release(this.#me).catch((err: unknown) => this.logger.warn({ err }, "push: releasing pushers failed"));
  }

  #startJob(row: PusherRecord, late: Set<string>): void {
    const id = idOf(row);
    if (this.#jobs.has(id) || this.#stopping) return;
    const job: Job = {
      key: keyOf(row),
      id,
      late: new Set(late),
      dirty: false,
      backoffMs: INITIAL_BACKOFF_MS,
      state: "running",
      fresh: row,
      advanceTo: 0,
      successTs: null,
      written: row.lastStreamOrdering,
    };
    this.#jobs.set(id, job);
    this.#drive(job);
  }

  #drive(job: Job): void {
    job.retry = undefined;
    job.linger = undefined;
    job.state = "running";
    const run = this.#runJob(job)
      .catch((err: unknown) => {
        // Letting go failed (storage trouble): the lease, no longer renewed, runs out by itself.
        this.#jobs.delete(job.id);
        this.logger.warn({ err, userId: job.key.userId, appId: job.key.appId }, "push: releasing a pusher failed");
      })
      .finally(() => this.#running.delete(run));
    this.#running.add(run);
  }

  async #runJob(job: Job): Promise<void> {
    let outcome: Outcome;
    try {
      outcome = await this.#work(job);
    } catch (err) {
      // Storage trouble: try again later, as for a failing gateway.
      this.logger.warn({ err, userId: job.key.userId, appId: job.key.appId }, "push: delivering failed");
      outcome = "backoff";
    }
    if (this.#stopping) return;
    if (outcome === "backoff") {
      job.state = "waiting";
      job.retry = setTimeout(() => this.#drive(job), job.backoffMs);
      job.backoffMs = Math.min(job.backoffMs * 2, MAX_BACKOFF_MS);
      return;
    }
    if (outcome === "gone") {
      this.#jobs.delete(job.id);
      return;
    }
    job.state = "lingering";
    job.linger = setTimeout(() => {
      if (job.state !== "lingering" || this.#stopping) return;
      job.state = "leaving";
      this.#letGo(job).catch((err: unknown) => {
        this.#jobs.delete(job.id);
        this.logger.warn({ err, userId: job.key.userId, appId: job.key.appId }, "push: releasing a pusher failed");
      });
    }, LINGER_MS);
    job.linger.unref();
  }

  async #letGo(job: Job): Promise<void> {
    // The job stays listed until the claim is let go, so that news arriving meanwhile lands on it.
    await this.storage.pushers.release(this.#me, [job.key]);
    this.#jobs.delete(job.id);
    // News that landed on the job while it let go, or notifications stored by a process that
    // found the pusher still held here (and so told only us): look once more now that anyone
    // may claim it. Whoever claims it first delivers.
    let again = job.dirty || job.late.size > 0;
    if (!again) {
      const pusher = await this.storage.pushers.get(job.key);
      again = pusher !== undefined && (await this.storage.pushers.pending(pusher.userId, pusher.lastStreamOrdering, 1)).length > 0;
    }
    if (again && !this.#stopping) {
      for (const row of await this.storage.pushers.claim([job.key], this.#claim())) this.#startJob(row, job.late);
    }
  }

  /** Pushes until there is nothing left, the pusher is gone, or the gateway fails. */
  async #work(job: Job): Promise<Outcome> {
    for (;;) {
      if (this.#stopping) return "idle";
      // Read afresh each round: the user may have changed the pusher, or another process taken it.
      const pusher = job.fresh ?? (await this.storage.pushers.get(job.key));
      job.fresh = undefined;
      if (!pusher || pusher.claimedBy !== this.#me) return "gone";
      job.dirty = false;
      let batch: (PendingPush & { late?: boolean })[] = [];
      // Only those possibly behind the position: the others are read with the pending ones below.
      const ids = [...job.late].filter((id) => !((this.#orderings.get(id) ?? 0) > pusher.lastStreamOrdering));
      job.late.clear();
      if (ids.length > 0) {
        batch = (await this.storage.pushers.pendingEvents(pusher.userId, ids))
          .filter((p) => p.streamOrdering <= pusher.lastStreamOrdering && !this.#recent.has(`${job.id} ${p.eventId}`))
          .map((p) => ({ ...p, late: true }));
      }
      let complete = false;
      if (batch.length === 0) {
        batch = await this.storage.pushers.pending(pusher.userId, pusher.lastStreamOrdering, BATCH);
        // Everything stored so far was read; anything stored since marks the job dirty.
        complete = batch.length < BATCH;
      }
      if (batch.length === 0) {
        if (job.dirty || job.late.size > 0) continue;
        return "idle";
      }
      // The badge as of now, for every push of the batch: the latest count is the one to show.
      const unread = batch.some((p) => !p.read && this.clock.now() - p.ts <= GIVE_UP_MS) ? await this.#content.badge(pusher.userId) : NO_BADGE;
      for (const push of batch) {
        const outcome = await this.#pushOne(job, pusher, push, unread);
        if (outcome !== "next") {
          if (outcome === "backoff" && push.late) job.late.add(push.eventId);
          // Gone: the pusher went (rejected, deleted or taken), so its progress has no row to go to.
          if (outcome !== "gone" && !(await this.#flush(job))) return "gone";
          return outcome;
        }
      }
      if (!(await this.#flush(job))) return "gone";
      if (complete && !job.dirty && job.late.size === 0) return "idle";
    }
  }

  /** Writes the progress made since the last write; false when the pusher is gone or no longer held here. */
  async #flush(job: Job): Promise<boolean> {
    if (job.advanceTo === 0 && job.successTs === null) return true;
    const { advanceTo, successTs, badge } = job;
    job.advanceTo = 0;
    job.successTs = null;
    job.badge = undefined;
    job.written = Math.max(job.written, advanceTo);
    return this.#progress.run("", { key: job.key, worker: this.#me, streamOrdering: advanceTo, successTs, badge });
  }

  async #pushOne(job: Job, pusher: PusherRecord, push: PendingPush & { late?: boolean }, unread: Badge): Promise<Outcome> {
    const now = this.clock.now();
    // Late ones never move the position: it is already past them.
    const position = push.late ? 0 : push.streamOrdering;
    const skip = (): Outcome => {
      this.#remember(`${job.id} ${push.eventId}`);
      job.advanceTo = Math.max(job.advanceTo, position);
      return "next";
    };
    // Read meanwhile (on another device, say), or a day old: no longer worth a phone buzzing.
    if (push.read || now - push.ts > GIVE_UP_MS) return skip();
    const found = await this.#content.event(push);
    if (!found) return skip();
    const notification = buildNotification(pusher, found.event, { ...found.names, unread: unread.count }, this.includeContent);
    const result = await notifyGateway(this.fetcher, pusher, notification, { timeoutMs: GATEWAY_TIMEOUT_MS, signal: this.#abort.signal });
    if (this.#stopping) return "idle";
    const who = { userId: pusher.userId, appId: pusher.appId, eventId: push.eventId };
    if (result.kind === "delivered") {
      this.#remember(`${job.id} ${push.eventId}`);
      job.backoffMs = INITIAL_BACKOFF_MS;
      pusher.failingSince = null;
      if (result.rejected) {
        // The spec: stop sending to a pushkey the gateway rejects, and remove its pusher.
        this.logger.info({ ...who, pushkey: pusher.pushkey }, "push: the gateway rejected the pushkey; removing the pusher");
        await this.storage.pushers.delete(job.key);
        return "gone";
      }
      job.advanceTo = Math.max(job.advanceTo, position);
      job.successTs = now;
      job.badge = unread;
      return "next";
    }
    if (result.kind === "refused") {
      this.logger.warn({ ...who, status: result.status }, "push: the gateway refused a notification; not sending it again");
      return skip();
    }
    // Earlier successes first: writing them ends a failure.
    if (!(await this.#flush(job))) return "gone";
    if (pusher.failingSince === null) {
      pusher.failingSince = now;
      await this.storage.pushers.setFailingSince(job.key, this.#me, now);
    }
    if (now - pusher.failingSince > GIVE_UP_MS) {
      // As Synapse: so that a gateway fixed after a day does not get a day's backlog at once.
      this.logger.warn({ ...who, reason: result.reason }, "push: the gateway has failed for a day; giving up on a notification");
      pusher.failingSince = null;
      job.backoffMs = INITIAL_BACKOFF_MS;
      await this.storage.pushers.setFailingSince(job.key, this.#me, null);
      return skip();
    }
    this.logger.info({ ...who, reason: result.reason, retryInMs: job.backoffMs }, "push: the gateway failed; trying again later");
    return "backoff";
  }

  #remember(entry: string): void {
    this.#recent.add(entry);
    trimOldest(this.#recent, RECENT_LIMIT);
  }
}
