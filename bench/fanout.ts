/**
 * `/sync` wake-up fan-out benchmark (the issue: "a message sent through process A wakes a
 * long-poll `/sync` held by process B at once … p99 < 50 ms to 100 waiting clients"). Two
 * Switchboard processes, started separately (`--worker-id a`, `--worker-id b`) on one PostgreSQL
 * database; one public room, a sender and 100 receivers in it. Each round, every receiver holds a
 * long-poll `/sync`, and once they are all parked the sender sends one message through A; each
 * receiver's latency is from just before the PUT to the end of the sync response that carries it.
 * Scenarios, rounds interleaved in a rotating order so that noise on the machine hits all alike:
 *   - same_process (the baseline): receivers long-poll on A;
 *   - across_processes: receivers long-poll on B (woken by A's NOTIFY);
 *   - one_receiver.same_process and .across_processes: the same with a single receiver, which
 *     shows the wake-up itself apart from the cost of building 100 sync responses at once.
 * Beside each, the CPU Switchboard a and b and PostgreSQL used from the send to the last wake-up.
 * PostgreSQL: BENCH_POSTGRES or a private cluster (bench/postgres.ts); without one {"skipped": …}.
 *
 * Environment: BENCH_FANOUT_CLIENTS (default 100), BENCH_FANOUT_ROUNDS per scenario (default 15),
 * BENCH_FANOUT_KEEP_LOGS (keep the servers' logs, a JSON line per request, and say where),
 * BENCH_FANOUT_CPU_PROF=DIR (a V8 CPU profile of each Switchboard process, written to DIR).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { stringify } from "yaml";
import { CleanUps, envCount, printReport, runMain } from "./entry.js";
import { openPostgres, postmasterOf, procCpuTime, treeCpu } from "./postgres.js";
import { freePort } from "../test/helpers/ports.js";
import { spawnSwitchboard } from "./switchboard_process.js";
import { closeClients, registerClients, request, roomForAll, type SendClient } from "./send_client.js";

const CLIENTS = envCount("BENCH_FANOUT_CLIENTS", 100);
const ROUNDS = envCount("BENCH_FANOUT_ROUNDS", 15);
const WARMUP_ROUNDS = 2;
/** How long every sync must have been waiting, unanswered, before the send. */
const PARK_MS = 200;
/** A receiver still without the message this long after the send counts as missed. */
const ROUND_LIMIT_MS = 15_000;
/** Under request()'s own 30 s limit, so that an unwoken long-poll comes back empty rather than failing. */
const SYNC_TIMEOUT_MS = 25_000;
const TARGET_P99_MS = 50;
const FILTER = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 5 } }, presence: { not_types: ["*"] } }));

const MANY = { per_second: 100_000, burst_count: 100_000 };

const log = (msg: string) => console.error(`[bench:fanout] ${msg}`);
const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cleanups = new CleanUps(log);

// ---- Switchboard -----------------------------------------------------------

