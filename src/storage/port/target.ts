/**
 * The PostgreSQL side of `port-db`: an empty database, given the schema, filled in one
 * transaction (a failure leaves no row behind), then compared with the source.
 */
import { Secret } from "../../config/types.js";
import { DatabaseUnavailableError } from "../errors.js";
import { describeFailure, postgresDatabase } from "../postgres/open.js";
import type { PostgresDatabase } from "../postgres/driver.js";
import type { Executor } from "../sql/executor.js";
import { migrate } from "../sql/migrate.js";
import { MIGRATIONS } from "../sql/migrations.js";
import { STREAMS, type StreamName } from "../sql/streams.js";
import { PortRefusedError, quoted, type SourceTable, type SqliteSource } from "./source.js";

/** The tables whose row counts a refusal names, in this order, when they hold rows. */
const HEADLINE = ["users", "events", "rooms"];
/** Rows per INSERT, within PostgreSQL's 65535 parameters per statement. */
const MAX_ROWS = 500;
const MAX_PARAMS = 30_000;

export class PostgresTarget {
  private constructor(
    private readonly db: PostgresDatabase,
    /** The database's name, as PostgreSQL reports it: what every message names. */
    readonly name: string,
  ) {}

  /** Connects; a failure names where it tried (never the password) and what PostgreSQL said. */
  static async open(dsn: string): Promise<PostgresTarget> {
    const config = { kind: "postgres" as const, dsn: new Secret(dsn), poolMin: 1, poolMax: 2 };
    let db: PostgresDatabase | undefined;
    try {
      db = await postgresDatabase(config);
      const row = await db.get<{ name: string }>("SELECT current_database() AS name");
      return new PostgresTarget(db, row!.name);
    } catch (err) {
      await db?.close().catch(() => undefined);
      throw new DatabaseUnavailableError(describeFailure(err, config, "check the URL given to --to-postgres"));
    }
  }

  /**
   * Refuses a database that is not empty. Empty means: no table at all, or only Switchboard's
   * tables (a server was started on it, or a port failed) with no row in any of them and a
   * schema version this Switchboard knows. A table of anything else (another application, or
   * Synapse) is refused too: the copy would land beside it, and the names may clash.
   */
  async refuseIfUsed(tables: readonly SourceTable[]): Promise<void> {
    const existing = (
      await this.db.all<{ name: string }>(
        "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name",
      )
    ).map((r) => r.name);
    if (existing.includes("schema_version")) {
      const version = (await this.db.get<{ v: number | null }>("SELECT MAX(version) AS v FROM schema_version"))?.v ?? 0;
      if (version > MIGRATIONS.length) {
        throw new PortRefusedError(
          `the PostgreSQL database ${this.name} was made by a newer Switchboard (schema version ${version}; this one knows up to ${MIGRATIONS.length})`,
        );
      }
    }
    const ours = new Set([...tables.map((t) => t.name), "schema_version"]);
    const foreign = existing.filter((t) => !ours.has(t));
    if (foreign.length > 0) {
      const shown = foreign.length > 5 ? [...foreign.slice(0, 5), `and ${foreign.length - 5} more`] : foreign;
      throw new PortRefusedError(`the PostgreSQL database ${this.name} has tables Switchboard does not make (${shown.join(", ")}): port into a new, empty database`);
    }
    const data = await dataIn(this.db, tables.filter((t) => existing.includes(t.name)));
    if (data) throw new PortRefusedError(`the PostgreSQL database ${this.name} has data (${data})`);
  }

  /** Brings the (empty) database to the newest schema, as a server starting on it would. */
  async migrate(): Promise<void> {
    await migrate(this.db);
  }

