/**
 * Sliding sync benchmark (issue #18 §4): a real Switchboard process on SQLite, one user in
 * `ROOMS` rooms (a name and one message each), measured against `/sync` v2 for the same user in
 * the same run:
 *   - initial request: simplified sliding sync (MSC4186) with one list, range 0–19, timeline
 *     limit 1, against v2's initial sync with a filter of timeline limit 1 and lazy-loaded members
 *     (the same per-room timeline; v2 answers for every room). Target: ≤ 0.5× v2's time.
 *   - incremental wake-up: `WAITERS` sliding-sync connections long-polling from their positions,
 *     then a message into one of the rooms; from the send's start to each answer. The same with
 *     `WAITERS` v2 long-polls, in rounds that alternate the order. Target: sliding sync p99 < 50 ms.
 * Set-up (registration, rooms, messages) is timed on its own and not counted.
 *
 * Environment:
 *   BENCH_SS_ROOMS     rooms the user is in (default 500)
 *   BENCH_SS_WAITERS   connections waiting at once, per side (default 100)
 *   BENCH_SS_INITIALS  initial requests per side, alternating (default 5)
 *   BENCH_SS_ROUNDS    wake-up rounds per side (default 5)
 *   BENCH_SS_CPU_PROF  a directory: the server writes a V8 CPU profile there when it stops
 *   BENCH_SS_SIDES     "ss" or "v2" to run one side only, for profiling (no ratios then)
 */
import { mkdtempSync, rmSync } from "node:fs";
import type http from "node:http";
import os from "node:os";
import path from "node:path";
import { CleanUps, envCount, printReport, runMain } from "./entry.js";
import { procCpuTime } from "./postgres.js";
import { newAgent, request } from "./send_client.js";
import { spawnOnSqlite } from "./switchboard_process.js";

const ROOMS = envCount("BENCH_SS_ROOMS", 500);
const WAITERS = envCount("BENCH_SS_WAITERS", 100);
const INITIALS = envCount("BENCH_SS_INITIALS", 5);
const ROUNDS = envCount("BENCH_SS_ROUNDS", 5);
const TARGET_INITIAL_RATIO = 0.5;
const TARGET_WAKE_P99_MS = 50;
/** How long the long-polls are given to reach the server and start waiting before the message. */
const SETTLE_MS = 1_000;
const POLL_TIMEOUT_MS = 60_000;
const SIDES = (process.env.BENCH_SS_SIDES ?? "ss,v2").split(",");
const SS_PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

const log = (msg: string) => console.error(`[bench:sliding_sync] ${msg}`);
const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const cleanups = new CleanUps(log);

/** What a client like Element X asks for in its room list. */
const SS_LIST = {
  ranges: [[0, 19]],
  timeline_limit: 1,
  required_state: [
    ["m.room.name", ""],
    ["m.room.avatar", ""],
    ["m.room.encryption", ""],
    ["m.room.canonical_alias", ""],
    ["m.room.member", "$LAZY"],
    ["m.room.member", "$ME"],
  ],
};
const V2_FILTER = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 1 }, state: { lazy_load_members: true } } }));

async function call<T>(base: string, agent: http.Agent | undefined, method: string, p: string, token?: string, body?: unknown): Promise<T> {
  const res = await request(base, agent, method, p, token, body);
  if (res.status !== 200) throw new Error(`${method} ${p.split("?")[0]}: ${res.status} ${res.body.slice(0, 300)}`);
  return JSON.parse(res.body) as T;
}

// ---- set-up ------------------------------------------------------------------

