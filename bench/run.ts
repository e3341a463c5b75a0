/**
 * `npm run bench`: Switchboard against a bare node:http server that answers
 * the same bytes, per scenario, in the same run. Prints one JSON document on
 * stdout; progress goes to stderr.
 *
 * The load generator (autocannon) runs in this process; each server runs in a
 * child process of its own, one at a time, so the two never share a core.
 *
 * Environment, for quick checks and investigation:
 *   BENCH_DURATION     seconds per measurement (default 10)
 *   BENCH_CONNECTIONS  concurrent connections (default 50)
 *   BENCH_WARMUP       seconds of unmeasured load before each measurement (default 2)
 *   BENCH_ONLY         comma-separated scenario names to run
 *   BENCH_LOG_LEVEL    Switchboard's log level (default "info", as in production)
 *   BENCH_CPU_PROF     a directory: write V8 CPU profiles of both server children there
 */
import autocannon, { type Result } from "autocannon";
import { fork, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  isMessage,
  routeKey,
  type CannedResponse,
  type ReadyMessage,
  type ToChild,
  type UsageMessage,
} from "./protocol.js";

/** One request to measure. Adding a scenario is adding an entry to SCENARIOS. */
interface Scenario {
  name: string;
  method: "GET";
  path: string;
  /** Sends `Authorization: Bearer <token>` of the benchmark's registered user. */
  auth: boolean;
  /** Least acceptable Switchboard/baseline ratio of req/s. */
  target: number;
}

const SCENARIOS: Scenario[] = [
  { name: "versions", method: "GET", path: "/_matrix/client/versions", auth: false, target: 0.7 },
  { name: "whoami", method: "GET", path: "/_matrix/client/v3/account/whoami", auth: true, target: 0.7 },
  { name: "rtc_transports", method: "GET", path: "/_matrix/client/v1/rtc/transports", auth: true, target: 0.7 },
];

const here = path.dirname(fileURLToPath(import.meta.url));

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, not ${JSON.stringify(raw)}`);
  return n;
}

const DURATION = envNumber("BENCH_DURATION", 10);
const CONNECTIONS = Math.max(1, Math.round(envNumber("BENCH_CONNECTIONS", 50)));
const WARMUP = envNumber("BENCH_WARMUP", 2);
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL ?? "info";
const CPU_PROF = process.env.BENCH_CPU_PROF;
const ONLY = process.env.BENCH_ONLY?.split(",").map((s) => s.trim()).filter(Boolean);

const log = (msg: string) => console.error(`[bench] ${msg}`);

// ---- child servers -------------------------------------------------------

interface Child {
  url: string;
  /** CPU time (user + system) the child has used so far, in microseconds. */
  cpuTime(): Promise<number>;
  stop(): Promise<void>;
}

async function startChild(script: string, execArgv: string[], configure?: ToChild): Promise<Child> {
  // The child's stdout goes to our stderr: stdout carries only the JSON result.
  const child: ChildProcess = fork(path.join(here, script), [], { execArgv, stdio: ["ignore", 2, 2, "ipc"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const usageWaiters: ((us: number) => void)[] = [];
  child.on("message", (m: unknown) => {
    if (isMessage<UsageMessage>(m, "usage")) usageWaiters.shift()?.(m.user + m.system);
  });
  // A child that died cannot answer: its CPU figures become NaN (null in the JSON) rather than a hang.
  child.once("exit", () => {
    for (const w of usageWaiters.splice(0)) w(Number.NaN);
  });
  const url = await new Promise<string>((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`${script} exited (${code}) before it was ready`));
    child.once("exit", onExit);
    child.once("error", reject);
    child.on("message", (m: unknown) => {
      if (isMessage<ReadyMessage>(m, "ready")) {
        child.off("exit", onExit);
        resolve(m.url);
      }
    });
    if (configure) child.send(configure);
  });
  return {
    url,
    cpuTime() {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(Number.NaN);
      return new Promise((resolve) => {
        usageWaiters.push(resolve);
        child.send({ type: "usage" } satisfies ToChild);
      });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.send({ type: "stop" } satisfies ToChild);
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

// ---- raw HTTP, to capture and compare exact bytes -------------------------

/** One HTTP/1.1 keep-alive request over a fresh socket; resolves to the whole response as received. */
function rawRequest(base: string, method: string, target: string, headers: Record<string, string>): Promise<Buffer> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname);
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (err: Error | null, value?: Buffer) => {
      if (done) return;
      done = true;
      socket.destroy();
      if (err) reject(err);
      else resolve(value!);
    };
    socket.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = buf.subarray(0, end).toString("latin1");
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      if (!length) return finish(new Error(`no content-length in response to ${method} ${target}:\n${head}`));
      const total = end + 4 + Number(length[1]);
      if (buf.length >= total) finish(null, buf.subarray(0, total));
    });
    socket.on("error", (err) => finish(err));
    socket.on("close", () => finish(new Error(`connection closed before the response to ${method} ${target} was complete`)));
    const lines = [`${method} ${target} HTTP/1.1`, `host: ${url.host}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
    socket.write(`${lines.join("\r\n")}\r\n\r\n`);
  });
}

