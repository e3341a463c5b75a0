/**
 * `npm run bench`: Switchboard against a bare node:http server that answers
 * the same bytes, per scenario, in the same run. Prints one JSON document on
 * stdout; progress goes to stderr.
 *
 * The load generator (autocannon) runs in this process; each server runs in a
 * child process of its own. Only one server is under load at a time, so the
 * two never share a core, and the measurement alternates between them in short
 * slices (A B B A A B ...): a neighbour that slows the machine down for a few
 * seconds slows both sides alike instead of skewing the ratio.
 *
 * Environment, for quick checks and investigation:
 *   BENCH_DURATION     measured seconds per server and scenario (default 10)
 *   BENCH_SLICES       slices each side's measurement is cut into (default 5)
 *   BENCH_CONNECTIONS  concurrent connections (default 50)
 *   BENCH_WARMUP       seconds of unmeasured load before each measurement (default 2)
 *   BENCH_ONLY         comma-separated scenario names to run
 *   BENCH_LOG_LEVEL    Switchboard's log level (default "info", as in production)
 *   BENCH_CPU_PROF     a directory: write V8 CPU profiles of both server children there
 */
import autocannon, { type Result } from "autocannon";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { startChild, type Child } from "./children.js";
import { printReport, runMain } from "./entry.js";
import { routeKey, type CannedResponse } from "./protocol.js";
import { canned, normalise, parseRaw, rawRequest } from "./raw_http.js";

/** One request to measure. Adding a scenario is adding an entry to SCENARIOS. */
interface Scenario {
  name: string;
  method: "GET" | "POST";
  path: string;
  /** A JSON body (POST), given the ID of a room the benchmark's user has joined. */
  body?: (roomId: string) => string;
  /** Sends `Authorization: Bearer <token>` of the benchmark's registered user. */
  auth: boolean;
  /** Least acceptable Switchboard/baseline ratio of req/s. */
  target: number;
}

