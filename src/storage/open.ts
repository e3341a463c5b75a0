/** Opens the configured database, brings its schema up to date and builds the stores. */
import type { DatabaseConfig } from "../config/config.js";
import type { Storage } from "./interfaces.js";
import { ConnectionSettingsError, describeConnection, resolveConnection } from "./postgres/connection.js";
import { PostgresDatabase } from "./postgres/driver.js";
import { sqlStorage } from "./sql/index.js";
import { migrate, NewerSchemaError } from "./sql/migrate.js";
import { openSqliteFile } from "./sqlite/driver.js";

export { NewerSchemaError } from "./sql/migrate.js";

/** The database could not be reached or refused us; the message names what was tried. */
export class DatabaseUnavailableError extends Error {}

export async function openStorage(config: DatabaseConfig): Promise<Storage> {
  if (config.kind === "sqlite") {
    const db = openSqliteFile(config.path, config.synchronous);
    await migrate(db);
    await db.loadStreams();
    return sqlStorage(db);
  }
  let db: PostgresDatabase | undefined;
  try {
    db = await postgresDatabase(config);
    await migrate(db);
    await db.loadStreams();
  } catch (err) {
    if (err instanceof NewerSchemaError) throw err;
    await db?.close().catch(() => undefined);
    throw new DatabaseUnavailableError(describeFailure(err, config));
  }
  return sqlStorage(db);
}

type PostgresConfig = Extract<DatabaseConfig, { kind: "postgres" }>;

/** A pool for the configured PostgreSQL database, its TLS mode settled (see PostgresDatabase.connect). */
export async function postgresDatabase(config: PostgresConfig): Promise<PostgresDatabase> {
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
