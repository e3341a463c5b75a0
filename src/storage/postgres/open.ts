/**
 * Opens a PostgreSQL database for storage: the pool, the schema, and this process's place among
 * the others on the same database. Its own module so that `pg` is loaded only when configured.
 */
import type { DatabaseConfig } from "../../config/config.js";
import { instanceOf } from "../cluster.js";
import { DatabaseUnavailableError, DuplicateWorkerError } from "../errors.js";
import type { Storage } from "../interfaces.js";
import { sqlStorage } from "../sql/index.js";
import { migrate, NewerSchemaError } from "../sql/migrate.js";
import { applicationNameOf, PostgresCluster } from "./cluster.js";
import { ConnectionSettingsError, describeConnection, resolveConnection } from "./connection.js";
import { PostgresDatabase } from "./driver.js";

export async function openPostgresStorage(config: PostgresConfig, workerId: string, onClusterLost?: (err: Error) => void): Promise<Storage> {
  const instance = instanceOf(workerId);
  let db: PostgresDatabase | undefined;
  let cluster: PostgresCluster | undefined;
  try {
    db = await postgresDatabase(config, applicationNameOf(instance));
    await migrate(db);
    cluster = new PostgresCluster(instance, db.clientConfig, onClusterLost ?? (() => undefined));
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
