/**
 * The SQLite side of `port-db`: the file of a stopped server, held exclusively for the whole
 * port, brought to the newest schema, and read table by table in batches.
 *
 * How a running server is noticed: every connection to a database in WAL mode (the server's
 * always is) keeps a SHARED lock on the database file from its first read until it closes, even
 * while idle. The porter sets `locking_mode = EXCLUSIVE` before its first read and then runs
 * `BEGIN EXCLUSIVE`, which needs an EXCLUSIVE lock on the file: SQLite cannot get it while any
 * other connection, of any process, has the file open, and reports SQLITE_BUSY. The lock is the
 * operating system's, so a server that crashed holds nothing and is not mistaken for a running
 * one. Once taken, the lock is kept until the porter closes the file, so a server started during
 * the port cannot open the database either (it waits, then fails with "database is locked").
 */
import { existsSync } from "node:fs";
import Database from "better-sqlite3";
import { migrate, NewerSchemaError } from "../sql/migrate.js";
import { STREAMS, type StreamName } from "../sql/streams.js";
import { SqliteDatabase } from "../sqlite/driver.js";

/** The port was refused or failed for a reason the message names in one line; main exits 1. */
export class PortRefusedError extends Error {}

/**
 * How long the porter waits for the file before calling it in use: a one-off command such as
 * register-user lets go within this; a running server never does.
 */
const BUSY_TIMEOUT_MS = 2000;

/** Kept by SQLite or by the migrations rather than holding data: never copied. */
const NOT_DATA = new Set(["sqlite_sequence", "stream_sequences", "schema_version"]);

export interface SourceTable {
  name: string;
  columns: string[];
  /** Tables whose rows this one's foreign keys point at: copied before it. */
  dependsOn: string[];
  /** False for a WITHOUT ROWID table, which is read in primary-key order instead. */
  rowid: boolean;
  primaryKey: string[];
}

