/**
 * Several processes benchmark (the worker-processes issue): Switchboard on PostgreSQL started as
 * production starts it (`node dist/src/main.js --config FILE`) with `worker_processes` 1, 2 and 4,
 * each on a fresh database, measured in the same run and reported as ratios to 1 process:
 *   - whoami: `GET /account/whoami` from a few users over many keep-alive connections
 *     (bench/raw_load.ts, in this process). Node's cluster hands each connection to a worker when
 *     it is accepted, so only many connections spread the load over the processes.
 *   - sends: many users, each in a room of their own, all sending at once, each one message after
 *     another over its own keep-alive connection.
 * All the servers run at once (idle ones cost nothing) and are loaded one at a time, in rounds that
 * go round them in a rotating order, so that a neighbour that slows the machine for a few seconds
 * slows every process count alike instead of skewing a ratio.
 * Beside each figure, the CPU that Switchboard's processes, PostgreSQL's, this load generator and
 * anything else used meanwhile, in cores (1 = one core busy the whole time): on a small machine
 * their sum meets the core count, and which share grows with the process count shows the limit.
 *
 * PostgreSQL: BENCH_POSTGRES, or a private cluster (bench/postgres.ts); without one the report
 * says {"skipped": reason}. PostgreSQL's CPU is read from /proc, so it needs a server on this machine.
 *
 * Environment:
 *   BENCH_WORKERS_PROCESSES    process counts, comma-separated (default 1,2,4; the first is the yardstick)
 *   BENCH_WORKERS_ROUNDS       measured rounds (default 4)
 *   BENCH_WORKERS_WHOAMI_S     measured seconds of whoami per process count and round (default 2)
 *   BENCH_WORKERS_CONNECTIONS  whoami connections (default 50)
 *   BENCH_WORKERS_GENERATOR    whoami load from `wrk` (default when installed) or `node` (bench/raw_load.ts)
 *   BENCH_WORKERS_CLIENTS      sending users, one room and one connection each (default 50)
 *   BENCH_WORKERS_SENDS        measured messages per process count and round, shared out (default 500)
 */
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { stringify } from "yaml";
import { CleanUps, envCount, printReport, runMain } from "./entry.js";
import { machineBusyUs, openPostgres, postmasterOf, procCpuTime, treeCpu } from "./postgres.js";
import { freePort } from "../test/helpers/ports.js";
import { rawLoad, type LoadResult } from "./raw_load.js";
import { wrkAvailable, wrkLoad } from "./wrk_load.js";
import { startBareCluster } from "./bare_cluster_process.js";
import { spawnSwitchboard } from "./switchboard_process.js";
import { closeClients, registerClients, request, sendBatch, type Batch, type SendClient } from "./send_client.js";

const PROCESSES = (process.env.BENCH_WORKERS_PROCESSES || "1,2,4").split(",").map((s) => Number(s.trim()));
if (!PROCESSES.every((n) => Number.isInteger(n) && n >= 1 && n <= 64)) throw new Error("BENCH_WORKERS_PROCESSES: process counts from 1 to 64, comma-separated");
const ROUNDS = envCount("BENCH_WORKERS_ROUNDS", 4);
const WHOAMI_S = envCount("BENCH_WORKERS_WHOAMI_S", 2);
const CONNECTIONS = envCount("BENCH_WORKERS_CONNECTIONS", 50);
const CLIENTS = envCount("BENCH_WORKERS_CLIENTS", 50);
const SENDS = envCount("BENCH_WORKERS_SENDS", 500);
/** Whoami comes from this many of the users (at most), the connections shared out between them. */
const WHOAMI_USERS = Math.min(5, CLIENTS, CONNECTIONS);
/** Whoami warm-up: each process has its own JIT to warm, on its share of the connections. */
const WARMUP_S = 3;
/** Per client, before the measured sends: the first send into a room costs more than the rest. */
const WARMUP_SENDS = 3;
const SEND_LIMIT_MS = 60_000;
/**
 * The whoami generator: wrk when installed (a few µs of CPU a request), else the Node one
 * (about 20 µs), which on 2 cores caps the ratio the servers can show. BENCH_WORKERS_GENERATOR
 * (wrk or node) chooses.
 */
