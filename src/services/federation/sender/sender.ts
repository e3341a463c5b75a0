/**
 * Outgoing federation transactions. `sendPdu` and `sendEdu` queue rows in the database (one
 * INSERT, never failing the caller: a storage error is logged) and wake the destination's
 * delivery job; the job sends the oldest rows (≤ 50 PDUs, ≤ 100 EDUs a transaction) until none
 * are left, deleting them once the destination took them.
 *
 * - One process at a time delivers for a destination: it claims the destination's row with a
 *   lease, renews it while it works, and lets go when idle. A dead process's lease runs out
 *   (or its claim is void as soon as the cluster sees it gone) and anyone may take over.
 * - Rows queued in a process that does not hold the destination are announced on the cluster
 *   topic `federation-send`, and the holder (or whoever can claim it) delivers them.
 * - A failure (unreachable, 5xx) backs the destination off, in the database: 10 minutes at
 *   first, five times longer each time (with jitter, as Synapse does), at most a day. The rows
 *   stay; nothing is dropped. Any authenticated request from that server ends the backoff.
 * - On start, and every 30 s, a sweep claims destinations with queued rows that nobody holds
 *   and that are not backing off: what a restart or a dead process left behind is resumed.
 */
import { isValidServerName } from "../../../events/ids.js";
import type { Pdu } from "../../../events/types.js";
import type { DestinationClaim } from "../../../storage/federation_queue.js";
import type { Storage } from "../../../storage/interfaces.js";
import { BoundedMap } from "../../bounded_map.js";
import type { Clock } from "../../clock.js";
import type { FederationClient } from "../client.js";
import { MAX_EDUS_PER_TXN, MAX_PDUS_PER_TXN, transmit } from "./transmit.js";

export interface SenderLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface SenderDeps {
  serverName: string;
  storage: Storage;
  clock: Clock;
  client: FederationClient;
  /** `federation_domain_whitelist`: nothing is queued for a server it excludes. */
  isAllowed: (serverName: string) => boolean;
  logger: SenderLogger;
}

const TOPIC = "federation-send";
const DESTINATIONS_PER_MESSAGE = 50;
const LEASE_MS = 30_000;
const RENEW_INTERVAL_MS = 10_000;
const SWEEP_INTERVAL_MS = 30_000;
const SWEEP_BATCH = 100;
/** An idle job keeps its claim this long, in case more comes (a burst of typing, say). */
const LINGER_MS = 5_000;
/** On shutdown, a transaction in flight is waited for this long; an unanswered one is sent again later. */
const STOP_WAIT_MS = 2_000;
export const MIN_RETRY_INTERVAL_MS = 10 * 60_000;
export const MAX_RETRY_INTERVAL_MS = 24 * 3_600_000;
const RETRY_MULTIPLIER = 5;
/** Other servers end typing after 60 s without news (Synapse): an older typing EDU is not sent. */
const STALE_TYPING_MS = 60_000;
/**
 * A server that just contacted us is not asked again for this long whether it was backing off:
 * one statement per inbound request would be a write per transaction received. A backoff that
 * starts in that window ends with the server's next request after it.
 */
const UP_CHECK_INTERVAL_MS = 10_000;

interface Job {
  destination: string;
  state: "running" | "lingering" | "leaving";
  /** Told of new rows while working or letting go: read once more. */
  dirty: boolean;
  /** The destination was failing when claimed: a success must end that in the database. */
  failing: boolean;
  retryIntervalMs: number;
  linger?: NodeJS.Timeout;
}

type WakeOutcome = "here" | "elsewhere" | "waiting" | "stopped";

/** The next wait after a failure, from the last one (0: it was not failing). */
export function nextRetryInterval(lastMs: number, random: () => number = Math.random): number {
  const next = lastMs <= 0 ? MIN_RETRY_INTERVAL_MS : lastMs * RETRY_MULTIPLIER * (0.8 + 0.6 * random());
  return Math.round(Math.min(next, MAX_RETRY_INTERVAL_MS));
}