interface Server {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** `switchboard --config FILE --worker-id ID`, its log (a JSON line per request) to a file; resolves once it serves. */
async function startSwitchboard(dir: string, workerId: string, port: number, common: object): Promise<Server> {
  const file = path.join(dir, `${workerId}.yaml`);
  writeFileSync(file, stringify({ ...common, listeners: [{ port, bind_addresses: ["127.0.0.1"] }] }));
  const prof = process.env.BENCH_FANOUT_CPU_PROF;
  const execArgv = prof ? ["--cpu-prof", `--cpu-prof-dir=${path.resolve(prof)}`] : [];
  const p = await spawnSwitchboard(["--config", file, "--worker-id", workerId], dir, `${workerId}.log.jsonl`, 1, execArgv);
  cleanups.push(p.stop);
  return { url: p.url, pid: p.pid, stop: p.stop };
}

// ---- one round -------------------------------------------------------------

interface Receiver extends SendClient {
  since: string;
}

async function sync(base: string, r: Receiver, timeoutMs: number): Promise<{ at: number; body: string }> {
  const path = `/_matrix/client/v3/sync?filter=${FILTER}&timeout=${timeoutMs}&since=${encodeURIComponent(r.since)}`;
  const res = await request(base, r.agent, "GET", path, r.token);
  const at = performance.now();
  if (res.status !== 200) throw new Error(`sync: ${res.status} ${res.body.slice(0, 300)}`);
  r.since = (JSON.parse(res.body) as { next_batch: string }).next_batch;
  return { at, body: res.body };
}

interface Round {
  latencies: number[];
  ackMs: number;
  /** CPU ms from just before the send to the last wake-up: Switchboard a, b, PostgreSQL (all its processes). */
  cpuMs: [number, number, number];
  missed: number;
  /** Syncs that came back before the send, or after it without the message: re-issued. */
  earlyWakes: number;
  lateEmpty: number;
}

/**
 * Parks every receiver's long-poll on `syncServer`, sends one message through `sendBase`, and
 * times each receiver's wake-up. A sync that comes back without the message is issued again
 * (the latency still counts from the send).
 */
async function fanoutRound(syncServer: Server, sendBase: string, sender: SendClient, receivers: readonly Receiver[], roomId: string, tag: string, cpu: () => number[]): Promise<Round> {
  const marker = `fanout ${tag}`;
  let t0 = Number.POSITIVE_INFINITY;
  let lastIssue = performance.now();
  let earlyWakes = 0;
  let lateEmpty = 0;
  const got: { at: number; body: string }[] = [];
  const waits = receivers.map(async (r) => {
    for (;;) {
      lastIssue = Math.max(lastIssue, performance.now());
      const res = await sync(syncServer.url, r, SYNC_TIMEOUT_MS);
      if (res.body.includes(marker)) return void got.push(res);
      if (res.at < t0) earlyWakes++;
      else lateEmpty++;
      if (res.at - t0 > ROUND_LIMIT_MS) return;
    }
  });
  // Parked: none (re-)issued for PARK_MS, and the server idle (at most one 10 ms CPU tick in 100 ms)
  // rather than still building the empty responses it answers before it waits.
  for (let cpuBefore = Number.NaN, deadline = performance.now() + 5000; performance.now() < deadline; ) {
    const since = performance.now() - lastIssue;
    if (since < PARK_MS) await sleep(PARK_MS - since + 5);
    const cpuNow = procCpuTime(syncServer.pid);
    if (cpuNow - cpuBefore <= 10_000 && performance.now() - lastIssue >= PARK_MS) break;
    cpuBefore = cpuNow;
    await sleep(100);
  }
  const cpu0 = cpu();
  t0 = performance.now();
  const res = await request(sendBase, sender.agent, "PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${tag}`, sender.token, {
    msgtype: "m.text",
    body: marker,
  });
  const ackMs = performance.now() - t0;
  if (res.status !== 200) throw new Error(`send: ${res.status} ${res.body.slice(0, 300)}`);
  const { event_id: eventId } = JSON.parse(res.body) as { event_id: string };
  await Promise.all(waits);
  const cpu1 = cpu();
  const cpuMs = cpu1.map((v, k) => round((v - cpu0[k]!) / 1000, 1)) as Round["cpuMs"];
  const latencies = got.map((g) => g.at - t0);
  const wrong = got.filter((g) => !g.body.includes(`"${eventId}"`)).length;
  if (wrong > 0) throw new Error(`${wrong} syncs carried the marker but not the event ${eventId}`);
  return { latencies, ackMs, cpuMs, missed: receivers.length - got.length, earlyWakes, lateEmpty };
}

// ---- the run ---------------------------------------------------------------

function stats(values: number[]) {
  const sorted = [...values].sort((a, b) => a - b);
  const pct = (p: number) => round(sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN);
  return { samples: sorted.length, p50_ms: pct(50), p90_ms: pct(90), p99_ms: pct(99), max_ms: round(sorted[sorted.length - 1] ?? Number.NaN) };
}

