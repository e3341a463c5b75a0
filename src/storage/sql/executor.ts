/**
 * The one contract between the shared queries and a database driver. The stores in this
 * folder are written once against it; `sqlite/` and `postgres/` implement it.
 *
 * Queries use `?` placeholders in both dialects (the PostgreSQL driver numbers them). Where
 * the dialects differ, a query names both texts side by side (`Query`'s object form), so a
 * difference is visible next to the shared SQL instead of in a second copy of the store.
 */
import type { StreamName, StreamPositions } from "./streams.js";

export type Dialect = "sqlite" | "postgres";

/** A bound parameter. Booleans are stored as 0/1 in both dialects, so none is accepted here. */
export type SqlValue = string | number | null;

/** SQL text both dialects run, or one text per dialect where they differ. */
export type Query = string | { readonly sqlite: string; readonly postgres: string };

export interface Executor {
  readonly dialect: Dialect;
  all<T>(query: Query, params?: readonly SqlValue[]): Promise<T[]>;
  get<T>(query: Query, params?: readonly SqlValue[]): Promise<T | undefined>;
  /** Runs a write; resolves to the number of rows it changed. */
  run(query: Query, params?: readonly SqlValue[]): Promise<number>;
  /**
   * Runs `work` in one transaction: everything it writes commits together or not at all.
   * Called inside a transaction, it joins that one. A PostgreSQL transaction that lost a
   * deadlock or a serialisation check is run again, so `work` must only touch the database.
   * It resolves once readers can see what it wrote: every stream position it took is at or
   * below `StreamPositions.current`, so a wake-up sent next finds the change, and the
   * client's next `/sync` includes its own write.
   */
  transaction<T>(work: (tx: Transaction) => Promise<T>): Promise<T>;
}

export interface Transaction extends Executor {
  /**
   * Takes `count` new positions of a stream, in increasing order. Readers see them (through
   * `StreamPositions.current`) only once this transaction and every one that took an earlier
   * position have ended, so a reader that reads up to `current` never skips a row.
   */
  nextPositions(stream: StreamName, count: number): Promise<number[]>;
  /** One new position of a stream; see `nextPositions`. */
  nextPosition(stream: StreamName): Promise<number>;
  /** Runs several statements with no parameters, in order (schema migrations). */
  exec(script: string): Promise<void>;
}

/** A connection (SQLite) or a pool (PostgreSQL), with its streams. */
export interface SqlDatabase extends Executor {
  readonly streams: StreamPositions;
  close(): Promise<void>;
}

/** The text of a query in a dialect. */
export function textOf(query: Query, dialect: Dialect): string {
  return typeof query === "string" ? query : query[dialect];
}

/**
 * `column IN (list)` for a list passed as one JSON array parameter, so one prepared statement
 * serves any number of values: SQLite reads it with `json_each`, PostgreSQL with
 * `json_array_elements_text`.
 */
export function inJsonList(column: string): Query {
  return {
    sqlite: `${column} IN (SELECT value FROM json_each(?))`,
    postgres: `${column} IN (SELECT json_array_elements_text(?::json))`,
  };
}

/**
 * The elements of a JSON array parameter as rows named `alias`, for sending many rows in one
 * parameter. In both dialects `alias.value` is the element, so `alias.value ->> 0` is its first
 * field as text.
 */
export function jsonRows(alias: string): Query {
  return { sqlite: `json_each(?) ${alias}`, postgres: `json_array_elements(?::json) ${alias}` };
}

/**
 * `LIMIT n` with the number written into the statement, for limits the server chooses (a batch
 * size, a page it caps). SQLite prepares a statement again whenever a LIMIT parameter is bound
 * afresh, since its planner may use the value: about 9 µs per run, measured on the push
 * delivery's read of a user's pending notifications, where the query itself took 5. Each
 * distinct value is a statement of its own, so do not use it for numbers a client picks freely.
 */
export function limitRows(n: number): string {
  if (!Number.isSafeInteger(n) || n < 0) throw new TypeError(`not a row count: ${n}`);
  return `LIMIT ${n}`;
}

/** Builds a query from shared text around dialect-specific fragments. */
export function sql(strings: TemplateStringsArray, ...parts: Query[]): Query {
  const build = (d: Dialect) => strings.reduce((acc, s, i) => acc + s + (i < parts.length ? textOf(parts[i]!, d) : ""), "");
  const sqlite = build("sqlite");
  const postgres = build("postgres");
  return sqlite === postgres ? sqlite : { sqlite, postgres };
}

/** `FOR UPDATE` where the dialect has row locks; SQLite's write transaction already excludes other writers. */
export const FOR_UPDATE: Query = { sqlite: "", postgres: "FOR UPDATE" };

/** `FOR UPDATE SKIP LOCKED`: rows another transaction holds are passed over, not waited for. */
export const SKIP_LOCKED: Query = { sqlite: "", postgres: "FOR UPDATE SKIP LOCKED" };