const GENERATOR = (process.env.BENCH_WORKERS_GENERATOR || (wrkAvailable() ? "wrk" : "node")) as "wrk" | "node";
/** The issue's target: whoami on 2 processes over 1. */
const TARGET_WHOAMI_2 = 1.6;

const MANY = { per_second: 100_000, burst_count: 100_000 };

const log = (msg: string) => console.error(`[bench:workers] ${msg}`);
const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;

const cleanups = new CleanUps(log);

// ---- CPU -------------------------------------------------------------------

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
  /** Empties the log file, which would otherwise grow by tens of megabytes a run. */
  dropLog(): void;
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
  try {
    const p = await spawnSwitchboard(["--config", file], dir, "log.jsonl", processes);
    const pids = [...new Set([p.pid, ...p.running.map((r) => r.pid)])];
    const stop = async () => {
      await p.stop();
      rmSync(dir, { recursive: true, force: true });
    };
    // Appends (O_APPEND) go on at the new end of a truncated file.
    return { url: p.url, pids, dropLog: () => truncateSync(p.logFile, 0), stop };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

// ---- load ------------------------------------------------------------------

/** A server under test, with its users (each with a room of their own) and what was measured. */
interface Target {
  processes: number;
  server: Server;
  clients: SendClient[];
  rooms: string[];
  whoami: Measured<LoadResult>[];
  sends: Measured<Batch>[];
}

/** One measured slice: its wall time and CPU microseconds of each Switchboard process, PostgreSQL, this process and the machine. */
interface Measured<T> {
  result: T;
  wallUs: number;
  switchboardUs: number[];
  dbUs: number;
  ownUs: number;
  machineUs: number;
}

/** PostgreSQL's postmaster, once found (see postmasterOf). */
let postmaster: number | undefined;

async function measured<T>(server: Server, work: () => Promise<T>): Promise<Measured<T>> {
  server.dropLog();
  const sb = server.pids.map((pid) => cpuMeter(() => new Map([[pid, procCpuTime(pid)]])));
  const db = postmaster ? cpuMeter(() => treeCpu(postmaster!)) : () => Number.NaN;
  const own0 = process.cpuUsage();
  const machine0 = machineBusyUs();
  const t0 = performance.now();
  const result = await work();
  const wallUs = (performance.now() - t0) * 1000;
  const own = process.cpuUsage(own0);
  const external = (result as { generatorUs?: number }).generatorUs ?? 0;
  return { result, wallUs, switchboardUs: sb.map((m) => m()), dbUs: db(), ownUs: own.user + own.system + external, machineUs: machineBusyUs() - machine0 };
}

/** Whoami for `seconds` from the first few users, the connections shared out between them. */
function whoamiLoad(t: Pick<Target, "server" | "clients">, seconds: number): Promise<LoadResult> {
  const tokens = t.clients.length ? t.clients.slice(0, WHOAMI_USERS).map((c) => c.token) : ["bare"];
  const load = GENERATOR === "wrk" ? wrkLoad : rawLoad;
  return load(t.server.url, "/_matrix/client/v3/account/whoami", tokens, CONNECTIONS, seconds);
}

/** `total` sends shared out between the clients, each into its own room, all at once. */
async function sendsInOwnRooms(t: Target, total: number, tag: string): Promise<Batch> {
  const t0 = performance.now();
  const share = (k: number) => Math.floor(total / t.clients.length) + (k < total % t.clients.length ? 1 : 0);
  const batches = await Promise.all(t.clients.map((c, k) => sendBatch(t.server.url, t.rooms[k]!, [c], share(k), `${tag}-${k}`, SEND_LIMIT_MS)));
  const failures: Record<string, number> = {};
  for (const b of batches) for (const [status, n] of Object.entries(b.failures)) failures[status] = (failures[status] ?? 0) + n;
  const latencies = batches.flatMap((b) => b.latencies);
  return { messages: latencies.length, wallMs: performance.now() - t0, latencies, failures };
}

/** Starts a server and gives it its users, registered ten at a time (scrypt makes each slow), each with a private room. */
async function prepare(processes: number, dsn: string): Promise<Target> {
  const server = await startSwitchboard(processes, dsn);
  cleanups.push(() => server.stop());
  const groups = Array.from({ length: Math.min(10, CLIENTS) }, (_, g) => Math.floor(CLIENTS / 10) + (g < CLIENTS % 10 ? 1 : 0));
  const clients = (await Promise.all(groups.map((n, g) => registerClients(server.url, `worker${g}_`, n)))).flat();
  cleanups.push(async () => closeClients(clients));
  const rooms = await Promise.all(
    clients.map(async (c) => {
      const res = await request(server.url, c.agent, "POST", "/_matrix/client/v3/createRoom", c.token, { preset: "private_chat", name: "workers benchmark" });
      if (res.status !== 200) throw new Error(`createRoom: ${res.status} ${res.body.slice(0, 300)}`);
      return (JSON.parse(res.body) as { room_id: string }).room_id;
    }),
  );
  log(`${processes} process(es): pids ${server.pids.join(" ")} (parent first), ${clients.length} users with a room each`);
  return { processes, server, clients, rooms, whoami: [], sends: [] };
}

// ---- the report ------------------------------------------------------------

/** CPU over the measured time in cores (1 = one core busy all along), and per request or message in µs. */
function cpuOf(runs: Measured<unknown>[], count: number) {
  const wallUs = runs.reduce((n, r) => n + r.wallUs, 0);
  const sum = (f: (r: Measured<unknown>) => number) => runs.reduce((n, r) => n + f(r), 0);
  const perProcess = runs[0]!.switchboardUs.map((_, i) => sum((r) => r.switchboardUs[i]!));
  const switchboard = perProcess.reduce((a, b) => a + b, 0);
  const db = sum((r) => r.dbUs);
  const cores = (us: number) => (Number.isNaN(us) ? null : round(us / wallUs));
  return {
    wallUs,
    cpu: {
      switchboard_cpu_cores: cores(switchboard),
      switchboard_cpu_cores_per_process: perProcess.map(cores),
      db_cpu_cores: cores(db),
      generator_cpu_cores: cores(sum((r) => r.ownUs)),
      /** Everything else on the machine meanwhile: well above 0, neighbours took CPU from the figure. */
      other_cpu_cores: cores(sum((r) => r.machineUs) - switchboard - (Number.isNaN(db) ? 0 : db) - sum((r) => r.ownUs)),
      switchboard_cpu_us_per_op: round(switchboard / count, 1),
      db_cpu_us_per_op: Number.isNaN(db) ? null : round(db / count, 1),
      generator_cpu_us_per_op: round(sum((r) => r.ownUs) / count, 1),
    },
  };
}

function latency(runs: Measured<{ latencies: number[]; percentiles?: { p50: number; p99: number } }>[]) {
  // wrk keeps percentiles, not raw latencies: the median round's p50 and the worst round's p99.
  const given = runs.map((m) => m.result.percentiles).filter((p) => p !== undefined);
  if (given.length) {
    const p50s = given.map((p) => p.p50).sort((a, b) => a - b);
    return { p50: round(p50s[Math.floor(p50s.length / 2)]!), p99: round(Math.max(...given.map((p) => p.p99))) };
  }
  const sorted = runs.flatMap((m) => m.result.latencies).sort((a, b) => a - b);
  const pct = (p: number) => (sorted.length ? round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!) : null);
  return { p50: pct(50), p99: pct(99) };
}