const SCENARIOS: Scenario[] = [
  { name: "versions", method: "GET", path: "/_matrix/client/versions", auth: false, target: 0.7 },
  { name: "whoami", method: "GET", path: "/_matrix/client/v3/account/whoami", auth: true, target: 0.7 },
  { name: "rtc_transports", method: "GET", path: "/_matrix/client/v1/rtc/transports", auth: true, target: 0.7 },
  // MSC4195's homeserver flow: a membership lookup, a LiveKit room made on the SFU (a stand-in
  // process here, see livekit_stand_in.ts), and a signed JWT per request.
  {
    name: "livekit_get_token",
    method: "POST",
    path: "/_matrix/client/v1/rtc/livekit/get_token",
    body: (roomId) => JSON.stringify({ url: "ws://127.0.0.1", room_id: roomId, slot_id: "m.call#ROOM", member_id: "bench" }),
    auth: true,
    target: 0.5,
  },
];

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, not ${JSON.stringify(raw)}`);
  return n;
}

const DURATION = envNumber("BENCH_DURATION", 10);
const CONNECTIONS = Math.max(1, Math.round(envNumber("BENCH_CONNECTIONS", 50)));
const SLICES = Math.max(1, Math.round(envNumber("BENCH_SLICES", 5)));
const WARMUP = envNumber("BENCH_WARMUP", 2);
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL ?? "info";
const CPU_PROF = process.env.BENCH_CPU_PROF;
const ONLY = process.env.BENCH_ONLY?.split(",").map((s) => s.trim()).filter(Boolean);

const log = (msg: string) => console.error(`[bench] ${msg}`);

// ---- load ------------------------------------------------------------------

/** Each POST scenario's body, made once the benchmark's room exists. */
const bodies = new Map<string, string>();

function load(url: string, s: Scenario, headers: Record<string, string>, seconds: number): Promise<Result> {
  const body = bodies.get(s.name);
  return new Promise((resolve, reject) => {
    autocannon(
      { url: url + s.path, method: s.method, headers, body, connections: CONNECTIONS, duration: seconds, pipelining: 1 },
      (err, result) => (err ? reject(err) : resolve(result)),
    );
  });
}

/** One slice of load against one server, with the CPU both sides used meanwhile. */
interface Slice {
  result: Result;
  wallUs: number;
  serverCpuUs: number;
  ownCpuUs: number;
}

const cpuOfThisProcess = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

async function slice(server: Child, s: Scenario, headers: Record<string, string>, seconds: number): Promise<Slice> {
  const serverCpu0 = await server.cpuTime();
  const ownCpu0 = cpuOfThisProcess();
  const t0 = performance.now();
  const result = await load(server.url, s, headers, seconds);
  const wallUs = (performance.now() - t0) * 1000;
  const ownCpuUs = cpuOfThisProcess() - ownCpu0;
  const serverCpuUs = (await server.cpuTime()) - serverCpu0;
  return { result, wallUs, serverCpuUs, ownCpuUs };
}

interface Measurement {
  /** Requests completed over the measured time, all slices together. */
  req_per_s: number;
  /** The median of the slices' p99 latencies. */
  p99_ms: number;
  latency_mean_ms: number;
  requests: number;
  non_2xx: number;
  errors: number;
  timeouts: number;
  status_codes: Record<string, number>;
  /** CPU the server process used while measured; 100 is one whole core. Below ~90: it was not the bottleneck. */
  server_cpu_pct: number;
  /** Server CPU time per completed request: robust to other load on the machine. */
  server_cpu_us_per_request: number;
  /** CPU of the load generator (this process); near 100 means it may have capped the figure. */
  generator_cpu_pct: number;
  /** Each slice's req/s, in the order measured. */
  slices_req_per_s: number[];
}

const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function summarise(slices: Slice[]): Measurement {
  const sum = (f: (s: Slice) => number) => slices.reduce((acc, s) => acc + f(s), 0);
  const requests = sum((s) => s.result.requests.total);
  const wallUs = sum((s) => s.wallUs);
  const serverCpu = sum((s) => s.serverCpuUs);
  const statusCodes: Record<string, number> = {};
  for (const s of slices) {
    for (const [code, v] of Object.entries(s.result.statusCodeStats)) statusCodes[code] = (statusCodes[code] ?? 0) + v.count;
  }
  return {
    req_per_s: round((requests / wallUs) * 1e6),
    p99_ms: round(median(slices.map((s) => s.result.latency.p99))),
    latency_mean_ms: requests > 0 ? round(sum((s) => s.result.latency.average * s.result.requests.total) / requests) : 0,
    requests,
    non_2xx: sum((s) => s.result.non2xx),
    errors: sum((s) => s.result.errors),
    timeouts: sum((s) => s.result.timeouts),
    status_codes: statusCodes,
    server_cpu_pct: round((serverCpu / wallUs) * 100, 1),
    server_cpu_us_per_request: requests > 0 ? round(serverCpu / requests) : 0,
    generator_cpu_pct: round((sum((s) => s.ownCpuUs) / wallUs) * 100, 1),
    slices_req_per_s: slices.map((s) => round((s.result.requests.total / s.wallUs) * 1e6, 0)),
  };
}

/** Both servers, alternating slice by slice: A B, B A, A B, ... so drift in the machine's speed hits both alike. */
async function measurePair(
  s: Scenario,
  sides: { label: string; server: Child }[],
  headers: Record<string, string>,
): Promise<Measurement[]> {
  if (WARMUP > 0) {
    for (const { label, server } of sides) {
      log(`${label} ${s.name}: warming up for ${WARMUP}s`);
      await load(server.url, s, headers, WARMUP);
    }
  }
  const seconds = DURATION / SLICES;
  log(`${s.name}: ${SLICES} alternating slices of ${round(seconds)}s per server, ${CONNECTIONS} connections`);
  const slices: Slice[][] = sides.map(() => []);
  for (let i = 0; i < SLICES; i++) {
    const order = i % 2 === 0 ? [0, 1] : [1, 0];
    for (const k of order) slices[k]!.push(await slice(sides[k]!.server, s, headers, seconds));
  }
  return sides.map(({ label }, k) => {
    const m = summarise(slices[k]!);
    log(
      `${label} ${s.name}: ${m.req_per_s} req/s, p99 ${m.p99_ms} ms, non-2xx ${m.non_2xx}, errors ${m.errors}, ` +
        `server CPU ${m.server_cpu_pct}% (${m.server_cpu_us_per_request} µs/req), generator CPU ${m.generator_cpu_pct}%`,
    );
    return m;
  });
}

const failed = (m: Measurement) => m.non_2xx > 0 || m.errors > 0 || m.timeouts > 0;

// ---- the run ---------------------------------------------------------------

async function register(url: string): Promise<string> {
  const res = await fetch(`${url}/_matrix/client/v3/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: "bench", password: "bench password, not secret", auth: { type: "m.login.dummy" } }),
  });
  const body = (await res.json()) as { access_token?: string };
  if (res.status !== 200 || !body.access_token) throw new Error(`register: ${res.status} ${JSON.stringify(body)}`);
  return body.access_token;
}

