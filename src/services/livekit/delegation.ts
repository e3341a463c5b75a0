/**
 * Delegated leave: a client hands its delayed "leave" event (MSC4140) to the
 * service, which keeps restarting it while the client is connected to the SFU
 * and sends it once the client is gone. The client's own timer stays as the
 * fallback, so a job that gives up is never worse than no delegation.
 *
 * Each job follows lk-jwt-service's life cycle:
 *
 *   waiting ──joined / found on SFU──▶ connected ──left / gone from SFU──▶ disconnected (send)
 *      │                                   │
 *      ├──aborted connection──▶ aborted ◀──┴── restart answered 404, or kept failing
 *      └──not seen within min(delay, 1 h)──▶ disconnected (send)
 *
 * "Connected" and "left" come from LiveKit webhooks and, in addition, from
 * polling LiveKit's GetParticipant: with backoff until the participant is
 * found, then (if configured) every sanity-check interval in case a webhook
 * was lost. A new job for the same room and identity replaces the old one.
 */
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { LeaveAction, LeaveActions } from "./leave_actions.js";

export type JobState = "waiting" | "connected" | "disconnected" | "aborted" | "replaced";
export type JobSignal =
  | "joined"
  | "found"
  | "left_intentionally"
  | "left_aborted"
  | "gone"
  | "not_seen"
  | "restart_gone"
  | "restart_failed"
  | "replaced";

const TRANSITIONS: Record<JobState, Partial<Record<JobSignal, JobState>>> = {
  waiting: { joined: "connected", found: "connected", left_aborted: "aborted", not_seen: "disconnected", replaced: "replaced" },
  connected: {
    left_intentionally: "disconnected",
    left_aborted: "disconnected",
    gone: "disconnected",
    restart_gone: "aborted",
    restart_failed: "aborted",
    replaced: "replaced",
  },
  disconnected: { replaced: "replaced" },
  aborted: { replaced: "replaced" },
  replaced: {},
};

export interface JobParams {
  room: string;
  identity: string;
  delayId: string;
  delayTimeoutMs: number;
  actions: LeaveActions;
  /** Who, for log lines. */
  userId: string;
}

export interface PresenceProbe {
  /** True present, false confirmed absent; throws when the SFU cannot tell. */
  participantPresent(room: string, identity: string): Promise<boolean>;
}

interface JobDeps {
  probe: PresenceProbe;
  sanityIntervalMs: number;
  clock: Clock;
  logger: Pick<Logger, "info" | "warn">;
  finished(job: LeaveJob): void;
}

/** The sticky-event lifetime: past it the membership is gone anyway. */
const MAX_WAIT_MS = 3_600_000;
/** Restart when 80 % of the delay has passed, leaving the rest for retries. */
const RESTART_FRACTION = 0.8;
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_FACTOR = 1.5;
const BACKOFF_MAX_MS = 60_000;

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/** 1 s, growing by half each time up to a minute, ±50 % so that many jobs do not retry in step. */
function* backoff(): Generator<number> {
  for (let next = BACKOFF_FIRST_MS; ; next = Math.min(next * BACKOFF_FACTOR, BACKOFF_MAX_MS)) {
    yield next * (0.5 + Math.random());
  }
}

export class LeaveJob {
  #state: JobState = "waiting";
  /** Ends everything the job does. */
  readonly #life = new AbortController();
  /** Ends what belongs to the current state (its timers, the restart loop). */
  #phase = new AbortController();
  /** By when the delayed event fires on its own, as far as we know. */
  #deadline = 0;

  constructor(
    readonly params: JobParams,
    private readonly deps: JobDeps,
  ) {}

  get state(): JobState {
    return this.#state;
  }

  start(): void {
    const waitMs = Math.min(MAX_WAIT_MS, this.params.delayTimeoutMs);
    const waiting = this.#phase.signal;
    void sleep(waitMs, waiting).then(() => {
      if (!waiting.aborted) this.signal("not_seen");
    });
    void this.#watchPresence();
  }

  stop(): void {
    this.#phase.abort();
    this.#life.abort();
  }