function whoamiReport(t: Pick<Target, "whoami">) {
  const requests = t.whoami.reduce((n, m) => n + m.result.requests, 0);
  const { wallUs, cpu } = cpuOf(t.whoami, requests);
  return {
    rps: round((requests / wallUs) * 1e6, 0),
    ratio_to_1: null as number | null,
    rounds_rps: t.whoami.map((m) => round((m.result.requests / m.wallUs) * 1e6, 0)),
    requests,
    non_2xx: t.whoami.reduce((n, m) => n + m.result.non2xx, 0),
    errors: t.whoami.reduce((n, m) => n + m.result.errors, 0),
    latency_ms: latency(t.whoami),
    ...cpu,
  };
}

function sendsReport(t: Target) {
  const messages = t.sends.reduce((n, m) => n + m.result.messages, 0);
  const { wallUs, cpu } = cpuOf(t.sends, messages);
  const failures: Record<string, number> = {};
  for (const m of t.sends) for (const [status, n] of Object.entries(m.result.failures)) failures[status] = (failures[status] ?? 0) + n;
  return {
    msg_per_s: round((messages / wallUs) * 1e6, 1),
    ratio_to_1: null as number | null,
    rounds_msg_per_s: t.sends.map((m) => round((m.result.messages / m.wallUs) * 1e6, 0)),
    messages,
    failures,
    latency_ms: latency(t.sends),
    ...cpu,
  };
}

