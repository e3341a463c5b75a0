/**
 * The PostgreSQL side of `SqlDatabase`: a `pg` pool. Statements are prepared by name on each
 * connection the first time it runs them, so a hot query is parsed once per connection.
 * Transactions run at READ COMMITTED with explicit row locks where a step reads then writes
 * (the stores say which); one that loses a deadlock is run again.
 */
import type { ConnectionOptions } from "node:tls";
import pg from "pg";
import { resolveConnection, tlsOptions, type ConnectionSettings, type ResolvedConnection } from "./connection.js";
import { textOf, type Query, type SqlDatabase, type SqlValue, type Transaction } from "../sql/executor.js";
import { STREAMS, StreamTracker, TakenPositions, type StreamName } from "../sql/streams.js";
import { UnstorableTextError } from "../errors.js";

/** Where to connect (resolved, see connection.ts) and the pool's bounds. */
export interface PostgresOptions extends ConnectionSettings {
  min: number;
  max: number;
  /** What the connections call themselves in `pg_stat_activity` (cluster.ts relies on it). */
  applicationName?: string;
}

/** Deadlock and serialisation failure: the transaction is safe to run again. */
const RETRYABLE = new Set(["40P01", "40001"]);
const MAX_ATTEMPTS = 5;

/** BIGINT (int8) and COUNT(*) come back as numbers: every value stored fits in 2^53. */
const INT8_OID = 20;
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as "text")) as typeof pg.types.getTypeParser,
};

/** `?` placeholders numbered as PostgreSQL wants them (`$1`, `$2` …). No query here has a `?` inside a literal. */
function numbered(text: string): string {
  let n = 0;
  return text.replace(/\?/g, () => `$${++n}`);
}

type Queryable = pg.Pool | pg.PoolClient;

/** Text with a NUL (22021), jsonb with a `\u0000` escape (22P05): SQLite stores both, PostgreSQL cannot. */
const UNSTORABLE_TEXT = new Set(["22021", "22P05"]);

function query(on: Queryable, config: pg.QueryConfig): Promise<pg.QueryResult> {
  return on.query(config).catch((err: unknown) => {
    const code = (err as { code?: unknown }).code;
    throw typeof code === "string" && UNSTORABLE_TEXT.has(code) ? new UnstorableTextError("Text may not contain NUL characters") : err;
  });
}

class Statements {
  readonly #names = new Map<string, { name: string; text: string }>();

  config(query: Query, params: readonly SqlValue[]): pg.QueryConfig {
    const raw = textOf(query, "postgres");
    let s = this.#names.get(raw);
    if (!s) {
      s = { name: `sb${this.#names.size}`, text: numbered(raw) };
      this.#names.set(raw, s);
    }
    return { name: s.name, text: s.text, values: params as unknown[] };
  }
}

export class PostgresDatabase implements SqlDatabase {
  readonly dialect = "postgres" as const;
  readonly statements = new Statements();
  #streams: StreamTracker | undefined;

  readonly connection: ResolvedConnection;
  #pool: pg.Pool | undefined;
  #clientConfig: pg.ClientConfig | undefined;
  /**
   * Awaited before a transaction asks a stream's sequence for positions, once the tracker
   * holds readers back: with other processes on the database, they must know first.
   */
  beforeAllocate: (stream: StreamName) => Promise<void> = () => Promise.resolve();

  /** Throws ConnectionSettingsError for a malformed `dsn`; connects nothing until `connect`. */
  constructor(readonly options: PostgresOptions) {
    this.connection = resolveConnection(options);
  }

