/**
 * Delegated leaves with several processes on one database. A job runs in the process that
 * accepted the delegation, but the SFU's webhooks reach whichever process the proxy picks, and
 * that process may die. So every process is told of every job (topic `livekit-delegated`) and
 * of every webhook signal (`livekit-participant`); a process keeps a note of the jobs the others
 * run, and when one of them dies, the first surviving process (by worker ID) starts its jobs
 * afresh. A job that two processes start (their views of who is alive differed for a moment)
 * ends up in one: announcing a job replaces the same job anywhere else.
 */
import type { Logger } from "pino";
import type { Cluster } from "../../storage/cluster.js";
import type { JobSignal, LeaveDelegations } from "./delegation.js";

/** What another process needs to run a job itself. */
export interface DelegatedLeave {
  room: string;
  identity: string;
  userId: string;
  delayId: string;
  delayTimeoutMs: number;
  /** The homeserver whose delayed-event API the job calls. */
  serverName: string;
}

const key = (room: string, identity: string) => `${room}\n${identity}`;

function isDelegatedLeave(b: unknown): b is DelegatedLeave {
  const d = b as Partial<DelegatedLeave> | null;
  return (
    typeof d === "object" &&
    d !== null &&
    typeof d.room === "string" &&
    typeof d.identity === "string" &&
    typeof d.userId === "string" &&
    typeof d.delayId === "string" &&
    typeof d.delayTimeoutMs === "number" &&
    typeof d.serverName === "string"
  );
}

export class SharedDelegations {
  /** Jobs other processes run, by (room, identity). */
  readonly #elsewhere = new Map<string, { owner: string; job: DelegatedLeave }>();

  constructor(
    private readonly cluster: Cluster,
    private readonly local: LeaveDelegations,
    /** Starts a job here (building its leave actions anew). */
    private readonly adopt: (job: DelegatedLeave) => Promise<void>,
    private readonly logger: Pick<Logger, "warn" | "info">,
  ) {
    cluster.subscribe("livekit-delegated", (body, from) => {
      if (!isDelegatedLeave(body)) return;
      local.participantEvent(body.room, body.identity, "replaced");
      this.#elsewhere.set(key(body.room, body.identity), { owner: from, job: body });
    });
    cluster.subscribe("livekit-finished", (body, from) => {
      const b = body as { room?: unknown; identity?: unknown } | null;
      if (typeof b?.room !== "string" || typeof b.identity !== "string") return;
      const k = key(b.room, b.identity);
      if (this.#elsewhere.get(k)?.owner === from) this.#elsewhere.delete(k);
    });
    cluster.subscribe("livekit-participant", (body) => {
      const b = body as { room?: unknown; identity?: unknown; signal?: unknown } | null;
      if (typeof b?.room === "string" && typeof b.identity === "string" && typeof b.signal === "string") {
        local.participantEvent(b.room, b.identity, b.signal as JobSignal);
      }
    });
    cluster.onWorkerGone((worker) => void this.#takeOver(worker));
  }

  /** A job started here: the others replace theirs and note ours. */
  started(job: DelegatedLeave): void {
    this.#elsewhere.delete(key(job.room, job.identity));
    this.cluster.publish("livekit-delegated", job);
  }

  /** A job here ended. */
  finished(room: string, identity: string): void {
    this.cluster.publish("livekit-finished", { room, identity });
  }

  /** News from the SFU, for whichever process runs the job. */
  participantEvent(room: string, identity: string, signal: JobSignal): void {
    this.local.participantEvent(room, identity, signal);
    this.cluster.publish("livekit-participant", { room, identity, signal });
  }

  async #takeOver(worker: string): Promise<void> {
    const orphans = [...this.#elsewhere].filter(([, e]) => e.owner === worker);
    for (const [k] of orphans) this.#elsewhere.delete(k);
    // One survivor adopts them all: the first by worker ID, as every survivor sees it.
    const first = [...this.cluster.workers()].sort()[0];
    if (orphans.length === 0 || first !== this.cluster.workerId) return;
    for (const [, { job }] of orphans) {
      try {
        await this.adopt(job);
        this.logger.info({ user: job.userId, lk_room: job.room, from: worker }, "took over a delegated leave from a process that is gone");
      } catch (err) {
        // The user's own delayed leave still stands and fires on its timer.
        this.logger.warn({ err: (err as Error).message, user: job.userId }, "could not take over a delegated leave");
      }
    }
  }
}