// ---- the run ---------------------------------------------------------------

async function main(): Promise<number> {
  const loadBefore = os.loadavg().map((n) => round(n));
  const problems: string[] = [];
  const warnings: string[] = [];
  const targets: Target[] = [];
  const bares: Pick<Target, "processes" | "server" | "clients" | "whoami">[] = [];
  let postgresInfo: Record<string, unknown> | undefined;
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
      postmaster ??= await postmasterOf(dsn).catch(() => undefined);
      targets.push(await prepare(processes, dsn));
    }
    // The yardstick: a bare node:http server on as many processes, loaded in the same rounds.
    for (const processes of PROCESSES) {
      const bare = await startBareCluster(processes);
      cleanups.push(() => bare.stop());
      bares.push({ processes, server: { ...bare, dropLog: () => undefined }, clients: [], whoami: [] });
    }
    if (!postmaster) warnings.push("PostgreSQL's processes were not found in /proc (not on this machine?): its CPU is not reported");

    // Unmeasured first: the JIT, the first send into each room, the pools' connections.
    for (const b of bares) await whoamiLoad(b, WARMUP_S);
    for (const t of targets) {
      await whoamiLoad(t, WARMUP_S);
      await sendsInOwnRooms(t, WARMUP_SENDS * t.clients.length, "warmup");
    }
    for (let r = 0; r < ROUNDS; r++) {
      const order = targets.map((_, i) => targets[(i + r) % targets.length]!);
      for (const t of order) {
        const m = await measured(t.server, () => whoamiLoad(t, WHOAMI_S));
        t.whoami.push(m);
        log(`round ${r + 1}, ${t.processes} process(es), whoami: ${round((m.result.requests / m.wallUs) * 1e6, 0)} req/s`);
      }
      for (const b of bares.map((_, i) => bares[(i + r) % bares.length]!)) {
        const m = await measured(b.server, () => whoamiLoad(b, WHOAMI_S));
        b.whoami.push(m);
        log(`round ${r + 1}, bare node:http on ${b.processes} process(es): ${round((m.result.requests / m.wallUs) * 1e6, 0)} req/s`);
      }
      for (const t of order) {
        const m = await measured(t.server, () => sendsInOwnRooms(t, SENDS, `r${r}`));
        t.sends.push(m);
        log(`round ${r + 1}, ${t.processes} process(es), sends: ${round((m.result.messages / m.wallUs) * 1e6, 0)} msg/s`);
      }
    }
  } finally {
    await cleanups.run();
  }

  const whoami: Record<string, ReturnType<typeof whoamiReport>> = {};
  const sends: Record<string, ReturnType<typeof sendsReport>> = {};
  for (const t of targets) {
    const w = (whoami[t.processes] = whoamiReport(t));
    const s = (sends[t.processes] = sendsReport(t));
    w.ratio_to_1 = round(w.rps / whoami[PROCESSES[0]!]!.rps, 3);
    s.ratio_to_1 = round(s.msg_per_s / sends[PROCESSES[0]!]!.msg_per_s, 3);
    if (w.non_2xx || w.errors) problems.push(`whoami on ${t.processes} process(es): ${w.non_2xx} non-2xx answers, ${w.errors} errors or timeouts`);
    if (Object.keys(s.failures).length) problems.push(`sends on ${t.processes} process(es) failed: ${JSON.stringify(s.failures)}`);
    if (s.messages < SENDS * ROUNDS) warnings.push(`sends on ${t.processes} process(es): a round stopped at the ${SEND_LIMIT_MS / 1000} s limit`);
  }
  const bare: Record<string, ReturnType<typeof whoamiReport>> = {};
  for (const b of bares) {
    const w = (bare[b.processes] = whoamiReport(b));
    w.ratio_to_1 = round(w.rps / bare[PROCESSES[0]!]!.rps, 3);
  }
  const cores = os.availableParallelism();
  const [one, two] = [whoami["1"], whoami["2"]];
  // The generator shares the cores. With s µs of Switchboard CPU a request on 1 process, and s2
  // on 2 plus g of the generator's, 1 process gives 1e6/s req/s (one core flat out) and 2 at most
  // cores × 1e6/(s2 + g): the ratio cannot pass cores × s/(s2 + g) whatever Switchboard does.
  const ceiling = one && two ? round((cores * one.switchboard_cpu_us_per_op) / (two.switchboard_cpu_us_per_op + two.generator_cpu_us_per_op)) : null;
  const whoami2 = two?.ratio_to_1 ?? null;
  const target = {
    whoami_2_processes_ratio: TARGET_WHOAMI_2,
    measured: whoami2,
    met: whoami2 === null ? null : whoami2 >= TARGET_WHOAMI_2,
    /** Best round over best round: the least disturbed by neighbours, which can only slow a round down. */
    best_rounds: one && two ? round(Math.max(...two.rounds_rps) / Math.max(...one.rounds_rps), 3) : null,
    /** The most 2 processes could give over 1 on these cores with this generator beside them (see above). */
    ceiling_with_the_generator_on_these_cores: ceiling,
    /** What the same machine and generator give a bare node:http server on 2 processes over 1. */
    bare_node_http_2_processes_ratio: bare["2"]?.ratio_to_1 ?? null,
    /** Switchboard's 2-over-1 ratio as a share of the bare server's: 1 means it scales as well as Node can here. */
    share_of_bare_scaling: whoami2 !== null && bare["2"] ? round(whoami2 / bare["2"].ratio_to_1!, 3) : null,
  };
  if (target.met === false) warnings.push(`whoami on 2 processes is ${whoami2}× 1 process, below the ${TARGET_WHOAMI_2}× target; with the load generator on the same ${cores} cores the ceiling was ${ceiling}×`);

  const loadAfter = os.loadavg().map((n) => round(n));
  // Measured rather than guessed from the load average: CPU the machine spent on anything else.
  const others = [...Object.entries(whoami).map(([p, r]) => [`whoami ${p}`, r] as const), ...Object.entries(sends).map(([p, r]) => [`sends ${p}`, r] as const)]
    .filter(([, r]) => (r.other_cpu_cores ?? 0) > 0.25)
    .map(([name, r]) => `${name}: ${r.other_cpu_cores}`);
  if (others.length) warnings.push(`other processes took CPU cores while measured (${others.join(", ")}): those figures are low`);
  const report = {
    benchmark: "Switchboard on PostgreSQL with worker_processes 1, 2 and 4: whoami and concurrent sends, as ratios to the first process count in the same run",
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    cores,
    cpu_model: os.cpus()[0]?.model ?? "unknown",
    postgres: postgresInfo,
    switchboard:
      "node dist/src/main.js --config FILE, worker_processes N (Node cluster, one shared port), a fresh database per N, pool cp_min 5 cp_max 10 per process, logging at info (a line per request) to a file",
    rounds: ROUNDS,
    whoami_load: `GET /_matrix/client/v3/account/whoami, ${CONNECTIONS} keep-alive connections ${GENERATOR === "wrk" ? "from 1 user" : `shared between ${WHOAMI_USERS} users`}, ${GENERATOR === "wrk" ? "wrk with one thread (bench/wrk_load.ts)" : "bench/raw_load.ts in this process"}; ${WARMUP_S} s warm-up, then ${WHOAMI_S} s per round`,
    sends_load: `${CLIENTS} users, each in a private room of their own with one keep-alive connection, all sending at once, one message after another; ${WARMUP_SENDS} each to warm up, then ${SENDS} per round shared out`,
    cpu_note: `CPU over the measured time in cores (1 = one core busy all along; this machine has ${cores}): Switchboard is its parent and every worker (per process: parent first), PostgreSQL its postmaster and all its children, the generator wrk (its process) or this process for the whoami load and this process for sends; *_us_per_op is per request or message`,
    loadavg_before: loadBefore,
    loadavg_after: loadAfter,
    whoami,
    bare_node_http_whoami: bare,
    sends,
    target,
    ok: problems.length === 0,
    problems,
    warnings,
  };
  return printReport(report, warnings, problems, log);
}

runMain(main);