/** A SQL identifier, quoted for either dialect. */
export function quoted(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export class SqliteSource {
  private constructor(
    readonly file: string,
    private readonly raw: Database.Database,
  ) {}

  /** Opens the file exclusively and migrates it; refuses a missing file or one a server has open. */
  static async open(file: string): Promise<SqliteSource> {
    if (!existsSync(file)) throw new PortRefusedError(`there is no SQLite database at ${file}`);
    const raw = new Database(file, { fileMustExist: true });
    try {
      raw.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      // Before the first read, so the connection takes the file for itself instead of sharing the WAL index.
      raw.pragma("locking_mode = EXCLUSIVE");
      raw.exec("BEGIN EXCLUSIVE");
      raw.exec("COMMIT");
    } catch (err) {
      raw.close();
      if ((err as { code?: unknown }).code === "SQLITE_BUSY") {
        throw new PortRefusedError(`the SQLite database is in use by a running server (${file}): stop it, then run port-db again`);
      }
      throw new PortRefusedError(`could not open the SQLite database ${file}: ${(err as Error).message}`);
    }
    try {
      await migrate(new SqliteDatabase(raw));
    } catch (err) {
      if (raw.open) raw.close();
      if (err instanceof NewerSchemaError) throw new PortRefusedError(`the SQLite database ${file}: ${err.message}`);
      throw err;
    }
    return new SqliteSource(file, raw);
  }

  schemaVersion(): number {
    return (this.raw.prepare("SELECT version FROM schema_version").get() as { version: number }).version;
  }

  /**
   * Every table that holds data, from the schema itself (so a table added by a later migration
   * is ported without a change here), ordered so that a table comes after those it references.
   */
  tables(): SourceTable[] {
    const rows = this.raw
      .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name")
      .all() as { name: string; sql: string | null }[];
    const tables = new Map<string, SourceTable>();
    for (const { name, sql } of rows) {
      if (NOT_DATA.has(name) || name.startsWith("sqlite_")) continue;
      const info = this.raw.prepare(`PRAGMA table_info(${quoted(name)})`).all() as { name: string; pk: number }[];
      const keys = this.raw.prepare(`PRAGMA foreign_key_list(${quoted(name)})`).all() as { table: string }[];
      tables.set(name, {
        name,
        columns: info.map((c) => c.name),
        dependsOn: [...new Set(keys.map((k) => k.table).filter((t) => t !== name))],
        rowid: !/\bWITHOUT\s+ROWID\b/i.test(sql ?? ""),
        primaryKey: info.filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk).map((c) => c.name),
      });
    }
    return dependencyOrder(tables);
  }

  count(table: string): number {
    return (this.raw.prepare(`SELECT COUNT(*) AS n FROM ${quoted(table)}`).get() as { n: number }).n;
  }

  /** Where each stream stands: the value its sequence last handed out. */
  streams(): Record<StreamName, number> {
    const rows = this.raw.prepare("SELECT name, last_value FROM stream_sequences").all() as { name: string; last_value: number }[];
    const out = Object.fromEntries(STREAMS.map((s) => [s, 0])) as Record<StreamName, number>;
    for (const r of rows) {
      // Backfilled history's (negative) positions are not a stream: the target recomputes them from the events.
      if (r.name === "backfill") continue;
      if (!(STREAMS as readonly string[]).includes(r.name)) throw new PortRefusedError(`the SQLite database has a stream this Switchboard does not know: ${r.name}`);
      out[r.name as StreamName] = r.last_value;
    }
    return out;
  }

  /**
   * The table's rows in batches of `size`, each row its values in `columns` order, ready to bind
   * on PostgreSQL. Keyset paging on the rowid keeps each batch one index seek.
   */
  *batches(table: SourceTable, size: number): Generator<(string | number | null)[][]> {
    const cols = table.columns.map(quoted).join(", ");
    const from = `FROM ${quoted(table.name)}`;
    if (table.rowid) {
      const first = this.raw.prepare(`SELECT _rowid_, ${cols} ${from} ORDER BY _rowid_ LIMIT ?`).raw(true).safeIntegers(true);
      const next = this.raw.prepare(`SELECT _rowid_, ${cols} ${from} WHERE _rowid_ > ? ORDER BY _rowid_ LIMIT ?`).raw(true).safeIntegers(true);
      let rows = first.all(size) as unknown[][];
      while (rows.length > 0) {
        yield rows.map((r) => this.#convert(table, r.slice(1)));
        if (rows.length < size) return;
        rows = next.all(rows[rows.length - 1]![0], size) as unknown[][];
      }
      return;
    }
    if (table.primaryKey.length > 0) {
      // A WITHOUT ROWID table (push actions, the largest of them): keyset paging on its key,
      // which is unique, so each batch is one seek however far into the table it starts.
      const key = table.primaryKey.map(quoted).join(", ");
      const at = table.primaryKey.map((c) => table.columns.indexOf(c));
      const first = this.raw.prepare(`SELECT ${cols} ${from} ORDER BY ${key} LIMIT ?`).raw(true).safeIntegers(true);
      const marks = at.map(() => "?").join(", ");
      const next = this.raw.prepare(`SELECT ${cols} ${from} WHERE (${key}) > (${marks}) ORDER BY ${key} LIMIT ?`).raw(true).safeIntegers(true);
      let rows = first.all(size) as unknown[][];
      while (rows.length > 0) {
        yield rows.map((r) => this.#convert(table, r));
        if (rows.length < size) return;
        const last = rows[rows.length - 1]!;
        rows = next.all(...at.map((i) => last[i]), size) as unknown[][];
      }
      return;
    }
    const order = table.columns.map(quoted).join(", ");
    const page = this.raw.prepare(`SELECT ${cols} ${from} ORDER BY ${order} LIMIT ? OFFSET ?`).raw(true).safeIntegers(true);
    for (let offset = 0; ; offset += size) {
      const rows = page.all(size, offset) as unknown[][];
      if (rows.length > 0) yield rows.map((r) => this.#convert(table, r));
      if (rows.length < size) return;
    }
  }

  /** A row's values as PostgreSQL takes them; refuses what it cannot store. */
  #convert(table: SourceTable, row: unknown[]): (string | number | null)[] {
    return row.map((value, i) => {
      if (value === null || typeof value === "number") return value;
      // Integers are read exactly (safeIntegers); one beyond 2^53 travels as text into BIGINT.
      if (typeof value === "bigint") return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
      const where = `${table.name}.${table.columns[i]}`;
      if (typeof value === "string") {
        if (value.includes("\0")) throw new PortRefusedError(`a value in ${where} holds a NUL character, which PostgreSQL cannot store`);
        return value;
      }
      throw new PortRefusedError(`a value in ${where} is binary, but every Switchboard column holds text or numbers`);
    });
  }

  /** Closes the file, which releases the exclusive lock. */
  close(): void {
    if (this.raw.open) this.raw.close();
  }
}

/** Parents first; among tables free to go, by name, so the order is the same every run. */
function dependencyOrder(tables: Map<string, SourceTable>): SourceTable[] {
  const done = new Set<string>();
  const out: SourceTable[] = [];
  while (out.length < tables.size) {
    const ready = [...tables.values()].filter((t) => !done.has(t.name) && t.dependsOn.every((d) => done.has(d) || !tables.has(d)));
    if (ready.length === 0) {
      const left = [...tables.keys()].filter((n) => !done.has(n));
      throw new PortRefusedError(`the SQLite tables' foreign keys form a cycle (${left.join(", ")}), so no copy order exists`);
    }
    for (const t of ready) {
      done.add(t.name);
      out.push(t);
    }
  }
  return out;
}
