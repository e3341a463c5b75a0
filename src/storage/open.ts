/** Opens the configured database, brings its schema up to date and builds the stores. */
import type { DatabaseConfig } from "../config/config.js";
import { hostname } from "node:os";
import { instanceOf, SoloCluster } from "./cluster.js";
import type { Storage } from "./interfaces.js";
import { applicationNameOf, DuplicateWorkerError, PostgresCluster } from "./postgres/cluster.js";
import { ConnectionSettingsError, describeConnection, resolveConnection } from "./postgres/connection.js";
import { PostgresDatabase } from "./postgres/driver.js";
import { sqlStorage } from "./sql/index.js";
import { migrate, NewerSchemaError } from "./sql/migrate.js";
import { openSqliteFile } from "./sqlite/driver.js";

export { NewerSchemaError } from "./sql/migrate.js";
export { DuplicateWorkerError } from "./postgres/cluster.js";

/** The database could not be reached or refused us; the message names what was tried. */
export class DatabaseUnavailableError extends Error {}

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
    const db = openSqliteFile(config.path, config.synchronous);
    await migrate(db);
    await db.loadStreams();
    return sqlStorage(db, new SoloCluster(opts.workerId));
  }
  const instance = instanceOf(opts.workerId ?? defaultWorkerId());
  let db: PostgresDatabase | undefined;
  let cluster: PostgresCluster | undefined;
  try {
    db = await postgresDatabase(config, applicationNameOf(instance));
    await migrate(db);
    cluster = new PostgresCluster(instance, db.clientConfig, opts.onClusterLost ?? (() => undefined));
    // Listen before reading where the streams stand, so that nothing said in between is missed.
    await cluster.listen();
    await db.loadStreams();
    const joined = cluster;
    db.beforeAllocate = (stream) => joined.announced(stream);
    await cluster.join(db.streams);
  } catch (err) {
    await cluster?.close().catch(() => undefined);
    await db?.close().catch(() => undefined);
    if (err instanceof NewerSchemaError || err instanceof DuplicateWorkerError) throw err;
    throw new DatabaseUnavailableError(describeFailure(err, config));
  }
  return sqlStorage(db, cluster);
}

let opened = 0;
/** `<host>-<pid>`, and a counter after it when one process opens the database more than once (tests). */
function defaultWorkerId(): string {
  const base = `${hostname().split(".")[0] || "host"}-${process.pid}`;
  return opened++ === 0 ? base : `${base}-${opened}`;
}

type PostgresConfig = Extract<DatabaseConfig, { kind: "postgres" }>;

/** A pool for the configured PostgreSQL database, its TLS mode settled (see PostgresDatabase.connect). */
export async function postgresDatabase(config: PostgresConfig, applicationName?: string): Promise<PostgresDatabase> {
  const db = new PostgresDatabase({
    dsn: config.dsn?.reveal(),
    host: config.host,
    port: config.port,
    user: config.user,
    password: config.password?.reveal(),
    database: config.database,
    sslmode: config.sslmode,
    sslrootcert: config.sslrootcert,
    min: config.poolMin,
    max: config.poolMax,
    applicationName,
  });
  await db.connect();
  return db;
}

/** Where we tried to connect, without the password, and what PostgreSQL (or the network) said. */
export function describeFailure(err: unknown, config: PostgresConfig, fix = "check `database.args`"): string {
  if (err instanceof ConnectionSettingsError) return `${err.message}; ${fix}`;
  let where: string;
  try {
    const { host, port, user, database, sslmode } = config;
    where = describeConnection(resolveConnection({ dsn: config.dsn?.reveal(), host, port, user, database, sslmode }));
  } catch {
    where = "the configured `database.args.dsn`";
  }
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown }).code;
  return `could not open the PostgreSQL database ${where}: ${message}${typeof code === "string" ? ` (${code})` : ""}; ${fix}`;
}
