/** Starts and stops bench/bare_cluster.ts, the several-processes yardstick of bench/workers.ts. */
import { spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { freePort } from "../test/helpers/ports.js";

const SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), "bare_cluster.js");

export interface BareCluster {
  url: string;
  /** The parent first, then every worker; with one process, just it. */
  pids: number[];
  stop(): Promise<void>;
}

export async function startBareCluster(processes: number): Promise<BareCluster> {
  const port = await freePort();
  const child = spawn(process.execPath, [SCRIPT, String(processes), String(port)], { stdio: ["ignore", "pipe", "inherit"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const lines = createInterface({ input: child.stdout });
  const pids = await new Promise<number[]>((resolve, reject) => {
    lines.once("line", (line) => resolve((JSON.parse(line) as { pids: number[] }).pids));
    child.once("exit", (code) => reject(new Error(`bare_cluster ${processes} exited with ${code} before it served`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    pids,
    stop: async () => {
      child.kill("SIGTERM");
      await exited;
    },
  };
}
