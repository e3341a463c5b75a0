/**
 * Send benchmark (the PostgreSQL issue's benchmark section): `PUT /rooms/{room}/send/m.room.message/{txn}`
 * into one room, on
 *   - a bare node:http server that reads the body and answers `{"event_id":"$x"}` (the yardstick),
 *   - the library floor: Fastify, pino and better-sqlite3 storing each body, nothing else,
 *   - Switchboard on SQLite and Switchboard on PostgreSQL, each a child process (bench/serve.ts),
 *   - Synapse on PostgreSQL (../shared/tools/synapse.sh), on its own database in the same cluster,
 * all measured in the same run. Two modes: `BENCH_SENDS` messages sent one after another by one
 * user over one connection, and as many shared out between `BENCH_SENDS_CLIENTS` different users,
 * all joined to the room, each with one keep-alive connection, sending at once. Each server is
 * loaded alone; the rounds go round the servers in a rotating order, so that a machine that slows
 * down for a few seconds slows every server alike.
 *
 * PostgreSQL: BENCH_POSTGRES, or a private cluster (bench/postgres.ts). When PostgreSQL or Synapse
 * cannot be had, that part is reported as {"skipped": reason} and the rest still runs.
 *
 * Environment:
 *   BENCH_SENDS           messages per measured batch (default 500)
 *   BENCH_SENDS_CLIENTS   concurrent clients, one user each (default 10)
 *   BENCH_SENDS_ROUNDS    measured batches per server and mode (default 3)
 *   BENCH_SENDS_WARMUP    unmeasured messages per server and mode first (default 50)
 *   BENCH_SENDS_LIMIT     seconds after which a batch stops sending (default 60): it counts what it sent
 *   BENCH_POSTGRES        a postgres:// URL whose user may create databases
 *   BENCH_SYNAPSE_TIMEOUT seconds Synapse may take to install and start (default 600)
 *   BENCH_SKIP_SYNAPSE    set: leave Synapse out
 *   BENCH_SENDS_CPU_PROF  a directory: write V8 CPU profiles of the Switchboard children there
 */
import { mkdtempSync, rmSync } from "node:fs";
import os, { tmpdir } from "node:os";
import path from "node:path";
import { startChild } from "./children.js";
import { envCount, printReport, runMain } from "./entry.js";
import { bareCommits, openPostgres, type Postgres } from "./postgres.js";
import { closeClients, newAgent, registerClients, roomForAll, sendBatch, type Batch, type SendClient } from "./send_client.js";
import { startSynapse } from "./synapse.js";

const MESSAGES = envCount("BENCH_SENDS", 500);
const CLIENTS = envCount("BENCH_SENDS_CLIENTS", 10);
const ROUNDS = envCount("BENCH_SENDS_ROUNDS", 3);
const WARMUP = envCount("BENCH_SENDS_WARMUP", 50);
const LIMIT_MS = envCount("BENCH_SENDS_LIMIT", 60) * 1000;
const SKIP_SYNAPSE = Boolean(process.env.BENCH_SKIP_SYNAPSE);
const CPU_PROF = process.env.BENCH_SENDS_CPU_PROF;
/** The targets, for concurrent sends. */
const TARGET_OVER_SYNAPSE = 10;
const TARGET_OVER_SQLITE = 0.5;

const log = (msg: string) => console.error(`[bench:sends] ${msg}`);
const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const reason = (err: unknown) => (err instanceof Error ? err.message : String(err));

type Key = "baseline" | "library_floor" | "switchboard_sqlite" | "switchboard_postgres" | "synapse_postgres";
const MODES = ["sequential", "concurrent"] as const;
type Mode = (typeof MODES)[number];

/** A server under load, with the users and room it is loaded with. */
interface Target {
  key: Key;
  url: string;
  cpuTime(): Promise<number>;
  clients: SendClient[];
  roomId: string;
  batches: Record<Mode, { batch: Batch; cpuUs: number }[]>;
}

/** Clean-up steps, last first: run at the end, or on SIGINT/SIGTERM. */
const cleanups: (() => Promise<unknown>)[] = [];
async function cleanUp(): Promise<void> {
  for (const step of cleanups.splice(0).reverse()) await step().catch((err: unknown) => log(`clean-up: ${reason(err)}`));
}
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => void cleanUp().finally(() => process.exit(130)));
}

const MANY = { per_second: 1_000_000, burst_count: 1_000_000 };

