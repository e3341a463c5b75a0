/** The benchmark's server children: forked, told what to serve, asked for their CPU time, stopped. */
import { fork, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { isMessage, type ReadyMessage, type ToChild, type UsageMessage } from "./protocol.js";

const here = path.dirname(fileURLToPath(import.meta.url));

export interface Child {
  url: string;
  /** CPU time (user + system) the child has used so far, in microseconds. */
  cpuTime(): Promise<number>;
  stop(): Promise<void>;
}

/** `env`, when given, is added to this process's environment for the child. */
export async function startChild(script: string, execArgv: string[], configure?: ToChild, env?: Record<string, string>): Promise<Child> {
  // The child's stdout goes to our stderr: stdout carries only the JSON result.
  const child: ChildProcess = fork(path.join(here, script), [], {
    execArgv,
    stdio: ["ignore", 2, 2, "ipc"],
    env: env ? { ...process.env, ...env } : process.env,
  });
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
