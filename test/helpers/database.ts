/**
 * The database a test server uses. SQLite (a file in the test's folder) by default; with
 * SWITCHBOARD_TEST_POSTGRES set to a `postgres://` URL of a server where that user may create
 * databases, each test folder gets its own PostgreSQL database instead (C collation, as
 * Synapse requires), named after the folder so a restart with the same folder finds its data.
 */
import { createHash } from "node:crypto";
import { rmSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { stringify } from "yaml";

/** The PostgreSQL server the suite runs against, or undefined for SQLite. */
export const TEST_POSTGRES: string | undefined = process.env.SWITCHBOARD_TEST_POSTGRES || undefined;

/** A database name that is stable for a folder. */
export function databaseNameFor(dir: string): string {
  return `sbtest_${createHash("sha256").update(path.resolve(dir)).digest("hex").slice(0, 20)}`;
}

/** The URL of `database` on the test server. */
export function postgresUrl(database: string): string {
  const url = new URL(TEST_POSTGRES!);
  url.pathname = `/${database}`;
  return url.toString();
}

async function admin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: TEST_POSTGRES });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** Creates the folder's database unless it exists; returns its name. */
export async function createTestDatabase(dir: string): Promise<string> {
  const name = databaseNameFor(dir);
  await admin(async (c) => {
    const exists = await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    if (exists.rowCount === 0) {
      await c.query(`CREATE DATABASE ${name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`);
    }
  });
  return name;
}

export async function dropTestDatabase(dir: string): Promise<void> {
  const name = databaseNameFor(dir);
  await admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
}

/**
 * The `database` section of a config for a server whose data lives in `dir`: a file there, or
 * (with SWITCHBOARD_TEST_POSTGRES) that folder's PostgreSQL database, created if new.
 */
export async function databaseSection(dir: string): Promise<Record<string, unknown>> {
  if (!TEST_POSTGRES) return { name: "sqlite3", args: { database: path.join(dir, "homeserver.db") } };
  const name = await createTestDatabase(dir);
  return { name: "psycopg2", args: { dsn: postgresUrl(name), cp_min: 1, cp_max: 5 } };
}

/** The `database:` block of a YAML config for a server whose data lives in `dir` (see `databaseSection`). */
export async function databaseYaml(dir: string, sqliteFile = path.join(dir, "homeserver.db")): Promise<string> {
  const section = TEST_POSTGRES ? await databaseSection(dir) : { name: "sqlite3", args: { database: sqliteFile } };
  return stringify({ database: section });
}

/** Removes a test folder and, on PostgreSQL, that folder's database: what a test that passed `dir` cleans up. */
export async function removeTestData(dir: string): Promise<void> {
  rmSync(dir, { recursive: true, force: true });
  if (TEST_POSTGRES) await dropTestDatabase(dir);
}

/** Direct access to a test server's stored rows, on whichever backend the suite runs. */
export interface TestDatabase {
  readonly backend: "sqlite" | "postgres";
  /** Rows of a query with `?` placeholders (numbered for PostgreSQL). Use CAST(… AS INTEGER) for counts. */
  all<T>(sql: string, params?: unknown[]): Promise<T[]>;
  run(sql: string, params?: unknown[]): Promise<void>;
  close(): Promise<void>;
}

/**
 * Opens the database of the server whose data lives in `dir`: the SQLite file (by default
 * `dir/homeserver.db`, as `startServer` has it) or, on PostgreSQL, the folder's database.
 */
export async function openTestDatabase(dir: string, opts: { sqliteFile?: string; readonly?: boolean } = {}): Promise<TestDatabase> {
  if (!TEST_POSTGRES) {
    const db = new Database(opts.sqliteFile ?? path.join(dir, "homeserver.db"), { readonly: opts.readonly ?? false });
    return {
      backend: "sqlite",
      all: async <T>(sql: string, params: unknown[] = []) => db.prepare(sql).all(...params) as T[],
      run: async (sql, params = []) => void db.prepare(sql).run(...params),
      close: async () => void db.close(),
    };
  }
  const client = new pg.Client({ connectionString: postgresUrl(databaseNameFor(dir)) });
  await client.connect();
  if (opts.readonly) await client.query("SET default_transaction_read_only = on");
  const numbered = (sql: string) => {
    let n = 0;
    return sql.replace(/\?/g, () => `$${++n}`);
  };
  return {
    backend: "postgres",
    all: async <T>(sql: string, params: unknown[] = []) => (await client.query(numbered(sql), params)).rows as T[],
    run: async (sql, params = []) => void (await client.query(numbered(sql), params)),
    close: () => client.end(),
  };
}
