/**
 * Several Switchboard processes on one database, started separately with `--worker-id`, for the
 * suites that drive real processes (workers*.test.ts). Needs SWITCHBOARD_TEST_POSTGRES.
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parse, stringify } from "yaml";
import { TEST_POSTGRES } from "./database.js";
import { generated, serve, tempDir, type Serving } from "./cli.js";
import { freePort } from "./ports.js";
import { User } from "./rooms.js";

export const skipWithoutPostgres = TEST_POSTGRES ? false : "needs PostgreSQL (SWITCHBOARD_TEST_POSTGRES)";
const UNLIMITED = { per_second: 10_000, burst_count: 10_000 };

export interface Worker {
  url: string;
  serving: Serving;
}

/** A config for `dir`'s database that lets a test send as fast as it likes. */
export async function baseConfig(dir: string, port: number): Promise<Record<string, unknown>> {
  const file = await generated(dir, "workers.test", port);
  const config = parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  return {
    ...config,
    enable_registration: true,
    enable_registration_without_verification: true,
    rc_message: UNLIMITED,
    rc_registration: UNLIMITED,
    rc_login: { address: UNLIMITED, account: UNLIMITED, failed_attempts: UNLIMITED },
    rc_delayed_event_mgmt: UNLIMITED,
    experimental_features: { msc4140_enabled: true, msc4140_max_delayed_events_per_user: 1000 },
  };
}

/** `n` processes started separately on one database, each on its own port with `--worker-id wI`. */
export async function startWorkers(n: number): Promise<Worker[]> {
  const dir = tempDir();
  const ports: number[] = [];
  for (let i = 0; i < n; i++) ports.push(await freePort());
  const config = await baseConfig(dir, ports[0]!);
  const workers: Worker[] = [];
  for (let i = 0; i < n; i++) {
    const file = path.join(dir, `worker${i}.yaml`);
    const listeners = (config.listeners as Record<string, unknown>[]).map((l) => ({ ...l, port: ports[i] }));
    writeFileSync(file, stringify({ ...config, listeners }));
    const serving = await serve(["--config", file, "--worker-id", `w${i}`], dir);
    workers.push({ url: serving.listening[0]!, serving });
  }
  return workers;
}

/** The same user and device, talking to process `w`. */
export const on = (u: User, w: Worker) => new User(w.url, u.userId, u.token, u.deviceId);

/** Kills the process with SIGKILL; resolves once it has exited. */
export function killed(w: Worker): Promise<void> {
  return new Promise((resolve) => {
    w.serving.child.once("exit", () => resolve());
    w.serving.child.kill("SIGKILL");
  });
}