  signal(signal: JobSignal): void {
    const next = TRANSITIONS[this.#state][signal];
    if (next === undefined) return; // Stale or duplicate news (a late webhook, a late timer): nothing to do.
    this.deps.logger.info(
      { user: this.params.userId, room: this.params.room, from: this.#state, to: next, signal },
      "delegated leave: state change",
    );
    this.#state = next;
    this.#phase.abort();
    this.#phase = new AbortController();
    if (next === "connected") {
      this.#deadline = this.deps.clock.now() + this.params.delayTimeoutMs;
      void this.#keepRestarting(this.#phase.signal);
    } else if (next === "disconnected") {
      void this.#sendLeave();
    } else if (next === "aborted") {
      this.deps.finished(this);
    } else if (next === "replaced") {
      this.stop();
    }
  }

  /** Runs an action until it succeeds, the event is gone, the budget is spent, or `signal` aborts. */
  async #persist(action: LeaveAction, budgetMs: number, signal: AbortSignal): Promise<"done" | "gone" | "failed"> {
    const started = this.deps.clock.now();
    const delays = backoff();
    for (;;) {
      const outcome = await this.params.actions.act(action);
      if (outcome.kind !== "retry") return outcome.kind;
      const wait = outcome.afterMs ?? delays.next().value;
      if (this.deps.clock.now() - started + wait > budgetMs || signal.aborted) {
        this.deps.logger.warn({ user: this.params.userId, action, reason: outcome.reason }, "delegated leave: giving up on an action");
        return "failed";
      }
      await sleep(wait, signal);
      if (signal.aborted) return "failed";
    }
  }

  async #keepRestarting(signal: AbortSignal): Promise<void> {
    // The first restart goes out at once: we cannot know how long ago the client last restarted it.
    while (!signal.aborted) {
      const budget = this.#deadline - this.deps.clock.now();
      const result = budget > 0 ? await this.#persist("restart", budget, signal) : "failed";
      if (signal.aborted) return;
      if (result !== "done") {
        this.signal(result === "gone" ? "restart_gone" : "restart_failed");
        return;
      }
      this.#deadline = this.deps.clock.now() + this.params.delayTimeoutMs;
      await sleep(this.params.delayTimeoutMs * RESTART_FRACTION, signal);
    }
  }

  async #sendLeave(): Promise<void> {
    // Keep trying until the event would have fired by itself anyway (at least a second, at most an hour).
    const budget = Math.min(MAX_WAIT_MS, Math.max(1000, this.#deadline - this.deps.clock.now()));
    await this.#persist("send", budget, this.#life.signal);
    if (!this.#life.signal.aborted) this.deps.finished(this);
  }

  /** Polls the SFU: until the participant shows up, then (optionally) now and then to see it is still there. */
  async #watchPresence(): Promise<void> {
    const signal = this.#life.signal;
    const { room, identity } = this.params;
    const until = this.deps.clock.now() + Math.min(MAX_WAIT_MS, this.params.delayTimeoutMs);
    const delays = backoff();
    for (;;) {
      if (signal.aborted || this.#state !== "waiting") break;
      const present = await this.deps.probe.participantPresent(room, identity).catch(() => false);
      if (present) {
        this.signal("found");
        break;
      }
      const wait = delays.next().value;
      if (this.deps.clock.now() + wait > until) return;
      await sleep(wait, signal);
    }
    const every = this.deps.sanityIntervalMs;
    while (every > 0 && !signal.aborted) {
      await sleep(every, signal);
      if (signal.aborted || this.#state !== "connected") return;
      try {
        // Only a definite "not there" counts; an SFU that cannot answer right now proves nothing.
        if (!(await this.deps.probe.participantPresent(room, identity))) {
          this.signal("gone");
          return;
        }
      } catch {
        continue;
      }
    }
  }
}

/** The running jobs, one per (LiveKit room, identity). */
export class LeaveDelegations {
  readonly #jobs = new Map<string, LeaveJob>();

  constructor(private readonly deps: Omit<JobDeps, "finished"> & { onFinished?: (job: JobParams) => void }) {}

  add(params: JobParams): LeaveJob {
    const key = `${params.room}\n${params.identity}`;
    this.#jobs.get(key)?.signal("replaced");
    const job: LeaveJob = new LeaveJob(params, {
      ...this.deps,
      finished: (done) => {
        if (this.#jobs.get(key) === done) {
          this.#jobs.delete(key);
          this.deps.onFinished?.(done.params);
        }
        done.stop();
      },
    });
    this.#jobs.set(key, job);
    job.start();
    return job;
  }

  /** News from the SFU's webhook. */
  participantEvent(room: string, identity: string, signal: JobSignal): void {
    this.#jobs.get(`${room}\n${identity}`)?.signal(signal);
  }

  /** For tests and diagnostics. */
  list(): { room: string; identity: string; userId: string; delayId: string; state: JobState }[] {
    return [...this.#jobs.values()].map((j) => ({ room: j.params.room, identity: j.params.identity, userId: j.params.userId, delayId: j.params.delayId, state: j.state }));
  }

  /** Stops every job without sending anything: the clients' own timers remain. */
  stop(): void {
    for (const job of this.#jobs.values()) job.stop();
    this.#jobs.clear();
  }
}
