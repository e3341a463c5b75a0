/**
 * `worker_processes: N`: the first process starts N copies of itself with Node's `cluster`,
 * which share the listening sockets, and then only watches them. Each copy is an ordinary
 * Switchboard process with its own worker ID and pool; they find each other through the
 * database, exactly as processes started separately with `--worker-id` do (docs/workers.md).
 */
import cluster, { type Worker } from "node:cluster";
import type { Logger } from "pino";

/**
 * A worker that crashes, or that served once and then fails to start again, is started again
 * after this, doubling up to the cap while it keeps failing.
 */
const RESTART_DELAY_MS = 1000;
const RESTART_DELAY_MAX_MS = 30_000;
/** A worker that ran this long before crashing counts as healthy: its next restart is quick again. */
const HEALTHY_AFTER_MS = 60_000;

/** Told by a worker once it serves. */
export const READY_MESSAGE = "switchboard:ready";
/** Where a worker finds its ID. */
export const WORKER_ID_ENV = "SWITCHBOARD_WORKER_ID";

interface Slot {
  id: string;
  worker?: Worker;
  startedAt: number;
  /** This run of the worker serves. */
  ready: boolean;
  /** Some run of the worker in this slot has served: its setup is sound, so a failure to start is passing. */
  served: boolean;
  /** How long to wait before the next restart. */
  delay: number;
}

/**
 * Starts and watches the workers. Resolves with the exit code for the whole server: 0 after a
 * clean stop, or a worker's code when one fails before it ever served (a bad database, say,
 * which restarting will not fix). A worker that served once and then fails to start again (the
 * database is restarting, or it still lists the dead run's connections, so the worker ID looks
 * taken) is retried with backoff: the other workers keep serving meanwhile.
 */
export function superviseWorkers(count: number, baseId: string, logger: Logger): Promise<number> {
  return new Promise((resolve) => {
    const slots: Slot[] = Array.from({ length: count }, (_, i) => ({
      id: `${baseId}-${i + 1}`,
      startedAt: 0,
      ready: false,
      served: false,
      delay: RESTART_DELAY_MS,
    }));
    let stopping = false;
    let exitCode = 0;

    const start = (slot: Slot) => {
      slot.startedAt = Date.now();
      slot.ready = false;
      const worker = cluster.fork({ [WORKER_ID_ENV]: slot.id });
      slot.worker = worker;
      worker.on("message", (m: unknown) => {
        if (m === READY_MESSAGE) slot.ready = slot.served = true;
      });
      worker.on("exit", (code, signal) => {
        slot.worker = undefined;
        if (stopping) {
          if (slots.every((s) => !s.worker)) resolve(exitCode);
          return;
        }
        if (!slot.served) {
          // It never served: the others would fail the same way. Stop everything and say so.
          logger.error({ worker: slot.id, code, signal }, "a worker process failed to start; stopping");
          exitCode = typeof code === "number" && code !== 0 ? code : 1;
          stopAll("worker failed");
          return;
        }
        if (slot.ready && Date.now() - slot.startedAt > HEALTHY_AFTER_MS) slot.delay = RESTART_DELAY_MS;
        const wait = slot.delay;
        slot.delay = Math.min(slot.delay * 2, RESTART_DELAY_MAX_MS);
        const what = slot.ready ? "a worker process exited; starting it again" : "a worker process failed to start again; retrying";
        logger.error({ worker: slot.id, code, signal, restart_in_ms: wait }, what);
        setTimeout(() => {
          if (!stopping) start(slot);
        }, wait);
      });
    };

    const stopAll = (why: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ reason: why }, "stopping every worker process");
      for (const s of slots) s.worker?.process.kill("SIGTERM");
      if (slots.every((s) => !s.worker)) resolve(exitCode);
    };

    process.on("SIGTERM", () => stopAll("SIGTERM"));
    process.on("SIGINT", () => stopAll("SIGINT"));
    for (const slot of slots) start(slot);
    logger.info({ workers: slots.map((s) => s.id) }, `started ${count} worker processes`);
  });
}