  get pool(): pg.Pool {
    if (!this.#pool) throw new Error("the PostgreSQL pool is used after connect()");
    return this.#pool;
  }

  /**
   * Makes the pool. With sslmode `prefer` (libpq's default, and so most Synapse configs) TLS
   * is tried first and dropped only when the server has none; `allow` tries without first.
   */
  async connect(): Promise<void> {
    const c = this.connection;
    let ssl = tlsOptions(c);
    if (c.sslmode === "prefer" || c.sslmode === "allow") {
      const first = c.sslmode === "prefer" ? ssl : false;
      const second = c.sslmode === "prefer" ? false : ssl;
      ssl = (await this.#probe(first)) ? first : second;
    }
    this.#clientConfig = {
      host: c.host,
      port: c.port,
      user: c.user,
      password: c.password,
      database: c.database,
      ssl,
      types,
      connectionTimeoutMillis: 10_000,
      application_name: this.options.applicationName ?? "switchboard",
    };
    this.#pool = new pg.Pool({ ...this.#clientConfig, min: this.options.min, max: this.options.max });
    // An idle connection that the server dropped must not crash the process; the pool replaces it.
    this.#pool.on("error", () => undefined);
  }

  /** How to open one more connection like the pool's (TLS settled), for a LISTEN connection. */
  get clientConfig(): pg.ClientConfig {
    if (!this.#clientConfig) throw new Error("the PostgreSQL client settings are read after connect()");
    return this.#clientConfig;
  }

  /** Whether one connection with these TLS options works; other failures are left to the pool to report. */
  async #probe(ssl: ConnectionOptions | false): Promise<boolean> {
    const c = this.connection;
    const client = new pg.Client({ host: c.host, port: c.port, user: c.user, password: c.password, database: c.database, ssl, types, connectionTimeoutMillis: 10_000 });
    try {
      await client.connect();
      return true;
    } catch (err) {
      const message = err instanceof Error ? err.message : "";
      // Only a TLS mismatch decides the mode; anything else (a wrong password) fails the same either way.
      return !/does not support SSL|no encryption/i.test(message);
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  get streams(): StreamTracker {
    if (!this.#streams) throw new Error("stream positions are read after migrations (loadStreams)");
    return this.#streams;
  }

  async loadStreams(): Promise<void> {
    const start = {} as Record<StreamName, number>;
    for (const s of STREAMS) {
      // The sequence name is one of ours, never input.
      const row = await this.get<{ last_value: number; is_called: boolean }>(`SELECT last_value, is_called FROM stream_${s}`);
      start[s] = row ? (row.is_called ? row.last_value : row.last_value - 1) : 0;
    }
    this.#streams = new StreamTracker(start);
  }

  async all<T>(sql: Query, params: readonly SqlValue[] = []): Promise<T[]> {
    return (await query(this.pool, this.statements.config(sql, params))).rows as T[];
  }

  async get<T>(query: Query, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return (await this.all<T>(query, params))[0];
  }

  async run(sql: Query, params: readonly SqlValue[] = []): Promise<number> {
    return (await query(this.pool, this.statements.config(sql, params))).rowCount ?? 0;
  }

  async transaction<T>(work: (tx: Transaction) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const client = await this.pool.connect();
      const tx = new PostgresTransaction(this, client);
      let broken = false;
      let released = false;
      try {
        await client.query("BEGIN");
        const result = await work(tx);
        await client.query("COMMIT");
        tx.positions.end(true);
        client.release();
        released = true;
        await tx.positions.visible();
        return result;
      } catch (err) {
        try {
          await client.query("ROLLBACK");
        } catch {
          broken = true;
        }
        const code = (err as { code?: unknown }).code;
        if (typeof code === "string" && RETRYABLE.has(code) && attempt < MAX_ATTEMPTS) continue;
        throw err;
      } finally {
        if (!released) {
          tx.positions.end(false);
          client.release(broken);
        }
      }
    }
  }

  async close(): Promise<void> {
    const pool = this.#pool;
    this.#pool = undefined;
    await pool?.end();
  }
}

class PostgresTransaction implements Transaction {
  readonly dialect = "postgres" as const;
  /** Held open until the transaction ends; see TakenPositions. */
  readonly positions = new TakenPositions(() => this.owner.streams);

  constructor(
    private readonly owner: PostgresDatabase,
    private readonly client: Queryable,
  ) {}

  async all<T>(sql: Query, params: readonly SqlValue[] = []): Promise<T[]> {
    return (await query(this.client, this.owner.statements.config(sql, params))).rows as T[];
  }

  async get<T>(query: Query, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return (await this.all<T>(query, params))[0];
  }

  async run(sql: Query, params: readonly SqlValue[] = []): Promise<number> {
    return (await query(this.client, this.owner.statements.config(sql, params))).rowCount ?? 0;
  }

  transaction<T>(work: (tx: Transaction) => Promise<T>): Promise<T> {
    return work(this);
  }

  async exec(script: string): Promise<void> {
    await this.client.query(script);
  }

  async nextPositions(stream: StreamName, count: number): Promise<number[]> {
    // Answers to concurrent nextval calls arrive in any order: until this one's has, readers
    // must not be let past a position it may hold.
    const unreserve = this.owner.streams.reserve(stream);
    try {
      await this.owner.beforeAllocate(stream);
      const rows = await this.all<{ p: number }>("SELECT nextval(?::regclass) AS p FROM generate_series(1, ?::int)", [
        `stream_${stream}`,
        count,
      ]);
      const positions = rows.map((r) => r.p).sort((a, b) => a - b);
      return this.positions.take(stream, positions);
    } finally {
      unreserve();
    }
  }

  async nextPosition(stream: StreamName): Promise<number> {
    return (await this.nextPositions(stream, 1))[0]!;
  }
}
