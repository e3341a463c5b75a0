/**
 * Footprint benchmark (the "lean and fast" issue): what a new user gets from `npm start` on SQLite,
 * against a bare node:http server measured in the same run.
 *   - start-up: from spawning the process to its first `/versions` answer;
 *   - idle RSS 3 s after that answer;
 *   - RSS after BENCH_FOOTPRINT_SENDS sends into one room (10 clients), and its growth over idle;
 *   - RSS once settled, BENCH_FOOTPRINT_SETTLE_MS after the sends: V8 gives back what a burst of
 *     work left on the heap only after some seconds without it (its memory reducer), so growth
 *     that is still there then is growth that stays.
 * The bare server is started the same way and answers the same number of PUTs with a canned body.
 * A second baseline, the library floor (footprint_floor.ts), loads the libraries Switchboard loads
 * and uses each once: the part of Switchboard's figure that its own code and data account for is
 * what it is above that floor.
 * Switchboard runs with the node flags of `npm start` (read from package.json), so the figure is
 * the one an operator sees.
 *
 * Environment: BENCH_FOOTPRINT_SENDS (default 6000), BENCH_FOOTPRINT_IDLE_MS (default 3000),
 * BENCH_FOOTPRINT_SETTLE_MS (default 20000).
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { envCount, printReport, runMain } from "./entry.js";
import { closeClients, newAgent, registerClients, roomForAll, sendBatch } from "./send_client.js";
import { spawnOnSqlite } from "./switchboard_process.js";

const SENDS = envCount("BENCH_FOOTPRINT_SENDS", 6000);
const IDLE_MS = envCount("BENCH_FOOTPRINT_IDLE_MS", 3000);
const SETTLE_MS = envCount("BENCH_FOOTPRINT_SETTLE_MS", 20_000);
const CLIENTS = 10;
const here = path.dirname(fileURLToPath(import.meta.url));
const log = (msg: string) => console.error(`[bench:footprint] ${msg}`);
const mib = (kib: number) => Math.round((kib / 1024) * 10) / 10;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resident set size in KiB, from /proc (the benchmark runs on Linux, as CI does). */
function rssKiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"));
  if (!line) throw new Error(`/proc/${pid}/status has no VmRSS line`);
  return Number(line.replace(/\D+/g, ""));
}

/** The node flags `npm start` passes, from package.json's start script (`node FLAGS dist/src/main.js`). */
function startFlags(): string[] {
  const pkg = JSON.parse(readFileSync(path.join(here, "..", "..", "package.json"), "utf8")) as { scripts: Record<string, string> };
  const words = pkg.scripts.start!.split(/\s+/);
  return words.slice(words.indexOf("node") + 1, words.indexOf("dist/src/main.js"));
}

async function firstAnswer(url: string, t0: number): Promise<number> {
  for (;;) {
    try {
      const res = await fetch(`${url}/_matrix/client/versions`);
      if (res.ok) return performance.now() - t0;
    } catch {
      // Not listening yet.
    }
    await sleep(20);
  }
}

const BARE = `
const http = require("node:http");
const reply = Buffer.from('{"event_id":"$0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"}');
const s = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => { res.writeHead(200, { "content-type": "application/json", "content-length": reply.length }); res.end(reply); });
});
s.listen(0, "127.0.0.1", () => console.log(s.address().port));
process.on("SIGTERM", () => s.close(() => process.exit(0)));
`;

interface Figures {
  startup_ms: number;
  idle_rss_mib: number;
  rss_after_sends_mib: number;
  growth_mib: number;
  rss_settled_mib: number;
  growth_settled_mib: number;
}

/** The figures from RSS readings: idle, just after the sends, and once settled after them. */
async function figures(startup: number, idle: number, after: number, pid: number): Promise<Figures> {
  await sleep(SETTLE_MS);
  const settled = rssKiB(pid);
  return {
    startup_ms: Math.round(startup),
    idle_rss_mib: mib(idle),
    rss_after_sends_mib: mib(after),
    growth_mib: mib(after - idle),
    rss_settled_mib: mib(settled),
    growth_settled_mib: mib(settled - idle),
  };
}