/** `ROOMS` rooms with a name and one message each, 8 at a time. */
async function makeRooms(base: string, token: string): Promise<string[]> {
  const rooms = new Array<string>(ROOMS);
  let next = 0;
  const agents = Array.from({ length: 8 }, () => newAgent());
  await Promise.all(
    agents.map(async (agent) => {
      for (let i = next++; i < ROOMS; i = next++) {
        const { room_id } = await call<{ room_id: string }>(base, agent, "POST", "/_matrix/client/v3/createRoom", token, { preset: "private_chat", name: `Room ${i}` });
        await call(base, agent, "PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(room_id)}/send/m.room.message/setup-${i}`, token, { msgtype: "m.text", body: `hello ${i}` });
        rooms[i] = room_id;
      }
    }),
  );
  for (const a of agents) a.destroy();
  return rooms;
}

// ---- requests ----------------------------------------------------------------

interface SsAnswer {
  pos: string;
  lists: Record<string, { count: number }>;
  rooms: Record<string, unknown>;
}
interface V2Answer {
  next_batch: string;
  rooms?: { join?: Record<string, unknown> };
}

const ssRequest = (base: string, agent: http.Agent, token: string, connId: string, pos?: string, timeout?: number) => {
  const qs = new URLSearchParams();
  if (pos !== undefined) qs.set("pos", pos);
  if (timeout !== undefined) qs.set("timeout", String(timeout));
  return call<SsAnswer>(base, agent, "POST", `${SS_PATH}?${qs}`, token, { conn_id: connId, lists: { all: SS_LIST } });
};

const v2Request = (base: string, agent: http.Agent, token: string, since?: string, timeout?: number) => {
  const qs = `filter=${V2_FILTER}${since ? `&since=${encodeURIComponent(since)}` : ""}${timeout !== undefined ? `&timeout=${timeout}` : ""}`;
  return call<V2Answer>(base, agent, "GET", `/_matrix/client/v3/sync?${qs}`, token);
};

async function timed<T>(work: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await work();
  return { ms: performance.now() - t0, value };
}

function pct(sorted: number[], p: number): number {
  return round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN);
}
const median = (values: number[]) => pct([...values].sort((a, b) => a - b), 50);

/** One side's waiters: each holds a position and its own connection. */
interface Waiter {
  agent: http.Agent;
  connId: string;
  pos: string;
}

/**
 * Every waiter long-polls from its position; once they have had time to start waiting, one
 * message is sent. Returns each answer's time after the send's start, and moves the positions on.
 */
