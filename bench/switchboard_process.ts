/**
 * A real `switchboard` process for the benchmarks that need several (workers, fanout): started
 * from the built CLI with its log (one JSON line per request, as in production) going to a file,
 * which costs the server what a pipe would without a reader here.
 */
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { freePort } from "../test/helpers/ports.js";

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "src", "main.js");
const START_LIMIT_MS = 60_000;
/** A process that ignores SIGTERM this long is killed, with its whole process group. */
const STOP_LIMIT_MS = 20_000;

/** One "Switchboard is running" log line. */
export interface Running {
  pid: number;
  listening: string[];
}

export interface SwitchboardProcess {
  /** The process started (the parent, with `worker_processes` above 1). */
  pid: number;
  /** The serving processes, from their log lines. */
  running: Running[];
  /** The first listener's URL, without a trailing slash. */
  url: string;
  logFile: string;
  /** SIGTERM, then waits for the exit (SIGKILL to the group after 20 s). */
  stop(): Promise<void>;
}

/**
 * `node dist/src/main.js ARGS` in `dir`, logging to `dir/logName`; resolves once `serving`
 * processes say they run. A process that exits first, or is not serving within 60 s, fails
 * with its log's tail, and is stopped.
 */
export async function spawnSwitchboard(args: string[], dir: string, logName: string, serving: number, execArgv: string[] = []): Promise<SwitchboardProcess> {
  const logFile = path.join(dir, logName);
  const out = openSync(logFile, "a");
  // Its own process group, so that a parent that hangs can be killed with its workers.
  const child = spawn(process.execPath, [...execArgv, MAIN, ...args], { cwd: dir, stdio: ["ignore", out, "inherit"], detached: true });
  closeSync(out);
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once("exit", () => ((exited = true), resolve())));
  const stop = async () => {
    if (exited) return;
    child.kill("SIGTERM");
    const killer = setTimeout(() => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // Gone already.
      }
    }, STOP_LIMIT_MS);
    await exit;
    clearTimeout(killer);
  };
  const label = `switchboard ${args.join(" ")}`;
  try {
    for (const t0 = Date.now(); ; await new Promise((r) => setTimeout(r, 100))) {
      if (exited) throw new Error(`${label} exited before it served; its log: ${readFileSync(logFile, "utf8").slice(-500)}`);
      if (Date.now() - t0 > START_LIMIT_MS) throw new Error(`${label}: not ${serving} process(es) serving within 60 s`);
      const running = readFileSync(logFile, "utf8")
        .split("\n")
        .filter((line) => line.includes('"Switchboard is running"'))
        .map((line) => JSON.parse(line) as Running);
      if (running.length >= serving) return { pid: child.pid!, running, url: running[0]!.listening[0]!.replace(/\/$/, ""), logFile, stop };
    }
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Rate limits out of the way: the benchmarks measure the server, not its limits. */
export const UNLIMITED = { per_second: 1_000_000, burst_count: 1_000_000 };

/**
 * One process on a SQLite file in `dir`, with open registration, no rate limits on messages,
 * registration and login, and `overrides` on top; logs at info to `dir/log.jsonl`. `execArgv` goes
 * to node (e.g. `--cpu-prof`).
 */
export async function spawnOnSqlite(dir: string, overrides: Record<string, unknown>, execArgv: string[] = []): Promise<SwitchboardProcess> {
  const port = await freePort();
  const config = {
    server_name: "localhost",
    public_baseurl: `http://localhost:${port}/`,
    listeners: [{ port, bind_addresses: ["127.0.0.1"] }],
    database: { name: "sqlite3", args: { database: path.join(dir, "homeserver.db") } },
    signing_key_path: path.join(dir, "signing.key"),
    enable_registration: true,
    enable_registration_without_verification: true,
    rc_message: UNLIMITED,
    rc_registration: UNLIMITED,
    rc_login: { address: UNLIMITED, account: UNLIMITED, failed_attempts: UNLIMITED },
    log_level: "info",
    ...overrides,
  };
  const file = path.join(dir, "switchboard.yaml");
  writeFileSync(file, stringify(config));
  return spawnSwitchboard(["--config", file], dir, "log.jsonl", 1, execArgv);
}
