/**
 * Delegated leaves with several processes on one database, and across restarts. A job runs in
 * the process that accepted the delegation, but the SFU's webhooks reach whichever process the
 * proxy picks, and that process may die or be restarted. So every job is written to the
 * database with its owner (the process running it), every process is told of every job (topic
 * `livekit-delegated`: the same job anywhere else stops) and of every webhook signal
 * (`livekit-participant`); when a process goes, the first surviving one (by worker ID) adopts
 * every job whose owner is no longer there, and so does a process that starts. Taking a job
 * over is a conditional update of its owner, so only one process wins it.
 */
import type { Logger } from "pino";
import type { Cluster } from "../../storage/cluster.js";
import type { LiveKitDelegationStore, StoredDelegation } from "../../storage/livekit_delegations.js";
import type { Clock } from "../clock.js";
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

export interface SharedDelegationDeps {
  cluster: Cluster;
  local: LeaveDelegations;
  store: LiveKitDelegationStore;
  clock: Clock;
  /** Starts a job here (building its leave actions anew). */
  adopt: (job: DelegatedLeave) => Promise<void>;
  logger: Pick<Logger, "warn" | "info">;
}

export class SharedDelegations {
  constructor(private readonly deps: SharedDelegationDeps) {
    const { cluster, local } = deps;
    cluster.subscribe("livekit-delegated", (body) => {
      if (isDelegatedLeave(body)) local.participantEvent(body.room, body.identity, "replaced");
    });
    cluster.subscribe("livekit-participant", (body) => {
      const b = body as { room?: unknown; identity?: unknown; signal?: unknown } | null;
      if (typeof b?.room === "string" && typeof b.identity === "string" && typeof b.signal === "string") {
        local.participantEvent(b.room, b.identity, b.signal as JobSignal);
      }
    });
    cluster.onWorkerGone(() => {
      // One survivor adopts them all: the first by worker ID, as every survivor sees it. Not only
      // the jobs of the process that just went: an adoption that failed earlier, or a job whose
      // owner died while its adopter was dying too, is an orphan as much.
      if ([...cluster.workers()].sort()[0] === cluster.workerId) void this.resume();
    });
  }

  /** Adopts the jobs whose process is gone (all of them, after a restart of every process). */
  resume(): Promise<void> {
    const alive = new Set(this.deps.cluster.workers());
    return this.#adoptFrom((owner) => !alive.has(owner));
  }

  /** A job started here: written down as ours, and the others stop theirs. */
  async started(job: DelegatedLeave): Promise<void> {
    const { cluster, store, clock } = this.deps;
    cluster.publish("livekit-delegated", job);
    // Not being written down only costs the job its survival of a restart; it runs anyway.
    await store.put({ ...job, owner: cluster.workerId }, clock.now()).catch((err: unknown) => this.#failed("record", job, err));
  }

  /** A job here ended: its leave was sent, or it gave up (the client's own timer stands). */
  finished(job: Pick<DelegatedLeave, "room" | "identity" | "delayId" | "userId">): void {
    this.deps.store.remove(job.room, job.identity, job.delayId).catch((err: unknown) => this.#failed("forget", job, err));
  }

  /** News from the SFU, for whichever process runs the job. */
  participantEvent(room: string, identity: string, signal: JobSignal): void {
    this.deps.local.participantEvent(room, identity, signal);
    this.deps.cluster.publish("livekit-participant", { room, identity, signal });
  }

  async #adoptFrom(wasOwner: (owner: string) => boolean): Promise<void> {
    const { store, cluster, adopt, logger } = this.deps;
    let orphans: StoredDelegation[];
    try {
      orphans = (await store.all()).filter((d) => d.owner !== cluster.workerId && wasOwner(d.owner));
    } catch (err) {
      logger.warn({ err: (err as Error).message }, "could not read the delegated leaves to take over");
      return;
    }
    for (const { owner, ...job } of orphans) {
      try {
        if (!isDelegatedLeave(job) || !(await store.claim(job.room, job.identity, owner, cluster.workerId))) continue;
        await adopt(job);
        logger.info({ user: job.userId, lk_room: job.room, from: owner }, "took over a delegated leave from a process that is gone");
      } catch (err) {
        // The user's own delayed leave still stands and fires on its timer.
        this.#failed("take over", job, err);
      }
    }
  }

  #failed(what: string, job: Pick<DelegatedLeave, "userId">, err: unknown): void {
    this.deps.logger.warn({ err: err instanceof Error ? err.message : String(err), user: job.userId }, `could not ${what} a delegated leave`);
  }
}
