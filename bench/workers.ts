/**
 * Several processes benchmark (the worker-processes issue): Switchboard on PostgreSQL started as
 * production starts it (`node dist/src/main.js --config FILE`) with `worker_processes` 1, 2 and 4,
 * each on a fresh database, measured in the same run and reported as ratios to 1 process:
 *   - whoami: `GET /account/whoami` from a few users over many keep-alive connections (autocannon,
 *     in this process). Node's cluster hands each connection to a worker when it is accepted,
 *     so only many connections spread the load over the processes.
 *   - sends: many users, each in a room of their own, all sending at once, each one message after
 *     another over its own keep-alive connection.
 * All the servers run at once (idle ones cost nothing) and are loaded one at a time, in rounds that
 * go round them in a rotating order, so that a neighbour that slows the machine for a few seconds
 * slows every process count alike instead of skewing a ratio.
 * Beside each figure, the CPU that Switchboard's processes, PostgreSQL's and this load generator
 * used meanwhile, in cores (1 = one core busy the whole time): on a small machine their sum meets
 * the core count, and which share grows with the process count shows where the limit is.
 *
 * PostgreSQL: BENCH_POSTGRES, or a private cluster (bench/postgres.ts); without one the report
 * says {"skipped": reason}. PostgreSQL's CPU is read from /proc, so it needs a server on this machine.
 *
 * Environment:
 *   BENCH_WORKERS_PROCESSES    process counts, comma-separated (default 1,2,4; the first is the yardstick)
 *   BENCH_WORKERS_ROUNDS       measured rounds (default 3)
 *   BENCH_WORKERS_WHOAMI_S     measured seconds of whoami per process count and round (default 2)
 *   BENCH_WORKERS_CONNECTIONS  whoami connections (default 50)
 *   BENCH_WORKERS_CLIENTS      sending users, one room and one connection each (default 50)
 *   BENCH_WORKERS_SENDS        measured messages per process count and round, shared out (default 700)
 */
