/** Opens the configured database, brings its schema up to date and builds the stores. */
import type { DatabaseConfig } from "../config/config.js";
import type { Storage } from "./interfaces.js";
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
  const db = postgresDatabase(config);
  try {
    await migrate(db);
    await db.loadStreams();
  } catch (err) {
    if (err instanceof NewerSchemaError) throw err;
    await db.close().catch(() => undefined);
    throw new DatabaseUnavailableError(describeFailure(err, config));
  }
  return sqlStorage(db);
}

type PostgresConfig = Extract<DatabaseConfig, { kind: "postgres" }>;

/** A pool for the configured PostgreSQL database; nothing is connected until the first query. */
export function postgresDatabase(config: PostgresConfig): PostgresDatabase {
  return new PostgresDatabase({
    connectionString: config.dsn?.reveal(),
    host: config.host,
    port: config.port,
    user: config.user,
    password: config.password?.reveal(),
    database: config.database,
    sslmode: config.sslmode,
    min: config.poolMin,
    max: config.poolMax,
  });
}

/** Where we tried to connect, without the password, and what PostgreSQL (or the network) said. */
export function describeFailure(err: unknown, config: PostgresConfig): string {
  let where: string;
  try {
    const url = config.dsn ? new URL(config.dsn.reveal()) : undefined;
    const host = config.host ?? url?.hostname ?? "localhost";
    const port = config.port ?? (url?.port ? Number(url.port) : 5432);
    const user = config.user ?? (url?.username || undefined);
    const database = config.database ?? (url?.pathname.slice(1) || undefined);
    where = `${user ?? "(default user)"}@${host}:${port}/${database ?? "(default database)"}`;
  } catch {
    where = "the configured `database.args.dsn`";
  }
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown }).code;
  return `could not open the PostgreSQL database ${where}: ${message}${typeof code === "string" ? ` (${code})` : ""}; check \`database.args\``;
}