export class FederationSender {
  readonly #jobs = new Map<string, Job>();
  readonly #running = new Set<Promise<void>>();
  readonly #retryTimers = new Map<string, NodeJS.Timeout>();
  readonly #upChecked = new BoundedMap<string, number>(10_000);
  #started = false;
  #renewer: NodeJS.Timeout | undefined;
  #sweeper: NodeJS.Timeout | undefined;
  #sweeping = false;

  constructor(private readonly deps: SenderDeps) {
    const { cluster } = deps.storage;
    cluster.subscribe(TOPIC, (body) => {
      const d = (body as { d?: unknown } | null)?.d;
      if (!this.#started || !Array.isArray(d)) return;
      for (const destination of d) if (typeof destination === "string") void this.#wake(destination);
    });
    // A process that died may have queued rows and never claimed their destination.
    cluster.onWorkerGone(() => {
      if (this.#started) void this.#sweep(true);
    });
  }

  get #me(): string {
    return this.deps.storage.cluster.workerId;
  }

  #claim(): DestinationClaim {
    const now = this.deps.clock.now();
    return { worker: this.#me, leaseUntil: now + LEASE_MS, live: this.deps.storage.cluster.workers(), now };
  }

  /** Queues a PDU for each destination (other than this server, and allowed ones only). Never rejects. */
  async sendPdu(pdu: Pdu, eventId: string, destinations: readonly string[]): Promise<void> {
    const targets = this.#targets(destinations);
    if (targets.length === 0) return;
    try {
      await this.deps.storage.federationQueue.enqueuePdu(targets, eventId, JSON.stringify(pdu), this.deps.clock.now());
    } catch (err) {
      this.deps.logger.warn({ err, eventId }, "federation: could not queue a PDU");
      return;
    }
    this.#kick(targets);
  }

  /** Queues an EDU for a destination (unless it is this server, or not allowed). Never rejects. */
  async sendEdu(destination: string, eduType: string, content: Record<string, unknown>): Promise<void> {
    if (this.#targets([destination]).length === 0) return;
    try {
      await this.deps.storage.federationQueue.enqueueEdu(destination, eduType, JSON.stringify(content), this.deps.clock.now());
    } catch (err) {
      this.deps.logger.warn({ err, destination, eduType }, "federation: could not queue an EDU");
      return;
    }
    this.#kick([destination]);
  }

  /** The server sent us an authenticated request: it is up, so anything waiting for it goes now. */
  serverIsUp(origin: string): void {
    const now = this.deps.clock.now();
    const last = this.#upChecked.get(origin);
    if (last !== undefined && now - last < UP_CHECK_INTERVAL_MS) return;
    this.#upChecked.set(origin, now);
    void this.deps.storage.federationQueue
      .resetBackoff(origin)
      .then((wasFailing) => {
        if (!wasFailing) return;
        this.deps.logger.info({ destination: origin }, "federation: the server contacted us; sending to it again");
        clearTimeout(this.#retryTimers.get(origin));
        this.#retryTimers.delete(origin);
        this.#kick([origin]);
      })
      .catch((err: unknown) => this.deps.logger.warn({ err, destination: origin }, "federation: could not reset a backoff"));
  }

  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#renewer = setInterval(() => {
      this.deps.storage.federationQueue
        .renew(this.#me, [...this.#jobs.keys()], this.deps.clock.now() + LEASE_MS)
        .catch((err: unknown) => this.deps.logger.warn({ err }, "federation: renewing destination leases failed"));
    }, RENEW_INTERVAL_MS);
    this.#renewer.unref();
    this.#sweeper = setInterval(() => void this.#sweep(false), SWEEP_INTERVAL_MS);
    this.#sweeper.unref();
    void this.#sweep(true);
  }

  async stop(): Promise<void> {
    if (!this.#started) return;
    this.#started = false;
    clearInterval(this.#renewer);
    clearInterval(this.#sweeper);
    for (const timer of this.#retryTimers.values()) clearTimeout(timer);
    this.#retryTimers.clear();
    for (const job of this.#jobs.values()) clearTimeout(job.linger);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.#running]), new Promise((resolve) => (timer = setTimeout(resolve, STOP_WAIT_MS)))]);
    clearTimeout(timer);
    this.#jobs.clear();
    await this.deps.storage.federationQueue.release(this.#me).catch((err: unknown) => this.deps.logger.warn({ err }, "federation: releasing destinations failed"));
  }

  #targets(destinations: readonly string[]): string[] {
    const out = new Set<string>();
    for (const d of destinations) {
      if (d !== this.deps.serverName && isValidServerName(d) && this.deps.isAllowed(d)) out.add(d);
    }
    return [...out];
  }

  /** Wakes the destinations' jobs here, and tells the other processes of those held there. */
  #kick(destinations: readonly string[]): void {
    if (!this.#started) return;
    void Promise.all(destinations.map(async (d) => ((await this.#wake(d)) === "elsewhere" ? d : undefined))).then((found) => {
      const elsewhere = found.filter((d): d is string => d !== undefined);
      for (let i = 0; i < elsewhere.length; i += DESTINATIONS_PER_MESSAGE) {
        this.deps.storage.cluster.publish(TOPIC, { d: elsewhere.slice(i, i + DESTINATIONS_PER_MESSAGE) });
      }
    });
  }

  async #wake(destination: string): Promise<WakeOutcome> {
    if (!this.#started) return "stopped";
    const job = this.#jobs.get(destination);
    if (job) {
      job.dirty = true;
      if (job.state === "lingering") {
        clearTimeout(job.linger);
        this.#drive(job);
      }
      return "here";
    }
    const queue = this.deps.storage.federationQueue;
    try {
      const claim = this.#claim();
      const row = await queue.claim(destination, claim);
      if (row) {
        const existing = this.#jobs.get(destination);
        if (existing) existing.dirty = true;
        else this.#startJob(destination, row.retryIntervalMs, row.failingSince !== null);
        return "here";
      }
      const state = await queue.get(destination);
      if (state?.retryAt != null && state.retryAt > claim.now) {
        this.#retryAt(destination, state.retryAt);
        return "waiting";
      }
      return "elsewhere";
    } catch (err) {
      this.deps.logger.warn({ err, destination }, "federation: could not claim a destination");
      return "waiting";
    }
  }

  /** Claims destinations with queued rows that nobody holds; `everywhere` also finds those never claimed. */
  async #sweep(everywhere: boolean): Promise<void> {
    if (!this.#started || this.#sweeping) return;
    this.#sweeping = true;
    try {
      const candidates = await this.deps.storage.federationQueue.claimable(this.#claim(), SWEEP_BATCH, everywhere);
      await Promise.all(candidates.filter((d) => !this.#jobs.has(d)).map((d) => this.#wake(d)));
    } catch (err) {
      this.deps.logger.warn({ err }, "federation: sweeping the outbox failed");
    } finally {
      this.#sweeping = false;
    }
  }

  /** A local timer for the end of a backoff (the sweep would find it too, later). */
  #retryAt(destination: string, at: number): void {
    if (!this.#started || this.#retryTimers.has(destination)) return;
    const timer = setTimeout(() => {
      this.#retryTimers.delete(destination);
      this.#kick([destination]);
    }, Math.max(0, at - this.deps.clock.now()));
    timer.unref();
    this.#retryTimers.set(destination, timer);
  }

  #startJob(destination: string, retryIntervalMs: number, failing: boolean): void {
    if (!this.#started) return;
    const job: Job = { destination, state: "running", dirty: false, failing, retryIntervalMs };
    this.#jobs.set(destination, job);
    this.#drive(job);
  }

  #drive(job: Job): void {
    job.state = "running";
    job.linger = undefined;
    const run = this.#run(job)
      .catch((err: unknown) => {
        // Storage trouble: let the lease run out by itself; a sweep takes the destination up again.
        this.#jobs.delete(job.destination);
        this.deps.logger.warn({ err, destination: job.destination }, "federation: delivering to a destination failed");
      })
      .finally(() => this.#running.delete(run));
    this.#running.add(run);
  }

  async #run(job: Job): Promise<void> {
    const queue = this.deps.storage.federationQueue;
    const { destination } = job;
    for (;;) {
      if (!this.#started) return;
      job.dirty = false;
      const batch = await queue.nextBatch(destination, MAX_PDUS_PER_TXN, MAX_EDUS_PER_TXN);
      if (batch.pdus.length === 0 && batch.edus.length === 0) {
        if (job.dirty) continue;
        break;
      }
      const now = this.deps.clock.now();
      // Typing that waited out a backoff is over by now: it would show someone typing who is not.
      const stale = batch.edus.filter((e) => e.eduType === "m.typing" && now - e.createdTs > STALE_TYPING_MS);
      if (stale.length > 0) {
        await queue.remove(stale.map((e) => e.id));
        continue;
      }
      // Still ours (a process that stalled past its lease may have lost the destination to
      // another), and the lease runs from now.
      if (!(await queue.claim(destination, this.#claim()))) {
        this.#jobs.delete(destination);
        return;
      }
      const outcome = await transmit(this.deps.client, this.deps.serverName, destination, batch, now);
      if (!this.#started) return;
      const ids = [...batch.pdus.map((p) => p.id), ...batch.edus.map((e) => e.id)];
      const counts = { destination, txnId: outcome.txnId, pdus: batch.pdus.length, edus: batch.edus.length };
      if (outcome.kind === "failed") {
        const interval = nextRetryInterval(job.retryIntervalMs);
        this.deps.logger.info({ ...counts, why: outcome.why, retryInMs: interval }, "federation: a transaction failed; backing off");
        // Listed until the backoff (which lets go of the lease) is written, so no wake starts a second job meanwhile.
        await queue.backoff(destination, this.#me, now + interval, interval, now);
        // Its next request (a transaction, say) must end this backoff even if it contacted us moments ago.
        this.#upChecked.delete(destination);
        this.#jobs.delete(destination);
        this.#retryAt(destination, now + interval);
        return;
      }
      if (outcome.kind === "refused") this.deps.logger.warn({ ...counts, why: outcome.why }, "federation: a transaction was refused; dropping it");
      else if (outcome.pduErrors) this.deps.logger.info({ ...counts, errors: outcome.pduErrors }, "federation: the destination rejected some PDUs");
      await queue.remove(ids);
      if (job.failing) {
        job.failing = false;
        job.retryIntervalMs = 0;
        await queue.resetBackoff(destination);
      }
    }
    job.state = "lingering";
    job.linger = setTimeout(() => {
      if (job.state !== "lingering" || !this.#started) return;
      job.state = "leaving";
      void this.#letGo(job).catch((err: unknown) => {
        this.#jobs.delete(destination);
        this.deps.logger.warn({ err, destination }, "federation: releasing a destination failed");
      });
    }, LINGER_MS);
    job.linger.unref();
  }

  async #letGo(job: Job): Promise<void> {
    const queue = this.deps.storage.federationQueue;
    // Listed until let go, so that news arriving meanwhile lands on the job (marks it dirty).
    await queue.release(this.#me, job.destination);
    this.#jobs.delete(job.destination);
    // Rows queued by a process that found the destination held here (and so told only us).
    if (this.#started && (job.dirty || (await queue.hasQueued(job.destination)))) this.#kick([job.destination]);
  }
}
