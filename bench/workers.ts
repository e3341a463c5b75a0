/**
 * Several processes benchmark (the worker-processes issue): Switchboard on PostgreSQL started as
 * production starts it (`node dist/src/main.js --config FILE`) with `worker_processes` 1, 2 and 4,
 * each on a fresh database, measured in the same run and reported as ratios to 1 process:
 *   - whoami: `GET /account/whoami` from a few users over many keep-alive connections (autocannon,
 *     in this process). Node's cluster hands each connection to a worker when it is accepted,
 *     so only many connections spread the load over the processes.
 *   - sends: many users, each in a room of their own, all sending at once, each one message after
 *     another over its own keep-alive connection.
 * Beside each figure, the CPU that Switchboard's processes, PostgreSQL's and this load generator
 * used meanwhile, in cores (1 = one core busy the whole time): on a small machine their sum meets
 * the core count, and which share grows with the process count shows where the limit is.
 *
 * PostgreSQL: BENCH_POSTGRES, or a private cluster (bench/postgres.ts); without one the report
 * says {"skipped": reason}. PostgreSQL's CPU is read from /proc, so it needs a server on this machine.
 *
 * Environment:
 *   BENCH_WORKERS_PROCESSES    process counts, comma-separated (default 1,2,4; the first is the yardstick)
 *   BENCH_WORKERS_WHOAMI_S     measured seconds of whoami per process count (default 5)
 *   BENCH_WORKERS_CONNECTIONS  whoami connections (default 50)
 *   BENCH_WORKERS_CLIENTS      sending users, one room and one connection each (default 50)
 *   BENCH_WORKERS_SENDS        measured messages per process count, shared out (default 2000)
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
const WHOAMI_S = envCount("BENCH_WORKERS_WHOAMI_S", 5);
const CONNECTIONS = envCount("BENCH_WORKERS_CONNECTIONS", 50);
const CLIENTS = envCount("BENCH_WORKERS_CLIENTS", 50);
const SENDS = envCount("BENCH_WORKERS_SENDS", 2000);
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

// ---- load ------------------------------------------------------------------

/** CPU in cores (1 = one core busy all along) of Switchboard, PostgreSQL and this process over a phase. */
interface Cpu {
  switchboard_cpu_cores: number;
  db_cpu_cores: number | null;
  generator_cpu_cores: number;
}

async function withCpu<T>(server: Server, postmaster: number | undefined, work: () => Promise<T>): Promise<{ result: T; wallMs: number; cpu: Cpu }> {
  const sb = cpuMeter(() => new Map(server.pids.map((pid) => [pid, procCpuTime(pid)])));
  const db = postmaster ? cpuMeter(() => treeCpu(postmaster)) : undefined;
  const own0 = process.cpuUsage();
  const t0 = performance.now();
  const result = await work();
  const wallUs = (performance.now() - t0) * 1000;
  const own = process.cpuUsage(own0);
  const cores = (us: number) => round(us / wallUs, 2);
  return {
    result,
    wallMs: wallUs / 1000,
    cpu: { switchboard_cpu_cores: cores(sb()), db_cpu_cores: db ? cores(db()) : null, generator_cpu_cores: cores(own.user + own.system) },
  };
}

/** Whoami for `seconds`, the connections shared out between the users, one autocannon each. */
function whoamiLoad(url: string, users: SendClient[], seconds: number): Promise<Result[]> {
  return Promise.all(
    users.map(
      (u, k) =>
        new Promise<Result>((resolve, reject) => {
          const connections = Math.floor(CONNECTIONS / users.length) + (k < CONNECTIONS % users.length ? 1 : 0);
          autocannon(
            { url: `${url}/_matrix/client/v3/account/whoami`, headers: { authorization: `Bearer ${u.token}` }, connections, duration: seconds, pipelining: 1 },
            (err, result) => (err ? reject(err) : resolve(result)),
          );
        }),
    ),
  );
}

/** Each client creates a private room of its own. */
async function roomsFor(url: string, clients: SendClient[]): Promise<string[]> {
  return Promise.all(
    clients.map(async (c) => {
      const res = await request(url, c.agent, "POST", "/_matrix/client/v3/createRoom", c.token, { preset: "private_chat", name: "workers benchmark" });
      if (res.status !== 200) throw new Error(`createRoom: ${res.status} ${res.body.slice(0, 300)}`);
      return (JSON.parse(res.body) as { room_id: string }).room_id;
    }),
  );
}