interface RawResponse {
  status: number;
  statusMessage: string;
  /** [name, value] in wire order and case. */
  headers: [string, string][];
  body: Buffer;
}

function parseRaw(raw: Buffer): RawResponse {
  const end = raw.indexOf("\r\n\r\n");
  const [statusLine, ...headerLines] = raw.subarray(0, end).toString("latin1").split("\r\n");
  const m = /^HTTP\/1\.1 (\d{3}) ?(.*)$/.exec(statusLine ?? "");
  if (!m) throw new Error(`bad status line: ${statusLine}`);
  const headers = headerLines.map((line): [string, string] => {
    const i = line.indexOf(":");
    return [line.slice(0, i), line.slice(i + 1).trim()];
  });
  return { status: Number(m[1]), statusMessage: m[2] ?? "", headers, body: raw.subarray(end + 4) };
}

/** The Date header differs from second to second; everything else must be identical. */
function normalise(raw: Buffer): string {
  return raw.toString("latin1").replace(/\r\ndate: [^\r]*/i, "\r\ndate: *");
}

/** Headers node:http writes by itself; the baseline lets it, rather than replaying stale values. */
const NODE_OWN_HEADERS = new Set(["date", "connection", "keep-alive", "transfer-encoding"]);

function canned(key: string, r: RawResponse): CannedResponse {
  return {
    key,
    status: r.status,
    statusMessage: r.statusMessage,
    headers: r.headers.filter(([name]) => !NODE_OWN_HEADERS.has(name.toLowerCase())).flat(),
    bodyBase64: r.body.toString("base64"),
  };
}

// ---- load ------------------------------------------------------------------

function load(url: string, s: Scenario, headers: Record<string, string>, seconds: number): Promise<Result> {
  return new Promise((resolve, reject) => {
    autocannon(
      { url: url + s.path, method: s.method, headers, connections: CONNECTIONS, duration: seconds, pipelining: 1 },
      (err, result) => (err ? reject(err) : resolve(result)),
    );
  });
}

interface Measurement {
  req_per_s: number;
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
}

const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;

const cpuOfThisProcess = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

