/** Opens the configured database, brings its schema up to date and builds the stores. */
import type { DatabaseConfig } from "../config/config.js";
import { hostname } from "node:os";
import { SoloCluster } from "./cluster.js";
import type { Storage } from "./interfaces.js";
import { sqlStorage } from "./sql/index.js";
import { migrate } from "./sql/migrate.js";
import { openSqliteFile } from "./sqlite/driver.js";

export { NewerSchemaError } from "./sql/migrate.js";
export { DatabaseUnavailableError, DuplicateWorkerError } from "./errors.js";

export interface OpenOptions {
  /** This process's name among those on the database (`--worker-id`); made up when not given. */
  workerId?: string;
  /**
   * PostgreSQL: the connection that ties this process to the others broke. The process must
   * not go on serving (its view of the others is frozen); the caller decides how to stop.
   */
  onClusterLost?: (err: Error) => void;
}

export async function openStorage(config: DatabaseConfig, opts: OpenOptions = {}): Promise<Storage> {
  if (config.kind === "sqlite") {
    const db = openSqliteFile(config.path, config.synchronous, config.cacheMib);
    await migrate(db);
    await db.loadStreams();
    return sqlStorage(db, new SoloCluster(opts.workerId));
  }
  // Loaded only for PostgreSQL: a SQLite server never holds the driver in memory.
  const { openPostgresStorage } = await import("./postgres/open.js");
  return openPostgresStorage(config, opts.workerId ?? defaultWorkerId(), opts.onClusterLost);
}

let opened = 0;
/** `<host>-<pid>`, and a counter after it when one process opens the database more than once (tests). */
function defaultWorkerId(): string {
  const base = `${hostname().split(".")[0] || "host"}-${process.pid}`;
  return opened++ === 0 ? base : `${base}-${opened}`;
}