/** `total` sends shared out between the clients, each into its own room, all at once. */
async function sendsInOwnRooms(url: string, clients: SendClient[], rooms: string[], total: number, tag: string): Promise<Batch> {
  const t0 = performance.now();
  const batches = await Promise.all(
    clients.map((c, k) => sendBatch(url, rooms[k]!, [c], Math.floor(total / clients.length) + (k < total % clients.length ? 1 : 0), `${tag}-${k}`, SEND_LIMIT_MS)),
  );
  const failures: Record<string, number> = {};
  for (const b of batches) for (const [status, n] of Object.entries(b.failures)) failures[status] = (failures[status] ?? 0) + n;
  return {
    messages: batches.reduce((n, b) => n + b.messages, 0),
    wallMs: performance.now() - t0,
    latencies: batches.flatMap((b) => b.latencies).sort((a, b) => a - b),
    failures,
  };
}

const percentile = (sorted: number[], p: number) => (sorted.length ? round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!) : null);

// ---- the run ---------------------------------------------------------------

interface WhoamiResult extends Cpu {
  rps: number;
  ratio_to_1?: number | null;
  requests: number;
  non_2xx: number;
  errors: number;
  p99_ms: number;
  switchboard_cpu_us_per_request: number;
}

interface SendsResult extends Cpu {
  msg_per_s: number;
  ratio_to_1?: number | null;
  messages: number;
  failures: Record<string, number>;
  latency_ms: { p50: number | null; p99: number | null };
  db_cpu_us_per_msg: number | null;
  switchboard_cpu_us_per_msg: number;
}

async function measure(processes: number, dsn: string, postmaster: number | undefined): Promise<{ whoami: WhoamiResult; sends: SendsResult }> {
  log(`${processes} process(es): starting`);
  const server = await startSwitchboard(processes, dsn);
  try {
    const clients = await registerClients(server.url, "worker", CLIENTS);
    try {
      const rooms = await roomsFor(server.url, clients);
      log(`${processes} process(es): pids ${server.pids.join(" ")}, ${clients.length} users, a room each`);

      const users = clients.slice(0, WHOAMI_USERS);
      await whoamiLoad(server.url, users, WARMUP_S);
      const w = await withCpu(server, postmaster, () => whoamiLoad(server.url, users, WHOAMI_S));
      const requests = w.result.reduce((n, r) => n + r.requests.total, 0);
      const whoami: WhoamiResult = {
        rps: round((requests / w.wallMs) * 1000, 0),
        requests,
        non_2xx: w.result.reduce((n, r) => n + r.non2xx, 0),
        errors: w.result.reduce((n, r) => n + r.errors + r.timeouts, 0),
        p99_ms: Math.max(...w.result.map((r) => r.latency.p99)),
        ...w.cpu,
        switchboard_cpu_us_per_request: round((w.cpu.switchboard_cpu_cores * w.wallMs * 1000) / requests, 1),
      };
      log(`${processes} process(es) whoami: ${whoami.rps} req/s; CPU cores: Switchboard ${w.cpu.switchboard_cpu_cores}, PostgreSQL ${w.cpu.db_cpu_cores}, generator ${w.cpu.generator_cpu_cores}`);

      await sendsInOwnRooms(server.url, clients, rooms, WARMUP_SENDS * clients.length, "warmup");
      const s = await withCpu(server, postmaster, () => sendsInOwnRooms(server.url, clients, rooms, SENDS, "measured"));
      const perMsg = (cores: number) => round((cores * s.wallMs * 1000) / s.result.messages, 0);
      const sends: SendsResult = {
        msg_per_s: round((s.result.messages / s.result.wallMs) * 1000, 1),
        messages: s.result.messages,
        failures: s.result.failures,
        latency_ms: { p50: percentile(s.result.latencies, 50), p99: percentile(s.result.latencies, 99) },
        ...s.cpu,
        db_cpu_us_per_msg: s.cpu.db_cpu_cores === null ? null : perMsg(s.cpu.db_cpu_cores),
        switchboard_cpu_us_per_msg: perMsg(s.cpu.switchboard_cpu_cores),
      };
      log(`${processes} process(es) sends: ${sends.msg_per_s} msg/s; CPU cores: Switchboard ${s.cpu.switchboard_cpu_cores}, PostgreSQL ${s.cpu.db_cpu_cores}, generator ${s.cpu.generator_cpu_cores}`);
      return { whoami, sends };
    } finally {
      closeClients(clients);
    }
  } finally {
    await server.stop();
  }
}

