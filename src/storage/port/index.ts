/**
 * `switchboard port-db`: copies a stopped server's SQLite database into an empty PostgreSQL
 * database, like Synapse's synapse_port_db. The SQLite file is held exclusively throughout (see
 * source.ts), the copy is one PostgreSQL transaction (see target.ts), and the result is checked
 * against the source before the command reports success.
 */
import type { StreamName } from "../sql/streams.js";
import { PortRefusedError, SqliteSource } from "./source.js";
import { PostgresTarget } from "./target.js";

export { PortRefusedError };

export interface PortReport {
  /** The SQLite file ported from. */
  sqlite: string;
  /** The PostgreSQL database's name. */
  database: string;
  schemaVersion: number;
  /** Every table copied, in the order copied, with its row count (equal on both sides). */
  tables: { name: string; rows: number }[];
  /** Each stream's position (equal on both sides). */
  streams: Record<StreamName, number>;
}

/**
 * Ports `sqlitePath` into the database at `dsn`. `progress` gets a line as each step ends.
 * Throws PortRefusedError (the message says why, in one line) when the SQLite file is missing,
 * in use or too new, when the PostgreSQL database holds anything, or when the copy does not
 * match; DatabaseUnavailableError when PostgreSQL cannot be reached.
 */
export async function portToPostgres(sqlitePath: string, dsn: string, progress: (line: string) => void): Promise<PortReport> {
  const source = await SqliteSource.open(sqlitePath);
  try {
    const tables = source.tables();
    const streams = source.streams();
    const schemaVersion = source.schemaVersion();
    const target = await PostgresTarget.open(dsn);
    try {
      await target.refuseIfUsed(tables);
      await target.migrate();
      progress(`Copying ${sqlitePath} (schema version ${schemaVersion}) into the PostgreSQL database ${target.name}, in one transaction:`);
      const width = Math.max(...tables.map((t) => t.name.length));
      await target.copy(source, tables, streams, (table, rows) => progress(`  ${table.padEnd(width)}  ${rows}`));
      // The file is held exclusively, so these counts are the copy's too.
      const counts = new Map(tables.map((t) => [t.name, source.count(t.name)]));
      const differences = await target.differences(counts, streams);
      if (differences.length > 0) {
        throw new PortRefusedError(
          `the copy in the PostgreSQL database ${target.name} does not match the SQLite database (${differences.join("; ")}); drop and recreate that database before trying again`,
        );
      }
      return {
        sqlite: sqlitePath,
        database: target.name,
        schemaVersion,
        tables: [...counts].map(([name, rows]) => ({ name, rows })),
        streams,
      };
    } finally {
      await target.close();
    }
  } finally {
    source.close();
  }
}

const PLACEHOLDER = "PASSWORD-PLACEHOLDER";

/** The DSN with any password (in the user part or a `password` parameter) shown as `<password>`. */
export function maskedDsn(dsn: string): string {
  let url: URL;
  try {
    url = new URL(dsn);
  } catch {
    return "postgres://USER:<password>@HOST:PORT/DATABASE";
  }
  if (url.password) url.password = PLACEHOLDER;
  if (url.searchParams.has("password")) url.searchParams.set("password", PLACEHOLDER);
  return url.toString().replaceAll(PLACEHOLDER, "<password>");
}

/** The `database:` section that makes a server use the ported database, without the real password. */
export function databaseSection(dsn: string): string {
  return ["database:", "  name: psycopg2", "  args:", `    dsn: ${JSON.stringify(maskedDsn(dsn))}`].join("\n");
}