async function createRoom(url: string, token: string): Promise<string> {
  const res = await fetch(`${url}/_matrix/client/v3/createRoom`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: "{}",
  });
  const body = (await res.json()) as { room_id?: string };
  if (res.status !== 200 || !body.room_id) throw new Error(`createRoom: ${res.status} ${JSON.stringify(body)}`);
  return body.room_id;
}

async function main(): Promise<number> {
  const loadBefore = os.loadavg().map((n) => round(n));
  const scenarios = ONLY ? SCENARIOS.filter((s) => ONLY.includes(s.name)) : SCENARIOS;
  if (scenarios.length === 0) throw new Error(`BENCH_ONLY=${process.env.BENCH_ONLY} matches no scenario`);
  const problems: string[] = [];

  // Switchboard first: it also provides the bytes the baseline will answer.
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const profArgs = (name: string) =>
    CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${path.resolve(CPU_PROF)}`, `--cpu-prof-name=${name}-${stamp}.cpuprofile`] : [];
  // The LiveKit SFU's room service, played by a stand-in child that answers CreateRoom (get_token).
  const sfu = await startChild("livekit_stand_in.js", []);
  log(`starting Switchboard (log level ${LOG_LEVEL}, to /dev/null)`);
  const livekit = { livekit: { url: sfu.url, api_key: "bench", api_secret: "bench secret, not secret at all" } };
  const sw = await startChild("serve.js", profArgs("switchboard"), undefined, {
    BENCH_SERVE_CONFIG: JSON.stringify({ ...(JSON.parse(process.env.BENCH_SERVE_CONFIG ?? "{}") as object), ...livekit }),
  });
  let base: Child | undefined;
  const swResults = new Map<string, Measurement>();
  const baseResults = new Map<string, Measurement>();
  const identical = new Map<string, boolean>();
  try {
    /** Per scenario: the request headers, and Switchboard's response, normalised, for the comparison. */
    const prepared = new Map<string, { headers: Record<string, string>; expected: string }>();
    const responses: CannedResponse[] = [];
    let keepAliveTimeoutMs = 5_000;
    const token = await register(sw.url);
    const roomId = await createRoom(sw.url, token);
    for (const s of scenarios) {
      const headers: Record<string, string> = s.auth ? { authorization: `Bearer ${token}` } : {};
      if (s.body) {
        // The stand-in's URL is the SFU's: get_token checks `url` against `livekit.url`.
        bodies.set(s.name, s.body(roomId).replace("ws://127.0.0.1", sfu.url));
        headers["content-type"] = "application/json";
      }
      const raw = await rawRequest(sw.url, s.method, s.path, headers, bodies.get(s.name));
      const parsed = parseRaw(raw);
      if (parsed.status < 200 || parsed.status > 299) {
        throw new Error(`${s.name}: Switchboard answered ${parsed.status}: ${parsed.body.toString()}`);
      }
      const keepAlive = parsed.headers.find(([n]) => n.toLowerCase() === "keep-alive")?.[1];
      const timeout = keepAlive && /timeout=(\d+)/.exec(keepAlive);
      if (timeout) keepAliveTimeoutMs = Number(timeout[1]) * 1000;
      prepared.set(s.name, { headers, expected: normalise(raw) });
      responses.push(canned(routeKey(s.method, s.path, headers.authorization), parsed));
    }

    // The baseline, primed with Switchboard's bytes; the two are then measured side by side.
    log("starting the node:http baseline");
    base = await startChild("baseline.js", profArgs("baseline"), { type: "configure", keepAliveTimeoutMs, responses });
    for (const s of scenarios) {
      const { headers, expected } = prepared.get(s.name)!;
      const same = normalise(await rawRequest(base.url, s.method, s.path, headers, bodies.get(s.name))) === expected;
      identical.set(s.name, same);
      if (!same) problems.push(`${s.name}: the baseline's response differs from Switchboard's`);
      const sides = [
        { label: "switchboard", server: sw },
        { label: "baseline", server: base },
      ];
      const [switchboard, baseline] = await measurePair(s, sides, headers);
      swResults.set(s.name, switchboard!);
      baseResults.set(s.name, baseline!);
    }
  } finally {
    await Promise.all([sw.stop(), base?.stop(), sfu.stop()]);
  }
  if (CPU_PROF) log(`CPU profiles written to ${path.resolve(CPU_PROF)}`);

  const results = scenarios.map((s) => {
    const switchboard = swResults.get(s.name)!;
    const baseline = baseResults.get(s.name)!;
    if (failed(switchboard)) problems.push(`${s.name}: Switchboard had errors, timeouts or non-2xx responses`);
    if (failed(baseline)) problems.push(`${s.name}: the baseline had errors, timeouts or non-2xx responses`);
    const ratio = baseline.req_per_s > 0 ? round(switchboard.req_per_s / baseline.req_per_s, 3) : 0;
    const cpuRatio =
      switchboard.server_cpu_us_per_request > 0
        ? round(baseline.server_cpu_us_per_request / switchboard.server_cpu_us_per_request, 3)
        : 0;
    return {
      name: s.name,
      method: s.method,
      path: s.path,
      authenticated: s.auth,
      same_bytes_as_baseline: identical.get(s.name) ?? false,
      switchboard,
      baseline,
      ratio_req_per_s: ratio,
      target: s.target,
      meets_target: ratio >= s.target,
      /** Baseline CPU per request over Switchboard's: the same comparison, less sensitive to a busy machine. */
      ratio_cpu_efficiency: cpuRatio,
      /**
       * Switchboard's p99 over the baseline's (above 1: slower). Each p99 is the median of the
       * slices' p99s, which autocannon gives in whole milliseconds: at 1–3 ms, a coarse figure.
       */
      ratio_p99: baseline.p99_ms > 0 ? round(switchboard.p99_ms / baseline.p99_ms, 3) : null,
    };
  });

  // Not failures, but reasons to read the figures with care.
  const warnings: string[] = [];
  const loadAfter = os.loadavg().map((n) => round(n));
  // The benchmark itself keeps about two processes busy; more than that means company.
  if ((loadBefore[0] ?? 0) > 1 || (loadAfter[0] ?? 0) > 2.5) {
    warnings.push(
      `1-minute load average was ${loadBefore[0]} before and ${loadAfter[0]} after: other processes shared the cores, so figures are noisy`,
    );
  }
  for (const r of results) {
    for (const [side, m] of [["Switchboard", r.switchboard], ["the baseline", r.baseline]] as const) {
      // One side or the other should be flat out; when neither is, something else had the CPU.
      if (m.server_cpu_pct < 90 && m.generator_cpu_pct < 90) {
        warnings.push(
          `${r.name}: neither ${side} (${m.server_cpu_pct}% CPU) nor the load generator (${m.generator_cpu_pct}%) was saturated: other processes probably took CPU time, so this figure is low`,
        );
      }
    }
    if (r.baseline.generator_cpu_pct >= 90) {
      warnings.push(
        `${r.name}: the load generator used ${r.baseline.generator_cpu_pct}% CPU against the baseline, which may have capped the baseline's req/s and so flattered the ratio`,
      );
    }
  }

  const autocannonVersion = (createRequire(import.meta.url)("autocannon/package.json") as { version: string }).version;
  const report = {
    benchmark: "switchboard vs bare node:http, same response bytes",
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    cpus: os.availableParallelism(),
    cpu_model: os.cpus()[0]?.model ?? "unknown",
    duration_s: DURATION,
    connections: CONNECTIONS,
    warmup_s: WARMUP,
    pipelining: 1,
    slices: SLICES,
    load_generator: `autocannon ${autocannonVersion}, in the parent process; each server in its own child process, loaded one at a time in alternating slices`,
    logging: {
      level: LOG_LEVEL,
      production_default: LOG_LEVEL === "info",
      destination: "/dev/null, through the same logger and destination production uses for stdout (synchronous, one write per event-loop turn)",
      note: "Switchboard writes one pino JSON line per request at info, as in production",
    },
    cpu_profile_dir: CPU_PROF ? path.resolve(CPU_PROF) : undefined,
    /** 1/5/15-minute load averages; well above 1 before the run means other work shared the cores. */
    loadavg_before: loadBefore,
    loadavg_after: loadAfter,
    scenarios: results,
    ok: problems.length === 0,
    problems,
    warnings,
  };
  return printReport(report, warnings, problems, log);
}

runMain(main);