async function switchboard(key: Key, database?: Record<string, unknown>): Promise<Target> {
  const overrides = { rc_message: MANY, rc_registration: MANY, ...(database ? { database } : {}) };
  const prof = CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${path.resolve(CPU_PROF)}`, `--cpu-prof-name=${key}.cpuprofile`] : [];
  const child = await startChild("serve.js", prof, undefined, { BENCH_SERVE_CONFIG: JSON.stringify(overrides) });
  cleanups.push(() => child.stop());
  return matrixTarget(key, child.url, () => child.cpuTime());
}

async function matrixTarget(key: Key, url: string, cpuTime: () => Promise<number>): Promise<Target> {
  const clients = await registerClients(url, "bench", CLIENTS);
  cleanups.push(async () => closeClients(clients));
  const roomId = await roomForAll(url, clients);
  log(`${key}: ${clients.length} users joined ${roomId} at ${url}`);
  return { key, url, cpuTime, clients, roomId, batches: { sequential: [], concurrent: [] } };
}

async function baseline(): Promise<Target> {
  const child = await startChild("baseline.js", [], { type: "configure", keepAliveTimeoutMs: 5_000, responses: [], putReply: '{"event_id":"$x"}' });
  cleanups.push(() => child.stop());
  // A token and room ID as long as Switchboard's, so the requests are the same size; the baseline ignores both.
  const clients = Array.from({ length: CLIENTS }, (_, i) => ({ token: `sbt_${String(i).padStart(43, "x")}`, agent: newAgent() }));
  cleanups.push(async () => closeClients(clients));
  const roomId = `!${"x".repeat(24)}:localhost`;
  return { key: "baseline", url: child.url, cpuTime: () => child.cpuTime(), clients, roomId, batches: { sequential: [], concurrent: [] } };
}

/**
 * The library floor (footprint_floor.ts): Fastify logging each request with pino, storing each
 * body in one better-sqlite3 transaction, and nothing else. What any server on this stack pays
 * per send before it does anything a homeserver must.
 */
async function libraryFloor(): Promise<Target> {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-floor-"));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  const child = await startChild("footprint_floor.js", [], undefined, { BENCH_FLOOR_DIR: dir });
  cleanups.push(() => child.stop());
  const clients = Array.from({ length: CLIENTS }, (_, i) => ({ token: `sbt_${String(i).padStart(43, "x")}`, agent: newAgent() }));
  cleanups.push(async () => closeClients(clients));
  const roomId = `!${"x".repeat(24)}:localhost`;
  return { key: "library_floor", url: child.url, cpuTime: () => child.cpuTime(), clients, roomId, batches: { sequential: [], concurrent: [] } };
}

function clientsFor(t: Target, mode: Mode): SendClient[] {
  return mode === "sequential" ? t.clients.slice(0, 1) : t.clients;
}

async function measure(t: Target, mode: Mode, tag: string): Promise<void> {
  const cpu0 = await t.cpuTime();
  const batch = await sendBatch(t.url, t.roomId, clientsFor(t, mode), MESSAGES, tag, LIMIT_MS);
  const cpuUs = (await t.cpuTime()) - cpu0;
  t.batches[mode].push({ batch, cpuUs });
  const cut = batch.messages < MESSAGES ? ` (only ${batch.messages} sent within ${LIMIT_MS / 1000} s)` : "";
  log(`${t.key} ${mode} ${tag}: ${round((batch.messages / batch.wallMs) * 1000, 0)} msg/s${cut}`);
}

function percentile(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : Number.NaN;
}

interface ModeResult {
  /** All measured messages over all measured wall time. */
  msg_per_s: number;
  /** Messages measured, all rounds together (fewer than rounds × messages_per_batch if the time limit cut a batch short). */
  messages: number;
  /** msg/s over the baseline's in the same mode and run. */
  ratio_to_baseline?: number;
  rounds_msg_per_s: number[];
  latency_ms: { p50: number; p99: number; max: number };
  /** Sends not answered 200 with an event_id, by status (0: no answer). */
  failures: Record<string, number>;
  /** CPU the server process used while measured; 100 is one core. PostgreSQL's own CPU is not included. */
  server_cpu_pct: number;
  server_cpu_us_per_msg: number;
}

function summarise(t: Target, mode: Mode): ModeResult {
  const runs = t.batches[mode];
  const messages = runs.reduce((n, r) => n + r.batch.messages, 0);
  const wallMs = runs.reduce((n, r) => n + r.batch.wallMs, 0);
  const cpuUs = runs.reduce((n, r) => n + r.cpuUs, 0);
  const latencies = runs.flatMap((r) => r.batch.latencies).sort((a, b) => a - b);
  const failures: Record<string, number> = {};
  for (const r of runs) for (const [status, n] of Object.entries(r.batch.failures)) failures[status] = (failures[status] ?? 0) + n;
  return {
    msg_per_s: round((messages / wallMs) * 1000, 1),
    messages,
    rounds_msg_per_s: runs.map((r) => round((r.batch.messages / r.batch.wallMs) * 1000, 0)),
    latency_ms: { p50: round(percentile(latencies, 50)), p99: round(percentile(latencies, 99)), max: round(latencies.at(-1) ?? Number.NaN) },
    failures,
    server_cpu_pct: round((cpuUs / (wallMs * 1000)) * 100, 1),
    server_cpu_us_per_msg: round(cpuUs / messages, 0),
  };
}

type Part = Record<Mode, ModeResult> | { skipped: string } | { failed: string };

/** A part's msg/s in one mode; undefined when it was skipped or failed. */
const rateOf = (part: Part | undefined, mode: Mode): number | undefined => (part && mode in part ? (part as Record<Mode, ModeResult>)[mode].msg_per_s : undefined);
const ratio = (a: number | undefined, b: number | undefined): number | null => (a !== undefined && b ? round(a / b, 3) : null);

async function main(): Promise<number> {
  const loadBefore = os.loadavg().map((n) => round(n));
  const problems: string[] = [];
  const parts = new Map<Key, Part>();
  const targets: Target[] = [];
  let postgresInfo: Record<string, unknown> | undefined;
  let synapseVersion: string | undefined;
  let commits: Record<Mode, number> | undefined;
  try {
    log(`starting the node:http baseline and Switchboard on SQLite`);
    targets.push(await baseline());
    targets.push(await libraryFloor());
    targets.push(await switchboard("switchboard_sqlite"));

    const pgOrSkip = await openPostgres();
    let postgres: Postgres | undefined;
    if ("skipped" in pgOrSkip) {
      log(`PostgreSQL skipped: ${pgOrSkip.skipped}`);
      postgresInfo = pgOrSkip;
      parts.set("switchboard_postgres", pgOrSkip);
      parts.set("synapse_postgres", pgOrSkip);
    } else {
      postgres = pgOrSkip;
      cleanups.push(() => pgOrSkip.close());
      log(`PostgreSQL ${postgres.version} (${postgres.source})`);
      try {
        commits = await bareCommits(await postgres.createDatabase("bench_commits"), MESSAGES, CLIENTS);
        log(`bare PostgreSQL: ${commits.sequential} commits/s one after another, ${commits.concurrent} from ${CLIENTS} connections`);
      } catch (err) {
        problems.push(`bare PostgreSQL commits: ${reason(err)}`);
      }
      postgresInfo = { source: postgres.source, version: postgres.version, ...postgres.settings, bare_insert_commits_per_s: commits ?? null };
      try {
        const dsn = await postgres.createDatabase("switchboard_bench");
        targets.push(await switchboard("switchboard_postgres", { name: "psycopg2", args: { dsn, cp_min: 5, cp_max: 10 } }));
      } catch (err) {
        problems.push(`Switchboard on PostgreSQL: ${reason(err)}`);
        parts.set("switchboard_postgres", { failed: reason(err) });
      }
      if (SKIP_SYNAPSE) {
        parts.set("synapse_postgres", { skipped: "BENCH_SKIP_SYNAPSE is set" });
      } else {
        try {
          log("starting Synapse on PostgreSQL (the first time, synapse.sh installs it into a virtualenv)");
          const synapse = await startSynapse(await postgres.createDatabase("synapse_bench"));
          cleanups.push(() => synapse.stop());
          synapseVersion = synapse.version;
          targets.push(await matrixTarget("synapse_postgres", synapse.url, () => synapse.cpuTime()));
        } catch (err) {
          log(`Synapse skipped: ${reason(err)}`);
          parts.set("synapse_postgres", { skipped: `Synapse could not be had: ${reason(err)}` });
        }
      }
    }

    for (const t of targets) {
      for (const mode of MODES) await sendBatch(t.url, t.roomId, clientsFor(t, mode), WARMUP, `warmup-${mode}`, LIMIT_MS);
    }
    log(`warmed up (${WARMUP} messages per server and mode); ${ROUNDS} rounds of ${MESSAGES} messages per server and mode`);
    for (let r = 0; r < ROUNDS; r++) {
      const order = targets.map((_, i) => targets[(i + r) % targets.length]!);
      for (const mode of MODES) for (const t of order) await measure(t, mode, `r${r}-${mode}`);
    }
    for (const t of targets) parts.set(t.key, { sequential: summarise(t, "sequential"), concurrent: summarise(t, "concurrent") });
  } finally {
    await cleanUp();
  }

  const base = parts.get("baseline") as Record<Mode, ModeResult>;
  for (const [key, part] of parts) {
    if (key === "baseline" || !(MODES[0] in part)) continue;
    for (const mode of MODES) {
      const m = (part as Record<Mode, ModeResult>)[mode];
      m.ratio_to_baseline = round(m.msg_per_s / base[mode].msg_per_s, 3);
    }
  }
  for (const [key, part] of parts) {
    for (const mode of MODES) {
      const failures = mode in part ? (part as Record<Mode, ModeResult>)[mode].failures : {};
      if (Object.keys(failures).length) problems.push(`${key} ${mode}: sends failed: ${JSON.stringify(failures)}`);
    }
  }
  const rate = (key: Key, mode: Mode) => rateOf(parts.get(key), mode);
  const compare = (mode: Mode) => ({
    switchboard_postgres_over_synapse_postgres: ratio(rate("switchboard_postgres", mode), rate("synapse_postgres", mode)),
    switchboard_postgres_over_switchboard_sqlite: ratio(rate("switchboard_postgres", mode), rate("switchboard_sqlite", mode)),
    switchboard_sqlite_over_synapse_postgres: ratio(rate("switchboard_sqlite", mode), rate("synapse_postgres", mode)),
    /** Over the same stack doing nothing but store the body: what the homeserver's own work costs. */
    switchboard_sqlite_over_library_floor: ratio(rate("switchboard_sqlite", mode), rate("library_floor", mode)),
    /** Over one-row INSERT commits on the same PostgreSQL: how close a send comes to the commit rate. */
    switchboard_postgres_over_bare_postgres_commits: ratio(rate("switchboard_postgres", mode), commits?.[mode]),
  });
  const comparisons = { sequential: compare("sequential"), concurrent: compare("concurrent") };
  const target = (name: string, ratio: number | null, least: number) => ({
    name,
    ratio,
    target: least,
    /** null: a side was skipped or failed, so there is nothing to compare. */
    meets_target: ratio === null ? null : ratio >= least,
  });
  const targetResults = [
    target("concurrent sends: Switchboard on PostgreSQL / Synapse on PostgreSQL", comparisons.concurrent.switchboard_postgres_over_synapse_postgres, TARGET_OVER_SYNAPSE),
    target("concurrent sends: Switchboard on PostgreSQL / Switchboard on SQLite", comparisons.concurrent.switchboard_postgres_over_switchboard_sqlite, TARGET_OVER_SQLITE),
  ];

  const warnings: string[] = [];
  for (const t of targets) {
    for (const mode of MODES) {
      const cut = t.batches[mode].filter((r) => r.batch.messages < MESSAGES).length;
      if (cut) warnings.push(`${t.key} ${mode}: ${cut} batch(es) stopped at the ${LIMIT_MS / 1000} s limit; its msg/s counts the messages sent`);
    }
  }
  const loadAfter = os.loadavg().map((n) => round(n));
  if ((loadBefore[0] ?? 0) > 1) warnings.push(`1-minute load average was ${loadBefore[0]} before the run: other processes shared the cores, so figures are noisy`);
  if (os.availableParallelism() < 4) {
    warnings.push(`${os.availableParallelism()} CPUs: the server, PostgreSQL and the load generator share them, which lowers the PostgreSQL figures most`);
  }
  const report = {
    benchmark: "PUT /rooms/{room}/send/m.room.message/{txn} into one room, against a bare node:http PUT server in the same run",
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    cpus: os.availableParallelism(),
    cpu_model: os.cpus()[0]?.model ?? "unknown",
    messages_per_batch: MESSAGES,
    rounds: ROUNDS,
    warmup_messages: WARMUP,
    batch_time_limit_s: LIMIT_MS / 1000,
    sequential: "one user, one keep-alive connection, each send waiting for the previous answer",
    concurrent: `${CLIENTS} different users, all joined to the one room, one keep-alive connection each, all sending at once (messages shared out evenly)`,
    load_generator: "node:http in the parent process; each server in a process of its own, loaded one at a time, in a rotating order per round",
    baseline_server: 'node:http in a child process: reads and parses the JSON body, answers 200 {"event_id":"$x"}',
    switchboard:
      "bench/serve.ts, logging each request at info into /dev/null; SQLite in WAL mode, synchronous normal (the default: no fsync per commit); PostgreSQL pool cp_min 5, cp_max 10 (as Synapse's)",
    synapse: synapseVersion ? `Synapse ${synapseVersion}, one process, logging at INFO to a file, database pool cp_min 5, cp_max 10` : undefined,
    postgres: postgresInfo,
    loadavg_before: loadBefore,
    loadavg_after: loadAfter,
    baseline: parts.get("baseline"),
    library_floor_server:
      "bench/footprint_floor.ts: Fastify logging each request with pino into /dev/null, each body stored in one better-sqlite3 transaction (WAL, synchronous normal); no auth, no event",
    library_floor: parts.get("library_floor"),
    switchboard_sqlite: parts.get("switchboard_sqlite"),
    switchboard_postgres: parts.get("switchboard_postgres"),
    synapse_postgres: parts.get("synapse_postgres"),
    comparisons,
    targets: targetResults,
    ok: problems.length === 0,
    problems,
    warnings,
  };
  return printReport(report, warnings, problems, log);
}

runMain(main);