import autocannon, { type Result } from "autocannon";
import { spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { stringify } from "yaml";
import { printReport, runMain } from "./entry.js";
import { freePort, openPostgres, procCpuTime } from "./postgres.js";
import { closeClients, registerClients, request, sendBatch, type Batch, type SendClient } from "./send_client.js";

function envCount(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, not ${JSON.stringify(raw)}`);
  return n;
}

const PROCESSES = (process.env.BENCH_WORKERS_PROCESSES || "1,2,4").split(",").map((s) => Number(s.trim()));
if (!PROCESSES.every((n) => Number.isInteger(n) && n >= 1 && n <= 64)) throw new Error("BENCH_WORKERS_PROCESSES: process counts from 1 to 64, comma-separated");
const ROUNDS = envCount("BENCH_WORKERS_ROUNDS", 3);
const WHOAMI_S = envCount("BENCH_WORKERS_WHOAMI_S", 2);
const CONNECTIONS = envCount("BENCH_WORKERS_CONNECTIONS", 50);
const CLIENTS = envCount("BENCH_WORKERS_CLIENTS", 50);
const SENDS = envCount("BENCH_WORKERS_SENDS", 700);
/** Whoami comes from this many of the users (at most), the connections shared out between them. */
const WHOAMI_USERS = Math.min(5, CLIENTS, CONNECTIONS);
const WARMUP_S = 1;
/** Per client, before the measured sends: the first send into a room costs more than the rest. */
const WARMUP_SENDS = 3;
const SEND_LIMIT_MS = 60_000;
/** The target: whoami on 2 processes over 1. */
const TARGET_WHOAMI_2 = 1.6;

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "src", "main.js");
const MANY = { per_second: 100_000, burst_count: 100_000 };

const log = (msg: string) => console.error(`[bench:workers] ${msg}`);
const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const reason = (err: unknown) => (err instanceof Error ? err.message : String(err));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Clean-up steps, last first: run at the end, or on SIGINT/SIGTERM. */
const cleanups: (() => Promise<unknown>)[] = [];
async function cleanUp(): Promise<void> {
  for (const step of cleanups.splice(0).reverse()) await step().catch((err: unknown) => log(`clean-up: ${reason(err)}`));
}
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => void cleanUp().finally(() => process.exit(130)));
}

// ---- CPU -------------------------------------------------------------------

/** Fields of /proc/PID/stat after the command name: [0] state, [1] ppid, [11] utime, [12] stime. */
function statFields(pid: number | string): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/**
 * PostgreSQL's processes: the postmaster, found as the parent of one backend, and its children
 * (a backend per connection, plus checkpointer, WAL writer…). Undefined when the server is not
 * on this machine.
 */
async function postmasterOf(url: string): Promise<number | undefined> {
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
function treeCpu(root: number): Map<number, number> {
  const cpu = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(entry);
    if (!f || (Number(entry) !== root && Number(f[1]) !== root)) continue;
    cpu.set(Number(entry), (Number(f[11]) + Number(f[12])) * 10_000);
  }
  return cpu;
}

/** CPU used, in µs, by a set of processes between two calls; a backend that exits in between is lost (a short connection, little CPU). */
function cpuMeter(sample: () => Map<number, number>): () => number {
  const before = sample();
  return () => {
    let us = 0;
    for (const [pid, t] of sample()) us += t - (before.get(pid) ?? 0);
    return us;
  };
}

// ---- Switchboard -----------------------------------------------------------

interface Server {
  url: string;
  /** The parent and every worker; with one process they are the same. */
  pids: number[];
  stop(): Promise<void>;
}

/**
 * Starts `node dist/src/main.js --config FILE` with `worker_processes: processes` and waits for
 * that many "Switchboard is running" lines. Its log (one JSON line per request, as in production)
 * goes to a file, which costs the server what a pipe would without a reader in this process.
 */
async function startSwitchboard(processes: number, dsn: string): Promise<Server> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-bench-workers-"));
  const port = await freePort();
  const config = {
    server_name: "localhost",
    public_baseurl: `http://localhost:${port}/`,
    listeners: [{ port, bind_addresses: ["127.0.0.1"] }],
    database: { name: "psycopg2", args: { dsn, cp_min: 5, cp_max: 10 } },
    signing_key_path: path.join(dir, "signing.key"),
    enable_registration: true,
    enable_registration_without_verification: true,
    rc_message: MANY,
    rc_registration: MANY,
    rc_login: { address: MANY, account: MANY, failed_attempts: MANY },
    log_level: "info",
    worker_processes: processes,
  };
  const file = path.join(dir, "switchboard.yaml");
  writeFileSync(file, stringify(config));
  const logFile = path.join(dir, "log.jsonl");
  const out = openSync(logFile, "a");
  // Its own process group, so that a parent that hangs can be killed with its workers.
  const child = spawn(process.execPath, [MAIN, "--config", file], { cwd: dir, stdio: ["ignore", out, "inherit"], detached: true });
  closeSync(out);
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once("exit", () => ((exited = true), resolve())));
  const stop = async () => {
    if (!exited) {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.pid && process.kill(-child.pid, "SIGKILL"), 20_000);
      await exit;
      clearTimeout(killer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const t0 = Date.now(); ; await sleep(100)) {
      if (exited) throw new Error(`switchboard with worker_processes ${processes} exited before it served; its log: ${readFileSync(logFile, "utf8").slice(-500)}`);
      if (Date.now() - t0 > 60_000) throw new Error(`switchboard with worker_processes ${processes}: not ${processes} processes serving within 60 s`);
      const running = readFileSync(logFile, "utf8")
        .split("\n")
        .filter((line) => line.includes('"Switchboard is running"'))
        .map((line) => JSON.parse(line) as { pid: number; listening: string[] });
      if (running.length >= processes) {
        const pids = [...new Set([child.pid!, ...running.map((r) => r.pid)])];
        return { url: running[0]!.listening[0]!.replace(/\/$/, ""), pids, stop };
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
}

