/**
 * PostgreSQL for bench/sends.ts: the server BENCH_POSTGRES names (a postgres:// URL whose user
 * may create databases), or else a private cluster started with ../shared/tools/postgres.sh in a
 * temporary folder and stopped afterwards. Each server under test gets a database of its own
 * (C collation, as Synapse requires), dropped at the end. Also the helpers bench/synapse.ts shares:
 * running one of the shared tools with a time limit, a free loopback port, another process's CPU;
 * and for bench/workers.ts, the CPU of PostgreSQL's processes.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { freePort } from "../test/helpers/ports.js";

/** ../shared/tools beside the project root (this file runs from dist/bench/). */
export const TOOLS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "shared", "tools");

const log = (msg: string) => console.error(`[bench:sends] ${msg}`);

/**
 * Runs `bash TOOLS/script args…` and resolves to its stdout, trimmed. Its stderr is passed on to
 * ours and, on failure, its last lines become the error's message. After `timeoutMs` its whole
 * process group is killed.
 */
export function runTool(script: string, args: string[], timeoutMs: number): Promise<string> {
  const file = path.join(TOOLS, script);
  if (!existsSync(file)) return Promise.reject(new Error(`${file} does not exist`));
  return new Promise((resolve, reject) => {
    const child = spawn("bash", [file, ...args], { stdio: ["ignore", "pipe", "pipe"], detached: true });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (out += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => {
      err += s;
      process.stderr.write(s);
    });
    const timer = setTimeout(() => {
      err += `\n${script} ${args[0] ?? ""}: gave up after ${timeoutMs / 1000} s`;
      if (child.pid) process.kill(-child.pid, "SIGKILL");
    }, timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0) return resolve(out.trim());
      const tail = err.trim().split("\n").slice(-3).join(" / ");
      reject(new Error(tail || `${script} exited with status ${String(code)}`));
    });
  });
}

/** Fields of /proc/PID/stat after the command name: [0] state, [1] ppid, [11] utime, [12] stime. */
function statFields(pid: number | string): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** utime and stime, fields 14 and 15 of stat(5), in clock ticks of 1/100 s on Linux, as microseconds. */
const cpuOfFields = (fields: string[]) => (Number(fields[11]) + Number(fields[12])) * 10_000;

/** CPU time (user + system) of another process of ours, in microseconds, from /proc (NaN if unreadable). */
export function procCpuTime(pid: number): number {
  const fields = statFields(pid);
  return fields ? cpuOfFields(fields) : Number.NaN;
}

/** CPU time the whole machine has been busy (every core, every process), in microseconds, from /proc/stat. */
export function machineBusyUs(): number {
  try {
    // The first line sums every core: user nice system idle iowait irq softirq steal…, in 1/100 s.
    const ticks = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
    return (ticks.reduce((a, b) => a + b, 0) - ticks[3]! - ticks[4]!) * 10_000;
  } catch {
    return Number.NaN;
  }
}

/**
 * PostgreSQL's processes: the postmaster, found as the parent of one backend, and its children
 * (a backend per connection, plus checkpointer, WAL writer…). Undefined when the server is not
 * on this machine.
 */
export async function postmasterOf(url: string): Promise<number | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    const { rows } = await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
    const ppid = Number(statFields(rows[0]!.pid)?.[1]);
    return ppid > 1 ? ppid : undefined;
  } finally {
    await client.end();
  }
}

/** CPU microseconds of `root` and each of its children, by pid. A backend born later counts from 0. */
export function treeCpu(root: number): Map<number, number> {
  const cpu = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(entry);
    if (!f || (Number(entry) !== root && Number(f[1]) !== root)) continue;
    cpu.set(Number(entry), cpuOfFields(f));
  }
  return cpu;
}

export interface Postgres {
  /** Where the server came from, for the report. */
  source: string;
  version: string;
  /** What decides the cost of a commit. */
  settings: { fsync: string; synchronous_commit: string };
  /** Creates a fresh database and returns its URL. */
  createDatabase(prefix: string): Promise<string>;
  /** Drops the databases created, and stops the cluster if this run started it. */
  close(): Promise<void>;
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

async function onServer<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

async function connect(adminUrl: string, source: string, cleanup: () => Promise<void>): Promise<Postgres> {
  const show = (c: pg.Client, name: string) => c.query<Record<string, string>>(`SHOW ${name}`).then((r) => r.rows[0]![name]!);
  const [version, fsync, synchronousCommit] = await onServer(adminUrl, async (c) => [
    await show(c, "server_version"),
    await show(c, "fsync"),
    await show(c, "synchronous_commit"),
  ]);
  const created: string[] = [];
  return {
    source,
    version,
    settings: { fsync, synchronous_commit: synchronousCommit },
    async createDatabase(prefix) {
      const name = `${prefix}_${randomBytes(5).toString("hex")}`;
      await onServer(adminUrl, (c) => c.query(`CREATE DATABASE ${name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`));
      created.push(name);
      return withDatabase(adminUrl, name);
    },
    async close() {
      try {
        await onServer(adminUrl, async (c) => {
          for (const name of created.splice(0)) await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        });
      } finally {
        await cleanup();
      }
    },
  };
}

/** The benchmark's PostgreSQL, or the reason there is none. */
export async function openPostgres(): Promise<Postgres | { skipped: string }> {
  const given = process.env.BENCH_POSTGRES;
  if (given) {
    try {
      return await connect(given, "BENCH_POSTGRES", async () => undefined);
    } catch (err) {
      return { skipped: `BENCH_POSTGRES is set, but it could not be used: ${(err as Error).message}` };
    }
  }
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-bench-pg-"));
  // When run as root, the cluster belongs to the postgres user, which must be able to enter the folder.
  chmodSync(dir, 0o755);
  const stop = async () => {
    // A postmaster.pid: a server runs there, even if postgres.sh failed or timed out after starting it.
    if (existsSync(path.join(dir, "data", "postmaster.pid"))) await runTool("postgres.sh", ["stop", dir], 60_000).catch((err: Error) => log(`stopping PostgreSQL: ${err.message}`));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const port = await freePort();
    log(`BENCH_POSTGRES is not set: starting a private PostgreSQL cluster on port ${port}`);
    const url = await runTool("postgres.sh", ["start", dir, String(port)], 120_000);
    return await connect(url, `a private cluster started with postgres.sh in ${dir}`, stop);
  } catch (err) {
    await stop();
    return { skipped: `no PostgreSQL: BENCH_POSTGRES is not set, and postgres.sh could not start a cluster: ${(err as Error).message}` };
  }
}

/**
 * The floor under any send on PostgreSQL: one-row INSERTs, each its own transaction, on the
 * database at `url`, one after another and from `clients` connections at once, in commits per second.
 */
export async function bareCommits(url: string, total: number, clients: number): Promise<{ sequential: number; concurrent: number }> {
  await onServer(url, (c) => c.query("CREATE TABLE bench_commits (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)"));
  const rate = async (connections: number) => {
    const pool = new pg.Pool({ connectionString: url, max: connections });
    try {
      await Promise.all(Array.from({ length: connections }, () => pool.query("SELECT 1")));
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: connections }, async (_, k) => {
          for (let i = k; i < total; i += connections) await pool.query("INSERT INTO bench_commits (body) VALUES ($1)", [`message ${i}`]);
        }),
      );
      return Math.round((total / (performance.now() - t0)) * 1000);
    } finally {
      await pool.end();
    }
  };
  return { sequential: await rate(1), concurrent: await rate(clients) };
}
