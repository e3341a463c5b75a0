/**
 * The two servers bench/media.ts compares, and what it reads of their processes from /proc:
 * Switchboard started as production starts it, on SQLite, and bench/media_baseline.ts. Both are
 * given by pid, since their RSS and CPU are read from /proc rather than asked of them.
 */
import { fork } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { CleanUps } from "./entry.js";
import type { MediaConfigureMessage, MediaRoute } from "./media_baseline.js";
import { upload } from "./media_load.js";
import { isMessage, type ReadyMessage } from "./protocol.js";
import { spawnOnSqlite, UNLIMITED } from "./switchboard_process.js";

/** A server under test: where it listens and the pid whose CPU and memory are read. */
export interface Server {
  label: "switchboard" | "baseline";
  url: string;
  pid: number;
}

/** `node dist/src/main.js --config FILE` on a SQLite file and a media store in `dir`, logging at info to a file. */
export async function startSwitchboard(dir: string, cleanups: CleanUps): Promise<Server> {
  const p = await spawnOnSqlite(dir, {
    media_store_path: path.join(dir, "media_store"),
    // One user uploads everything; the default 10/s would turn the upload rounds into 429s.
    rc_media_create: UNLIMITED,
  });
  cleanups.push(() => p.stop());
  return { label: "switchboard", url: p.url, pid: p.pid };
}

/** Forked here rather than through bench/children.ts, which does not give out the child's pid. */
export async function startBaseline(routes: MediaRoute[], uploadDir: string, cleanups: CleanUps): Promise<Server> {
  const child = fork(path.join(path.dirname(fileURLToPath(import.meta.url)), "media_baseline.js"), [], { stdio: ["ignore", 2, 2, "ipc"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  cleanups.push(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.send({ type: "stop" });
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  });
  const url = await new Promise<string>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`media_baseline.js exited (${code}) before it was ready`)));
    child.on("message", (m: unknown) => isMessage<ReadyMessage>(m, "ready") && resolve(m.url));
    child.send({ type: "media-configure", routes, uploadDir } satisfies MediaConfigureMessage);
  });
  return { label: "baseline", url, pid: child.pid! };
}

/**
 * CPU time of a process's main thread alone, in µs: JavaScript runs there, while file system
 * calls and hashing run on libuv's pool. Near one core: the event loop is the limit.
 */
export function mainThreadCpuUs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) * 10_000;
  } catch {
    return Number.NaN;
  }
}

/** A field of /proc/PID/status (VmRSS, VmHWM), in MiB. */
function procMiB(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

const round1 = (n: number) => Math.round(n * 10) / 10;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * RSS in MiB around one upload of `body`: before (after a second's rest), the highest during it
 * (the kernel's high-water mark, reset first through clear_refs where allowed, and samples every
 * 5 ms), right after the answer, and a second later.
 */
export async function rssAroundUpload(s: Server, token: string, body: Buffer) {
  await sleep(1000);
  const before = procMiB(s.pid, "VmRSS");
  let hwmReset = true;
  try {
    writeFileSync(`/proc/${s.pid}/clear_refs`, "5");
  } catch {
    hwmReset = false;
  }
  let sampled = before;
  const sampler = setInterval(() => (sampled = Math.max(sampled, procMiB(s.pid, "VmRSS"))), 5);
  const { ms } = await upload(s.url, token, body, "application/octet-stream", "big.bin").finally(() => clearInterval(sampler));
  const after = procMiB(s.pid, "VmRSS");
  const peak = Math.max(sampled, after, hwmReset ? procMiB(s.pid, "VmHWM") : 0);
  await sleep(1000);
  return {
    before_mib: round1(before),
    peak_mib: round1(peak),
    after_mib: round1(after),
    after_1s_mib: round1(procMiB(s.pid, "VmRSS")),
    growth_mib: round1(after - before),
    peak_growth_mib: round1(peak - before),
    upload_ms: Math.round(ms),
    peak_from: hwmReset ? "VmHWM, reset before the upload, and VmRSS sampled every 5 ms" : "VmRSS sampled every 5 ms",
  };
}