async function measure(label: string, server: Child, s: Scenario, headers: Record<string, string>): Promise<Measurement> {
  if (WARMUP > 0) {
    log(`${label} ${s.name}: warming up for ${WARMUP}s`);
    await load(server.url, s, headers, WARMUP);
  }
  log(`${label} ${s.name}: ${CONNECTIONS} connections for ${DURATION}s`);
  const serverCpu0 = await server.cpuTime();
  const ownCpu0 = cpuOfThisProcess();
  const t0 = performance.now();
  const r = await load(server.url, s, headers, DURATION);
  const wallUs = (performance.now() - t0) * 1000;
  const ownCpu = cpuOfThisProcess() - ownCpu0;
  const serverCpu = (await server.cpuTime()) - serverCpu0;
  const m: Measurement = {
    req_per_s: round(r.requests.average),
    p99_ms: round(r.latency.p99),
    latency_mean_ms: round(r.latency.average),
    requests: r.requests.total,
    non_2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    status_codes: Object.fromEntries(Object.entries(r.statusCodeStats).map(([code, v]) => [code, v.count])),
    server_cpu_pct: round((serverCpu / wallUs) * 100, 1),
    server_cpu_us_per_request: r.requests.total > 0 ? round(serverCpu / r.requests.total) : 0,
    generator_cpu_pct: round((ownCpu / wallUs) * 100, 1),
  };
  log(
    `${label} ${s.name}: ${m.req_per_s} req/s, p99 ${m.p99_ms} ms, non-2xx ${m.non_2xx}, errors ${m.errors}, ` +
      `server CPU ${m.server_cpu_pct}% (${m.server_cpu_us_per_request} µs/req), generator CPU ${m.generator_cpu_pct}%`,
  );
  return m;
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

async function main(): Promise<number> {
  const loadBefore = os.loadavg().map((n) => round(n));
  const scenarios = ONLY ? SCENARIOS.filter((s) => ONLY.includes(s.name)) : SCENARIOS;
  if (scenarios.length === 0) throw new Error(`BENCH_ONLY=${process.env.BENCH_ONLY} matches no scenario`);
  const problems: string[] = [];

  // Switchboard first: it also provides the bytes the baseline will answer.
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const profArgs = (name: string) =>
    CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${path.resolve(CPU_PROF)}`, `--cpu-prof-name=${name}-${stamp}.cpuprofile`] : [];
  log(`starting Switchboard (log level ${LOG_LEVEL}, to /dev/null)`);
  const sw = await startChild("serve.js", profArgs("switchboard"));
  const swResults = new Map<string, Measurement>();
  /** Per scenario: the request headers, and Switchboard's response, normalised, for the comparison. */
  const prepared = new Map<string, { headers: Record<string, string>; expected: string }>();
  const responses: CannedResponse[] = [];
  let keepAliveTimeoutMs = 5_000;
  try {
    const token = await register(sw.url);
    for (const s of scenarios) {
      const headers: Record<string, string> = s.auth ? { authorization: `Bearer ${token}` } : {};
      const raw = await rawRequest(sw.url, s.method, s.path, headers);
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
    for (const s of scenarios) swResults.set(s.name, await measure("switchboard", sw, s, prepared.get(s.name)!.headers));
  } finally {
    await sw.stop();
  }

  log("starting the node:http baseline");
  const base = await startChild("baseline.js", profArgs("baseline"), { type: "configure", keepAliveTimeoutMs, responses });
  const baseResults = new Map<string, Measurement>();
  const identical = new Map<string, boolean>();
  try {
    for (const s of scenarios) {
      const { headers, expected } = prepared.get(s.name)!;
      const same = normalise(await rawRequest(base.url, s.method, s.path, headers)) === expected;
      identical.set(s.name, same);
      if (!same) problems.push(`${s.name}: the baseline's response differs from Switchboard's`);
      baseResults.set(s.name, await measure("baseline", base, s, headers));
    }
  } finally {
    await base.stop();
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
    load_generator: `autocannon ${autocannonVersion}, in the parent process; each server in its own child process, one at a time`,
    logging: {
      level: LOG_LEVEL,
      production_default: LOG_LEVEL === "info",
      destination: "/dev/null, through the same logger and asynchronous pino destination production uses for stdout",
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
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  for (const w of warnings) log(`warning: ${w}`);
  for (const p of problems) log(`problem: ${p}`);
  return problems.length === 0 ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  },
);