  /**
   * Copies every table, parents first, in batches, then sets each stream's sequence to where
   * SQLite's stands, all in one transaction. The tables are locked first, so a server started on
   * this database meanwhile waits for the commit, and emptiness is checked again under the lock.
   */
  async copy(
    source: SqliteSource,
    tables: readonly SourceTable[],
    streams: Record<StreamName, number>,
    copied: (table: string, rows: number) => void,
  ): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.run(`LOCK TABLE ${tables.map((t) => quoted(t.name)).join(", ")} IN ACCESS EXCLUSIVE MODE`);
      const data = await dataIn(tx, tables);
      if (data) throw new PortRefusedError(`the PostgreSQL database ${this.name} has data (${data})`);
      for (const table of tables) {
        await this.#sameColumns(tx, table);
        const perInsert = Math.max(1, Math.min(MAX_ROWS, Math.floor(MAX_PARAMS / table.columns.length)));
        const head = `INSERT INTO ${quoted(table.name)} (${table.columns.map(quoted).join(", ")}) VALUES `;
        const tuple = `(${table.columns.map(() => "?").join(", ")})`;
        let rows = 0;
        for (const batch of source.batches(table, perInsert)) {
          await tx.run(head + batch.map(() => tuple).join(", "), batch.flat());
          rows += batch.length;
        }
        copied(table.name, rows);
      }
      // Identity columns (the federation outbox's ID) were copied with their values: their
      // sequences go past the largest, so the next row PostgreSQL numbers does not collide.
      const identities = await tx.all<{ table_name: string; column_name: string }>(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() AND is_identity = 'YES'",
      );
      for (const { table_name: t, column_name: c } of identities) {
        await tx.get(`SELECT setval(pg_get_serial_sequence(?, ?), COALESCE((SELECT MAX(${quoted(c)}) FROM ${quoted(t)}), 0) + 1, false)`, [quoted(t), c]);
      }
      // setval is not undone by a rollback; that is harmless, as the next attempt sets it again.
      for (const stream of STREAMS) {
        const position = streams[stream];
        // A sequence starts at 1: "not called yet" at 1 is position 0, as a new server's.
        if (position > 0) await tx.get("SELECT setval(?::regclass, ?::bigint)", [`stream_${stream}`, position]);
        else await tx.get("SELECT setval(?::regclass, 1, false)", [`stream_${stream}`]);
      }
      // History fetched from other servers sits at negative positions: the next one goes below the lowest.
      const lowest = (await tx.get<{ lowest: number | null }>("SELECT MIN(stream_ordering) AS lowest FROM events"))?.lowest ?? 0;
      if (lowest < 0) await tx.get("SELECT setval('backfill_ordering', ?::bigint)", [-lowest]);
    });
  }

  /** The copy's differences from the source (none when it is whole): row counts and stream positions. */
  async differences(counts: ReadonlyMap<string, number>, streams: Record<StreamName, number>): Promise<string[]> {
    const found: string[] = [];
    for (const [table, want] of counts) {
      const got = (await this.db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM ${quoted(table)}`))!.n;
      if (got !== want) found.push(`${table} has ${want} rows in SQLite but ${got} in PostgreSQL`);
    }
    // Read as a starting server reads them.
    await this.db.loadStreams();
    for (const s of STREAMS) {
      const got = this.db.streams.current(s);
      if (got !== streams[s]) found.push(`stream ${s} is at ${streams[s]} in SQLite but ${got} in PostgreSQL`);
    }
    return found;
  }

  /** Refuses a table whose columns differ between the two schemas: a bug, never to be papered over. */
  async #sameColumns(tx: Executor, table: SourceTable): Promise<void> {
    const columns = (
      await tx.all<{ name: string }>(
        "SELECT column_name AS name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?",
        [table.name],
      )
    ).map((r) => r.name);
    if (columns.length === 0) throw new PortRefusedError(`the PostgreSQL schema has no table ${table.name}, which the SQLite one has`);
    const onlySqlite = table.columns.filter((c) => !columns.includes(c));
    const onlyPostgres = columns.filter((c) => !table.columns.includes(c));
    if (onlySqlite.length > 0 || onlyPostgres.length > 0) {
      throw new PortRefusedError(
        `the table ${table.name} has different columns in SQLite and PostgreSQL (only in SQLite: ${onlySqlite.join(", ") || "none"}; only in PostgreSQL: ${onlyPostgres.join(", ") || "none"})`,
      );
    }
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

/** What data the tables hold, for a refusal ("2 users, 40 events"), or undefined when none. */
async function dataIn(ex: Executor, tables: readonly SourceTable[]): Promise<string | undefined> {
  const used: string[] = [];
  for (const t of tables) {
    const row = await ex.get<{ used: number }>(`SELECT CASE WHEN EXISTS (SELECT 1 FROM ${quoted(t.name)}) THEN 1 ELSE 0 END AS used`);
    if (row?.used) used.push(t.name);
  }
  if (used.length === 0) return undefined;
  const headline = HEADLINE.filter((t) => used.includes(t));
  if (headline.length === 0) return `rows in ${used.join(", ")}`;
  const counts: string[] = [];
  for (const t of headline) counts.push(`${(await ex.get<{ n: number }>(`SELECT COUNT(*) AS n FROM ${quoted(t)}`))!.n} ${t}`);
  return counts.join(", ");
}
