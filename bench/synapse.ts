/**
 * Synapse for bench/sends.ts: ../shared/tools/synapse.sh installs it (from the Python package
 * index, into a cached virtualenv) and starts it on a free loopback port, on a PostgreSQL database
 * of its own, with open registration and rate limits out of the way. One process, no workers,
 * logging at its default level (INFO) to a file in its temporary folder.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { procCpuTime, runTool } from "./postgres.js";
import { freePort } from "../test/helpers/ports.js";

/** First start: the install takes about 30 s on a good line; pip gives up slowly without one. */
const START_TIMEOUT_MS = Number(process.env.BENCH_SYNAPSE_TIMEOUT ?? 600) * 1000;

export interface Synapse {
  url: string;
  version: string;
  /** CPU time (user + system) Synapse has used so far, in microseconds. */
  cpuTime(): Promise<number>;
  stop(): Promise<void>;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/**
 * Starts Synapse on the database at `databaseUrl`, with `extraYaml` (a YAML mapping) merged over
 * synapse.sh's config; throws with the reason when it cannot.
 */
export async function startSynapse(databaseUrl: string, extraYaml?: string): Promise<Synapse> {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-bench-synapse-"));
  const pidFile = path.join(dir, "synapse.pid");
  const pid = () => (existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8").trim()) : 0);
  const stop = async () => {
    const p = pid();
    if (p > 0 && alive(p)) {
      process.kill(p, "SIGTERM");
      for (let i = 0; i < 100 && alive(p); i++) await new Promise((r) => setTimeout(r, 100));
      if (alive(p)) process.kill(p, "SIGKILL");
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const port = await freePort();
    const extra: string[] = [];
    if (extraYaml !== undefined) {
      writeFileSync(path.join(dir, "extra.yaml"), extraYaml);
      extra.push("--extra", path.join(dir, "extra.yaml"));
    }
    const url = await runTool("synapse.sh", ["start", String(port), dir, "--postgres", databaseUrl, ...extra], START_TIMEOUT_MS);
    const res = await fetch(`${url}/_matrix/federation/v1/version`);
    const body = (await res.json()) as { server?: { version?: string } };
    return {
      url,
      version: body.server?.version ?? "unknown",
      cpuTime: () => Promise.resolve(procCpuTime(pid())),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
