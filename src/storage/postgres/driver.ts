/**
 * The PostgreSQL side of `SqlDatabase`: a `pg` pool. Statements are prepared by name on each
 * connection the first time it runs them, so a hot query is parsed once per connection.
 * Transactions run at READ COMMITTED with explicit row locks where a step reads then writes
 * (the stores say which); one that loses a deadlock is run again.
 */
import pg from "pg";
import { textOf, type Query, type SqlDatabase, type SqlValue, type Transaction } from "../sql/executor.js";
import { STREAMS, StreamTracker, waitVisible, type StreamName } from "../sql/streams.js";

/** Connection settings, from `database.args` (Synapse's psycopg2 keys) or a DSN. */
export interface PostgresOptions {
  connectionString?: string;
  host?: string;
  port?: number;
  user?: string;
  password?: string;
  database?: string;
  /** libpq's sslmode: disable, prefer, require, verify-ca, verify-full. */
  sslmode?: string;
  min: number;
  max: number;
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

function sslOption(mode: string | undefined): pg.PoolConfig["ssl"] {
  switch (mode) {
    case undefined:
    case "disable":
    case "allow":
    case "prefer":
      return false;
    case "require":
      // libpq's `require` encrypts without checking the certificate.
      return { rejectUnauthorized: false };
    default:
      return { rejectUnauthorized: true };
  }
}

export class PostgresDatabase implements SqlDatabase {
  readonly dialect = "postgres" as const;
  readonly pool: pg.Pool;
  readonly statements = new Statements();
  #streams: StreamTracker | undefined;

  constructor(readonly options: PostgresOptions) {
    this.pool = new pg.Pool({
      connectionString: options.connectionString,
      host: options.host,
      port: options.port,
      user: options.user,
      password: options.password,
      database: options.database,
      ssl: sslOption(options.sslmode),
      min: options.min,
      max: options.max,
      types,
      connectionTimeoutMillis: 10_000,
      application_name: "switchboard",
    });
    // An idle connection that the server dropped must not crash the process; the pool replaces it.
    this.pool.on("error", () => undefined);
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

  async all<T>(query: Query, params: readonly SqlValue[] = []): Promise<T[]> {
    return (await this.pool.query(this.statements.config(query, params))).rows as T[];
  }

  async get<T>(query: Query, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return (await this.all<T>(query, params))[0];
  }

  async run(query: Query, params: readonly SqlValue[] = []): Promise<number> {
    return (await this.pool.query(this.statements.config(query, params))).rowCount ?? 0;
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
        tx.end();
        client.release();
        released = true;
        await tx.visible();
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
          tx.end();
          client.release(broken);
        }
      }
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

class PostgresTransaction implements Transaction {
  readonly dialect = "postgres" as const;
  readonly #taken: [StreamName, number[]][] = [];

  constructor(
    private readonly owner: PostgresDatabase,
    private readonly client: Queryable,
  ) {}

  async all<T>(query: Query, params: readonly SqlValue[] = []): Promise<T[]> {
    return (await this.client.query(this.owner.statements.config(query, params))).rows as T[];
  }

  async get<T>(query: Query, params: readonly SqlValue[] = []): Promise<T | undefined> {
    return (await this.all<T>(query, params))[0];
  }

  async run(query: Query, params: readonly SqlValue[] = []): Promise<number> {
    return (await this.client.query(this.owner.statements.config(query, params))).rowCount ?? 0;
  }

  transaction<T>(work: (tx: Transaction) => Promise<T>): Promise<T> {
    return work(this);
  }

  async exec(script: string): Promise<void> {
    await this.client.query(script);
  }

  async nextPositions(stream: StreamName, count: number): Promise<number[]> {
    const rows = await this.all<{ p: number }>("SELECT nextval(?::regclass) AS p FROM generate_series(1, ?::int)", [
      `stream_${stream}`,
      count,
    ]);
    const positions = rows.map((r) => r.p).sort((a, b) => a - b);
    this.owner.streams.opened(stream, positions);
    this.#taken.push([stream, positions]);
    return positions;
  }

  async nextPosition(stream: StreamName): Promise<number> {
    return (await this.nextPositions(stream, 1))[0]!;
  }

  /** Resolves once readers can see every position this transaction took. */
  visible(): Promise<void> {
    return this.#taken.length === 0 ? Promise.resolve() : waitVisible(this.owner.streams, this.#taken);
  }

  /** Commit or rollback: the positions taken stop holding readers back. */
  end(): void {
    for (const [stream, positions] of this.#taken) this.owner.streams.closed(stream, positions);
  }
}