async function main(): Promise<number> {
  const problems: string[] = [];
  const warnings: string[] = [];
  const loadBefore = os.loadavg().map((n) => round(n));
  const scenarios = { same_process: [], across_processes: [], one_receiver_same_process: [], one_receiver_across_processes: [] } as Record<string, Round[]>;
  let postgresInfo: Record<string, unknown> | undefined;
  try {
    const pgOrSkip = await openPostgres();
    if ("skipped" in pgOrSkip) {
      process.stdout.write(`${JSON.stringify({ skipped: pgOrSkip.skipped }, null, 2)}\n`);
      return 0;
    }
    cleanups.push(() => pgOrSkip.close());
    postgresInfo = { source: pgOrSkip.source, version: pgOrSkip.version, ...pgOrSkip.settings };
    const dsn = await pgOrSkip.createDatabase("fanout");
    const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-bench-fanout-"));
    if (process.env.BENCH_FANOUT_KEEP_LOGS) log(`logs kept in ${dir}`);
    else cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const [portA, portB] = [await freePort(), await freePort()];
    // The same homeserver twice: everything but the listener's port in common, the signing key made beforehand.
    const common = {
      server_name: "localhost",
      public_baseurl: `http://localhost:${portA}/`,
      database: { name: "psycopg2", args: { dsn } },
      signing_key_path: path.join(dir, "signing.key"),
      enable_registration: true,
      enable_registration_without_verification: true,
      rc_message: MANY,
      rc_registration: MANY,
      rc_login: { address: MANY, account: MANY, failed_attempts: MANY },
      log_level: "info",
    };
    const a = await startSwitchboard(dir, "a", portA, common);
    const b = await startSwitchboard(dir, "b", portB, common);
    log(`PostgreSQL ${pgOrSkip.version}; switchboard a at ${a.url}, b at ${b.url}`);

    const groups = Array.from({ length: Math.min(10, CLIENTS) }, (_, g) => Math.floor(CLIENTS / 10) + (g < CLIENTS % 10 ? 1 : 0));
    const [sender] = await registerClients(a.url, "sender", 1);
    const registered = (await Promise.all(groups.map((n, g) => registerClients(a.url, `receiver${g}_`, n)))).flat();
    const all = [sender!, ...registered];
    cleanups.push(async () => closeClients(all));
    const roomId = await roomForAll(a.url, all);
    // The one-receiver rounds have a room of their own, so that their messages leave the 100 receivers' syncs alone.
    const [solo] = await registerClients(a.url, "solo", 1);
    all.push(solo!);
    const soloRoomId = await roomForAll(a.url, [sender!, solo!]);
    const receivers: Receiver[] = [];
    for (const c of [...registered, solo!]) {
      const r = { ...c, since: "" };
      const res = await request(a.url, c.agent, "GET", `/_matrix/client/v3/sync?filter=${FILTER}&timeout=0`, c.token);
      if (res.status !== 200) throw new Error(`initial sync: ${res.status} ${res.body.slice(0, 300)}`);
      r.since = (JSON.parse(res.body) as { next_batch: string }).next_batch;
      receivers.push(r);
    }
    const soloReceiver = receivers.pop()!;
    log(`${receivers.length} receivers and a sender in ${roomId}`);

    const postmaster = await postmasterOf(dsn).catch(() => undefined);
    const dbCpu = () => (postmaster ? [...treeCpu(postmaster).values()].reduce((x, y) => x + y, 0) : Number.NaN);
    const cpu = () => [procCpuTime(a.pid), procCpuTime(b.pid), dbCpu()];
    // The one-receiver rounds show the wake-up itself, without 99 other syncs to build.
    const setups = {
      same_process: [a, receivers, roomId],
      across_processes: [b, receivers, roomId],
      one_receiver_same_process: [a, [soloReceiver], soloRoomId],
      one_receiver_across_processes: [b, [soloReceiver], soloRoomId],
    } as const;
    const names = Object.keys(setups) as (keyof typeof setups)[];
    for (let i = 0; i < WARMUP_ROUNDS + ROUNDS; i++) {
      // A rotating order, reversed every other round, so that no scenario always follows the same one.
      const rotated = names.map((_, k) => names[(k + i) % names.length]!);
      for (const name of i % 2 ? rotated.reverse() : rotated) {
        const [server, who, room] = setups[name];
        const r = await fanoutRound(server, a.url, sender!, who, room, `r${i}-${name}`, cpu);
        if (i >= WARMUP_ROUNDS) scenarios[name]!.push(r);
        const s = stats(r.latencies);
        log(`${i < WARMUP_ROUNDS ? "warm-up" : "round"} ${i + 1} ${name}: p50 ${s.p50_ms} ms, max ${s.max_ms} ms, ack ${round(r.ackMs)} ms${r.missed ? `, ${r.missed} missed` : ""}`);
      }
    }
  } finally {
    await cleanups.run();
  }

  const mean = (rounds: Round[], k: number) => round(rounds.reduce((n, r) => n + r.cpuMs[k]!, 0) / rounds.length, 1);
  const report = (rounds: Round[]) => ({
    ...stats(rounds.flatMap((r) => r.latencies)),
    send_ack_ms: stats(rounds.map((r) => r.ackMs)),
    /** Per round, the first receiver woken and the last: one bad round shows here rather than in the p99 alone. */
    rounds_first_ms: rounds.map((r) => round(Math.min(...r.latencies), 1)),
    rounds_max_ms: rounds.map((r) => round(Math.max(...r.latencies), 1)),
    /** Mean CPU per round, from the send to the last wake-up, in ms: next to rounds_max_ms, how much of the wait was work. */
    cpu_ms_per_round: { switchboard_a: mean(rounds, 0), switchboard_b: mean(rounds, 1), postgres: mean(rounds, 2) },
    missed: rounds.reduce((n, r) => n + r.missed, 0),
    early_wakes: rounds.reduce((n, r) => n + r.earlyWakes, 0),
    empty_wakes_after_send: rounds.reduce((n, r) => n + r.lateEmpty, 0),
  });
  const same = report(scenarios.same_process!);
  const across = report(scenarios.across_processes!);
  const oneSame = report(scenarios.one_receiver_same_process!);
  const oneAcross = report(scenarios.one_receiver_across_processes!);
  const ratios = (x: typeof same, base: typeof same) => ({ ...x, p50_ratio_to_same_process: round(x.p50_ms / base.p50_ms), p99_ratio_to_same_process: round(x.p99_ms / base.p99_ms) });
  const named = [["same_process", same], ["across_processes", across], ["one_receiver.same_process", oneSame], ["one_receiver.across_processes", oneAcross]] as const;
  for (const [name, s] of named) {
    if (s.missed) problems.push(`${name}: ${s.missed} receivers never got the message within ${ROUND_LIMIT_MS / 1000} s`);
    if (s.early_wakes) warnings.push(`${name}: ${s.early_wakes} syncs came back before the send (re-issued)`);
  }
  const met = across.p99_ms < TARGET_P99_MS && same.p99_ms < TARGET_P99_MS;
  if (!met) warnings.push(`p99 fan-out latency above ${TARGET_P99_MS} ms (same process ${same.p99_ms} ms, across processes ${across.p99_ms} ms)`);
  return printReport(
    {
      benchmark: "/sync wake-up fan-out: one message sent through process A, long-polls parked on A (same_process, the baseline) or on B (across_processes)",
      date: new Date().toISOString(),
      node: process.version,
      cores: os.availableParallelism(),
      cpu_model: os.cpus()[0]?.model ?? "unknown",
      postgres: postgresInfo,
      switchboard: "two processes, node dist/src/main.js --config FILE --worker-id a|b, one database, logging at info to a file",
      clients: CLIENTS,
      rounds: ROUNDS,
      warmup_rounds: WARMUP_ROUNDS,
      method: `each round: every receiver's (${CLIENTS}, or one in one_receiver) GET /sync?timeout=${SYNC_TIMEOUT_MS} (timeline limit 5, own keep-alive connection) parked ≥ ${PARK_MS} ms, then one PUT /send through A; latency from just before the PUT to the end of each sync response carrying the event`,
      loadavg_before: loadBefore,
      loadavg_after: os.loadavg().map((n) => round(n)),
      same_process: same,
      across_processes: ratios(across, same),
      one_receiver: { same_process: oneSame, across_processes: ratios(oneAcross, oneSame) },
      send_ack_ms_p50: stats(Object.values(scenarios).flatMap((rounds) => rounds.map((r) => r.ackMs))).p50_ms,
      target: { p99_ms: TARGET_P99_MS, same_process_p99_ms: same.p99_ms, across_processes_p99_ms: across.p99_ms, met },
      ok: problems.length === 0,
      problems,
      warnings,
    },
    warnings,
    problems,
    log,
  );
}

runMain(main);