async function main(): Promise<number> {
  const loadBefore = os.loadavg().map((n) => round(n));
  const problems: string[] = [];
  const warnings: string[] = [];
  const whoami: Record<string, WhoamiResult | { failed: string }> = {};
  const sends: Record<string, SendsResult | { failed: string }> = {};
  let postgresInfo: Record<string, unknown>;
  try {
    const pgOrSkip = await openPostgres();
    if ("skipped" in pgOrSkip) {
      log(`PostgreSQL skipped: ${pgOrSkip.skipped}`);
      process.stdout.write(`${JSON.stringify({ skipped: pgOrSkip.skipped }, null, 2)}\n`);
      return 0;
    }
    cleanups.push(() => pgOrSkip.close());
    postgresInfo = { source: pgOrSkip.source, version: pgOrSkip.version, ...pgOrSkip.settings };
    log(`PostgreSQL ${pgOrSkip.version} (${pgOrSkip.source})`);
    for (const processes of PROCESSES) {
      const dsn = await pgOrSkip.createDatabase(`workers_${processes}`);
      const postmaster = await postmasterOf(dsn).catch(() => undefined);
      const noDb = "PostgreSQL's processes were not found in /proc (not on this machine?): its CPU is not reported";
      if (!postmaster && !warnings.includes(noDb)) warnings.push(noDb);
      try {
        const m = await measure(processes, dsn, postmaster);
        whoami[processes] = m.whoami;
        sends[processes] = m.sends;
        if (m.whoami.non_2xx || m.whoami.errors) problems.push(`whoami on ${processes} process(es): ${m.whoami.non_2xx} non-2xx answers, ${m.whoami.errors} errors`);
        if (Object.keys(m.sends.failures).length) problems.push(`sends on ${processes} process(es) failed: ${JSON.stringify(m.sends.failures)}`);
        if (m.sends.messages < SENDS) warnings.push(`sends on ${processes} process(es): only ${m.sends.messages} sent within ${SEND_LIMIT_MS / 1000} s`);
      } catch (err) {
        problems.push(`${processes} process(es): ${reason(err)}`);
        whoami[processes] = sends[processes] = { failed: reason(err) };
      }
    }
  } finally {
    await cleanUp();
  }

  // Each figure over the first process count's (1, by default) from this run.
  const first = String(PROCESSES[0]);
  const rate = (r: WhoamiResult | SendsResult | { failed: string } | undefined) => (r && !("failed" in r) ? ("rps" in r ? r.rps : r.msg_per_s) : undefined);
  for (const results of [whoami, sends] as Record<string, WhoamiResult | SendsResult | { failed: string }>[]) {
    const base = rate(results[first]);
    for (const [key, r] of Object.entries(results)) {
      const own = rate(r);
      if (key !== first && own !== undefined) (r as WhoamiResult | SendsResult).ratio_to_1 = base ? round(own / base, 3) : null;
    }
  }
  const whoami2 = (whoami["2"] as WhoamiResult | undefined)?.ratio_to_1 ?? null;
  const target = { whoami_2_processes_ratio: TARGET_WHOAMI_2, measured: whoami2, met: whoami2 === null ? null : whoami2 >= TARGET_WHOAMI_2 };
  if (target.met === false) warnings.push(`whoami on 2 processes is ${whoami2}× 1 process, below the ${TARGET_WHOAMI_2}× target: see the CPU cores beside each figure`);

  const cores = os.availableParallelism();
  const loadAfter = os.loadavg().map((n) => round(n));
  if ((loadBefore[0] ?? 0) > 1) warnings.push(`1-minute load average was ${loadBefore[0]} before the run: other processes shared the cores, so figures are noisy`);
  const report = {
    benchmark: "Switchboard on PostgreSQL with worker_processes 1, 2 and 4: whoami and concurrent sends, as ratios to 1 process in the same run",
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    cores,
    cpu_model: os.cpus()[0]?.model ?? "unknown",
    postgres: postgresInfo,
    switchboard:
      "node dist/src/main.js --config FILE, worker_processes N (Node cluster, one shared port), a fresh database per N, pool cp_min 5 cp_max 10 per process, logging at info (a line per request) to a file",
    whoami_load: `GET /_matrix/client/v3/account/whoami, ${CONNECTIONS} keep-alive connections shared between ${WHOAMI_USERS} users, autocannon in this process, ${WARMUP_S} s warm-up then ${WHOAMI_S} s measured`,
    sends_load: `${CLIENTS} users, each in a private room of their own with one keep-alive connection, all sending at once, one message after another: ${WARMUP_SENDS} each to warm up, then ${SENDS} measured in all`,
    cpu_cores_note: `CPU used over the measured time, in cores (1 = one core busy all along); Switchboard is the parent and every worker, PostgreSQL the postmaster and all its children, generator this process. This machine has ${cores}.`,
    loadavg_before: loadBefore,
    loadavg_after: loadAfter,
    whoami,
    sends,
    target,
    ok: problems.length === 0,
    problems,
    warnings,
  };
  return printReport(report, warnings, problems, log);
}

runMain(main);
