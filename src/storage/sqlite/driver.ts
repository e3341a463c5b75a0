/**
 * The SQLite side of `SqlDatabase`: one better-sqlite3 connection in WAL mode.
 *
 * better-sqlite3 is synchronous, but a transaction's work is async (it awaits other store
 * calls), so other requests could run statements between its steps on the same connection
 * and land inside it. A FIFO lock prevents that: while a transaction is open, every other
 * statement of this process waits for it. With no transaction open, a statement runs at
 * once, so the common single-statement path costs one synchronous call.
 */
import { mkdirSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { textOf, type Query, type SqlDatabase, type SqlValue, type Transaction } from "../sql/executor.js";
import { STREAMS, StreamTracker, TakenPositions, type StreamName } from "../sql/streams.js";

type Statement = Database.Statement<unknown[], unknown>;

/** A FIFO lock; `held` is checked synchronously by the fast path. */
class Lock {
  held = false;
  readonly #queue: (() => void)[] = [];

  acquire(): Promise<void> {
    if (!this.held) {
      this.held = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#queue.push(resolve));
  }

  release(): void {
    const next = this.#queue.shift();
    if (next) next();
    else this.held = false;
  }
}

export class SqliteDatabase implements SqlDatabase {
  readonly dialect = "sqlite" as const;
  readonly #statements = new Map<string, Statement>();
  readonly #lock = new Lock();
  #streams: StreamTracker | undefined;

  constructor(readonly db: Database.Database) {}

  get streams(): StreamTracker {
    if (!this.#streams) throw new Error("stream positions are read after migrations (loadStreams)");
    return this.#streams;
  }

  /** Reads where each stream's sequence stands; called once the schema is current. */
  async loadStreams(): Promise<void> {
    const rows = await this.all<{ name: string; last_value: number }>("SELECT name, last_value FROM stream_sequences");
    const start = Object.fromEntries(STREAMS.map((s) => [s, 0])) as Record<StreamName, number>;
    for (const r of rows) if ((STREAMS as readonly string[]).includes(r.name)) start[r.name as StreamName] = r.last_value;
    this.#streams = new StreamTracker(start);
  }

  statement(query: Query): Statement {
    const text = textOf(query, "sqlite");
    let s = this.#statements.get(text);
    if (!s) {
      s = this.db.prepare(text);
      this.#statements.set(text, s);
    }
    return s;
  }

  /** Runs `step` now when no transaction is open, else after the open ones. */
  #outside<T>(step: () => T): T | Promise<T> {
    if (!this.#lock.held) return step();
    return this.#lock.acquire().then(() => {
      try {
        return step();
      } finally {
        this.#lock.release();
      }
    });
  }

  async all<T>(query: Query, params: readonly SqlValue[] = []): Promise<T[]> {
    return this.#outside(() => this.statement(query).all(...params) as T[]);
  }

  async get<T>(query: Query, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return this.#outside(() => this.statement(query).get(...params) as T | undefined);
  }

  async run(query: Query, params: readonly SqlValue[] = []): Promise<number> {
    return this.#outside(() => this.statement(query).run(...params).changes);
  }

  async transaction<T>(work: (tx: Transaction) => Promise<T>): Promise<T> {
    await this.#lock.acquire();
    const tx = new SqliteTransaction(this);
    let committed = false;
    try {
      // IMMEDIATE takes the write lock at once, so another process (register-user) waits here.
      this.statement("BEGIN IMMEDIATE").run();
      let result: T;
      try {
        result = await work(tx);
        this.statement("COMMIT").run();
      } catch (err) {
        if (this.db.inTransaction) this.statement("ROLLBACK").run();
        throw err;
      }
      committed = true;
      return result;
    } finally {
      tx.positions.end(committed);
      this.#lock.release();
      // One connection commits in position order, so this resolves at once; it is here for the contract.
      if (committed) await tx.positions.visible();
    }
  }

  async close(): Promise<void> {
    await this.#lock.acquire();
    if (this.db.open) this.db.close();
    this.#lock.release();
  }
}

/** Statements of the open transaction: they bypass the lock the transaction holds. */
class SqliteTransaction implements Transaction {
  readonly dialect = "sqlite" as const;
  /** Held open until the transaction ends; see TakenPositions. */
  readonly positions = new TakenPositions(() => this.owner.streams);

  constructor(private readonly owner: SqliteDatabase) {}

  async all<T>(query: Query, params: readonly SqlValue[] = []): Promise<T[]> {
    return this.owner.statement(query).all(...params) as T[];
  }

  async get<T>(query: Query, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return this.owner.statement(query).get(...params) as T | undefined;
  }

  async run(query: Query, params: readonly SqlValue[] = []): Promise<number> {
    return this.owner.statement(query).run(...params).changes;
  }

  transaction<T>(work: (tx: Transaction) => Promise<T>): Promise<T> {
    return work(this);
  }

  async exec(script: string): Promise<void> {
    this.owner.db.exec(script);
  }

  async nextPositions(stream: StreamName, count: number): Promise<number[]> {
    const row = this.owner
      .statement("UPDATE stream_sequences SET last_value = last_value + ? WHERE name = ? RETURNING last_value")
      .get(count, stream) as { last_value: number };
    const positions = Array.from({ length: count }, (_, i) => row.last_value - count + 1 + i);
    return this.positions.take(stream, positions);
  }

  async nextPosition(stream: StreamName): Promise<number> {
    return (await this.nextPositions(stream, 1))[0]!;
  }
}

/** Opens the file with the pragmas durability needs, and a page cache of `cacheMib` (`database.args.cache_size_mib`). */
export function openSqliteFile(file: string, synchronous: "normal" | "full", cacheMib: number): SqliteDatabase {
  if (file !== ":memory:") mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  // First, so that two processes opening one new file wait for each other instead of failing.
  db.pragma("busy_timeout = 5000");
  db.pragma("journal_mode = WAL");
  // In WAL mode, NORMAL writes each commit to the WAL before the request is answered, so it
  // survives the process dying; FULL adds an fsync per commit, which power loss needs.
  db.pragma(`synchronous = ${synchronous === "full" ? "FULL" : "NORMAL"}`);
  // A checkpoint copies the WAL's pages into the database file (with an fsync) inside whichever
  // commit crosses the threshold. At SQLite's default of 1,000 pages a send into a room of ten
  // (some 40 pages: the event, its indexes, a push action per member) paid for one every 25
  // commits; at 10,000 the same hot pages are copied once for ten times as many commits, which
  // measured 20-30% less CPU per send. The WAL file grows to about 40 MiB between checkpoints.
  db.pragma("wal_autocheckpoint = 10000");
  db.pragma("foreign_keys = ON");
  // better-sqlite3 builds SQLite with a 16 MiB page cache, which a server fills within a few
  // thousand sends and then holds: most of its memory growth. Pages it no longer keeps are read
  // back from the OS's file cache; at 4 MiB, sends measured no slower.
  db.pragma(`cache_size = ${-Math.round(cacheMib * 1024)}`);
  return new SqliteDatabase(db);
}