async function wakeRound(
  pid: number,
  base: string,
  token: string,
  roomId: string,
  waiters: Waiter[],
  poll: (w: Waiter, timeout: number) => Promise<{ pos: string; woken: boolean }>,
  tag: string,
): Promise<{ latencies: number[]; early: number; missed: number; sendMs: number; cpuMs: number }> {
  // First up to date (the other side's messages came meanwhile), without waiting.
  await Promise.all(waiters.map(async (w) => (w.pos = (await poll(w, 0)).pos)));
  let sentAt = Number.POSITIVE_INFINITY;
  let early = 0;
  let missed = 0;
  const answers = waiters.map(async (w) => {
    const { pos, woken } = await poll(w, POLL_TIMEOUT_MS);
    const at = performance.now();
    if (at < sentAt) early++;
    if (!woken) missed++;
    w.pos = pos;
    return at;
  });
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const sender = newAgent();
  const cpu0 = procCpuTime(pid);
  sentAt = performance.now();
  await call(base, sender, "PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${tag}`, token, { msgtype: "m.text", body: tag });
  const sendMs = performance.now() - sentAt;
  sender.destroy();
  const times = await Promise.all(answers);
  return { latencies: times.map((t) => t - sentAt), early, missed, sendMs, cpuMs: (procCpuTime(pid) - cpu0) / 1000 };
}

// ---- the run -----------------------------------------------------------------

async function main(): Promise<number> {
  const problems: string[] = [];
  const warnings: string[] = [];
  const loadBefore = os.loadavg().map((n) => round(n));
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-bench-ss-"));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  let report: Record<string, unknown>;
  try {
    const prof = process.env.BENCH_SS_CPU_PROF;
    const sw = await spawnOnSqlite(dir, {}, prof ? ["--cpu-prof", `--cpu-prof-dir=${path.resolve(prof)}`] : []);
    cleanups.push(() => sw.stop());
    const base = sw.url;

    const t0 = performance.now();
    const { access_token: token } = await call<{ access_token: string }>(base, undefined, "POST", "/_matrix/client/v3/register", undefined, {
      username: "slider",
      password: "bench password, not secret",
      auth: { type: "m.login.dummy" },
    });
    const rooms = await makeRooms(base, token);
    const setupS = round((performance.now() - t0) / 1000, 1);
    log(`set up ${ROOMS} rooms in ${setupS} s`);

    // ---- initial requests, alternating, after one unmeasured of each to warm up ----
    const agent = newAgent();
    cleanups.push(async () => agent.destroy());
    const initial = { ss: [] as number[], v2: [] as number[] };
    /** The unmeasured first request of each side: nothing of the user read yet. */
    const first = { ss: Number.NaN, v2: Number.NaN };
    let ssRooms = 0;
    let ssCount = 0;
    let v2Rooms = 0;
    for (let i = -1; i < INITIALS; i++) {
      const order = i % 2 === 0 ? (["ss", "v2"] as const) : (["v2", "ss"] as const);
      for (const side of order.filter((x) => SIDES.includes(x))) {
        if (side === "ss") {
          const { ms, value } = await timed(() => ssRequest(base, agent, token, `initial-${i}`));
          ssRooms = Object.keys(value.rooms).length;
          ssCount = value.lists.all?.count ?? 0;
          if (i >= 0) initial.ss.push(ms);
          else first.ss = ms;
        } else {
          const { ms, value } = await timed(() => v2Request(base, agent, token));
          v2Rooms = Object.keys(value.rooms?.join ?? {}).length;
          if (i >= 0) initial.v2.push(ms);
          else first.v2 = ms;
        }
      }
    }
    if (SIDES.includes("ss") && ssCount !== ROOMS) problems.push(`the sliding-sync list counted ${ssCount} rooms, not ${ROOMS}`);
    if (SIDES.includes("ss") && ssRooms !== Math.min(20, ROOMS)) problems.push(`the sliding-sync response had ${ssRooms} rooms, not ${Math.min(20, ROOMS)}`);
    if (SIDES.includes("v2") && v2Rooms !== ROOMS) problems.push(`the v2 initial sync had ${v2Rooms} joined rooms, not ${ROOMS}`);
    const initialRatio = round(median(initial.ss) / median(initial.v2), 3);
    log(`initial: sliding sync ${median(initial.ss)} ms, v2 ${median(initial.v2)} ms (ratio ${initialRatio})`);

    // ---- incremental wake-up ----
    const ssWaiters: Waiter[] = [];
    const v2Waiters: Waiter[] = [];
    for (let i = 0; i < WAITERS; i++) {
      const ssAgent = newAgent();
      const v2Agent = newAgent();
      cleanups.push(async () => (ssAgent.destroy(), v2Agent.destroy()));
      if (SIDES.includes("ss")) ssWaiters.push({ agent: ssAgent, connId: `waiter-${i}`, pos: (await ssRequest(base, ssAgent, token, `waiter-${i}`)).pos });
      if (SIDES.includes("v2")) v2Waiters.push({ agent: v2Agent, connId: "", pos: (await v2Request(base, v2Agent, token)).next_batch });
    }
    // The newest room is in every list's range: the message lands in a room the connections show.
    const target = rooms[rooms.length - 1]!;
    const ssPoll = async (w: Waiter, timeout: number) => {
      const answer = await ssRequest(base, w.agent, token, w.connId, w.pos, timeout);
      return { pos: answer.pos, woken: target in answer.rooms };
    };
    const v2Poll = async (w: Waiter, timeout: number) => {
      const answer = await v2Request(base, w.agent, token, w.pos, timeout);
      return { pos: answer.next_batch, woken: target in (answer.rooms?.join ?? {}) };
    };
    const wake = { ss: [] as number[], v2: [] as number[], ssSend: [] as number[], v2Send: [] as number[], ssCpu: [] as number[], v2Cpu: [] as number[] };
    let early = 0;
    let missed = 0;
    for (let r = -1; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? (["ss", "v2"] as const) : (["v2", "ss"] as const);
      for (const side of order.filter((x) => SIDES.includes(x))) {
        const res =
          side === "ss"
            ? await wakeRound(sw.pid, base, token, target, ssWaiters, ssPoll, `wake-ss-${r}`)
            : await wakeRound(sw.pid, base, token, target, v2Waiters, v2Poll, `wake-v2-${r}`);
        if (r < 0) continue;
        early += res.early;
        missed += res.missed;
        wake[side].push(...res.latencies);
        wake[side === "ss" ? "ssSend" : "v2Send"].push(res.sendMs);
        wake[side === "ss" ? "ssCpu" : "v2Cpu"].push(res.cpuMs);
      }
    }
    if (missed > 0) problems.push(`${missed} long-polls answered without the message`);
    if (early > 0) problems.push(`${early} long-polls answered before the message was sent: the wake-up figures are off`);
    const summary = (values: number[]) => {
      const s = [...values].sort((a, b) => a - b);
      return { answers: s.length, min: pct(s, 0), p50: pct(s, 50), p90: pct(s, 90), p99: pct(s, 99), max: round(s[s.length - 1] ?? Number.NaN) };
    };
    const ssWake = summary(wake.ss);
    const v2Wake = summary(wake.v2);
    log(`wake-up: sliding sync p50 ${ssWake.p50} / p99 ${ssWake.p99} ms, v2 p50 ${v2Wake.p50} / p99 ${v2Wake.p99} ms`);
    if (initialRatio > TARGET_INITIAL_RATIO) warnings.push(`the initial sliding sync takes ${initialRatio}× v2's time, above the ${TARGET_INITIAL_RATIO} target`);
    if (!(ssWake.p99 < TARGET_WAKE_P99_MS)) warnings.push(`sliding sync wake-up p99 is ${ssWake.p99} ms, above the ${TARGET_WAKE_P99_MS} ms target`);
    const loadAfter = os.loadavg().map((n) => round(n));
    if ((loadBefore[0] ?? 0) > 1.5 || (loadAfter[0] ?? 0) > 2.5) {
      warnings.push(`1-minute load average was ${loadBefore[0]} before and ${loadAfter[0]} after: other processes shared the cores, so figures are noisy`);
    }

    report = {
      description: `one user in ${ROOMS} rooms: simplified sliding sync (one list, range 0–19, timeline limit 1) against /sync v2 (timeline limit 1, lazy-loaded members), same user, same run`,
      rooms: ROOMS,
      setup_s: setupS,
      initial: {
        requests_per_side: INITIALS,
        sliding_sync_ms: { median: median(initial.ss), each: initial.ss.map((n) => round(n, 1)), rooms_in_response: ssRooms },
        v2_ms: { median: median(initial.v2), each: initial.v2.map((n) => round(n, 1)), rooms_in_response: v2Rooms },
        ratio: initialRatio,
        first_request_ms: { sliding_sync: round(first.ss, 1), v2: round(first.v2, 1), ratio: round(first.ss / first.v2, 3) },
        target: TARGET_INITIAL_RATIO,
        meets_target: initialRatio <= TARGET_INITIAL_RATIO,
      },
      wake_up: {
        description: `${WAITERS} connections long-polling on each side, one message per round, from the send's start to each answer; ${ROUNDS} rounds per side, alternating`,
        waiters: WAITERS,
        rounds: ROUNDS,
        sliding_sync_ms: ssWake,
        v2_ms: v2Wake,
        ratio_p50: round(ssWake.p50 / v2Wake.p50, 3),
        ratio_p99: round(ssWake.p99 / v2Wake.p99, 3),
        send_ms_median: { sliding_sync_rounds: median(wake.ssSend), v2_rounds: median(wake.v2Send) },
        /** The server's CPU time from the send to the last answer: less sensitive to a busy machine than the latencies. */
        server_cpu_ms_per_round: { sliding_sync: median(wake.ssCpu), v2: median(wake.v2Cpu), ratio: round(median(wake.ssCpu) / median(wake.v2Cpu), 3) },
        target_p99: TARGET_WAKE_P99_MS,
        meets_target: ssWake.p99 < TARGET_WAKE_P99_MS,
      },
      loadavg_before: loadBefore,
      loadavg_after: loadAfter,
    };
  } catch (err) {
    problems.push(err instanceof Error ? err.message : String(err));
    report = { failed: err instanceof Error ? err.message : String(err) };
  } finally {
    await cleanups.run();
  }
  return printReport(report, warnings, problems, log);
}

runMain(main);
