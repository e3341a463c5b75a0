/**
 * The processes that share one database. With PostgreSQL several Switchboard processes may
 * serve one homeserver (docs/workers.md); they tell each other what changed through the
 * database itself (LISTEN/NOTIFY, see postgres/cluster.ts). With SQLite there is one process,
 * and this is `SoloCluster`: nothing to tell anyone.
 */
import { randomBytes } from "node:crypto";

/** A worker ID: what `--worker-id` accepts, and what PostgreSQL shows as the connection's application. */
export const WORKER_ID_PATTERN = /^[A-Za-z0-9._-]{1,40}$/;

export interface Cluster {
  /** This process's name among the processes on the database. */
  readonly workerId: string;
  /**
   * Sends `body` (JSON) to every other process, after everything published before it and after
   * this process's stream positions known at this moment. Fire and forget: a process that is
   * not there now does not get it.
   */
  publish(topic: string, body: unknown): void;
  /** Handles what other processes publish on `topic`, in the order they published it. */
  subscribe(topic: string, handler: (body: unknown, from: string) => void): void;
  /** The processes on the database now, this one included. */
  workers(): readonly string[];
  /**
   * Called when another process has gone (stopped, or died: its connections closed). By then
   * its transactions have ended and its positions no longer hold readers back.
   */
  onWorkerGone(listener: (workerId: string) => void): void;
}

/** A worker ID made unique among every process that ever ran on the database: `<id>#<instance>`. */
export function instanceOf(workerId: string): string {
  return `${workerId}#${randomBytes(4).toString("hex")}`;
}

/** One process alone on its database. */
export class SoloCluster implements Cluster {
  readonly workerId: string;

  constructor(name = "main") {
    this.workerId = instanceOf(name);
  }

  publish(): void {}

  subscribe(): void {}

  workers(): readonly string[] {
    return [this.workerId];
  }

  onWorkerGone(): void {}
}