/** A server that prints its port on stdout: spawned, left idle, then sent to. */
async function measureChild(args: string[]): Promise<Figures> {
  const t0 = performance.now();
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
  try {
    const port = await new Promise<string>((resolve, reject) => {
      child.stdout.setEncoding("utf8");
      child.stdout.once("data", (d: string) => resolve(d.trim()));
      child.once("exit", () => reject(new Error(`${args.join(" ")} exited`)));
    });
    const url = `http://127.0.0.1:${port}`;
    const startup = await firstAnswer(url, t0);
    await sleep(IDLE_MS);
    const idle = rssKiB(child.pid!);
    const clients = Array.from({ length: CLIENTS }, () => ({ token: "x", agent: newAgent() }));
    await sendBatch(url, "!bare:localhost", clients, SENDS, "b", 600_000);
    closeClients(clients);
    return await figures(startup, idle, rssKiB(child.pid!), child.pid!);
  } finally {
    child.kill("SIGTERM");
  }
}

/** The libraries Switchboard loads, each used once (footprint_floor.ts), with `npm start`'s flags. */
async function measureFloor(flags: string[]): Promise<Figures> {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-floor-"));
  try {
    return await measureChild([...flags, path.join(here, "footprint_floor.js"), dir]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function measureSwitchboard(flags: string[]): Promise<Figures> {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-footprint-"));
  const t0 = performance.now();
  const server = await spawnOnSqlite(dir, {}, flags);
  try {
    const startup = await firstAnswer(server.url, t0);
    await sleep(IDLE_MS);
    const idle = rssKiB(server.pid);
    const clients = await registerClients(server.url, "footprint", CLIENTS);
    const room = await roomForAll(server.url, clients);
    const batch = await sendBatch(server.url, room, clients, SENDS, "f", 600_000);
    closeClients(clients);
    const failed = Object.values(batch.failures).reduce((a, b) => a + b, 0);
    if (failed > 0) throw new Error(`${failed} of ${batch.messages} sends failed: ${JSON.stringify(batch.failures)}`);
    return await figures(startup, idle, rssKiB(server.pid), server.pid);
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<number> {
  const flags = startFlags();
  log(`bare node:http, then Switchboard (node ${flags.join(" ")}), ${SENDS} sends each`);
  const bare = await measureChild(["-e", BARE]);
  const floor = await measureFloor(flags);
  const switchboard = await measureSwitchboard(flags);
  const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;
  const report = {
    sends: SENDS,
    node_flags: flags,
    baseline_node_http: bare,
    baseline_library_floor: {
      what: "Fastify with pino, better-sqlite3 in WAL mode, yaml and Ajv, each used once as Switchboard uses it at start, one PUT route storing each body (bench/footprint_floor.ts)",
      ...floor,
    },
    switchboard_sqlite: switchboard,
    ratios: {
      idle_rss: ratio(switchboard.idle_rss_mib, bare.idle_rss_mib),
      idle_rss_over_library_floor: ratio(switchboard.idle_rss_mib, floor.idle_rss_mib),
      library_floor_idle_rss: ratio(floor.idle_rss_mib, bare.idle_rss_mib),
      startup: ratio(switchboard.startup_ms, bare.startup_ms),
    },
    above_library_floor_mib: {
      idle: Math.round((switchboard.idle_rss_mib - floor.idle_rss_mib) * 10) / 10,
      growth: Math.round((switchboard.growth_mib - floor.growth_mib) * 10) / 10,
      growth_settled: Math.round((switchboard.growth_settled_mib - floor.growth_settled_mib) * 10) / 10,
    },
    targets: { idle_rss_mib: 60, growth_mib: 15 },
  };
  const warnings: string[] = [];
  if (switchboard.idle_rss_mib >= 60) {
    warnings.push(`idle RSS ${switchboard.idle_rss_mib} MiB is not under the 60 MiB target (the libraries alone idle at ${floor.idle_rss_mib} MiB)`);
  }
  if (switchboard.growth_mib >= 15) {
    warnings.push(
      `RSS grew ${switchboard.growth_mib} MiB over ${SENDS} sends (target < 15); ${SETTLE_MS / 1000} s later, ${switchboard.growth_settled_mib} MiB`,
    );
  }
  return printReport(report, warnings, [], log);
}

runMain(main);
