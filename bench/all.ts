/**
 * `npm run bench`: the HTTP benchmark, the footprint (start-up time and memory), the delayed-event one, the send one, the one of several
 * server processes (workers), then `/sync` wake-up fan-out across processes (fanout), then the media
 * repository's downloads, uploads and memory (media), then push delivery to HTTP pushers (push), then sliding
 * sync against /sync v2 for a user in 500 rooms (sliding_sync), then federation into and out of
 * one room against local sends (federation), then a
 * two-browser Element Call call through a real LiveKit SFU (call), each in its own process so that no one's heap
 * or timers disturb another's, printed together as one JSON document.
 * Progress and warnings go to stderr.
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { runMain } from "./entry.js";

const here = path.dirname(fileURLToPath(import.meta.url));

function run(script: string, execArgv: string[] = []): Promise<{ code: number; report: unknown }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...execArgv, path.join(here, script)], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => (out += chunk));
    child.on("error", reject);
    child.on("close", (code) => {
      try {
        resolve({ code: code ?? 1, report: JSON.parse(out) as unknown });
      } catch {
        reject(new Error(`${script} exited ${String(code)} without a JSON report`));
      }
    });
  });
}

async function main(): Promise<number> {
  const http = await run("run.js");
  // Start-up time and memory of `npm start`, beside a bare node:http server's.
  const footprint = await run("footprint.js").catch((err: unknown) => ({ code: 1, report: { failed: (err as Error).message } }));
  const delayed = await run("delayed_events.js", ["--expose-gc"]);
  // The send, workers and fanout benchmarks start PostgreSQL (and Synapse): if one breaks, the other figures still print.
  const sends = await run("sends.js").catch((err: unknown) => ({ code: 1, report: { failed: (err as Error).message } }));
  const workers = await run("workers.js").catch((err: unknown) => ({ code: 1, report: { failed: (err as Error).message } }));
  const fanout = await run("fanout.js").catch((err: unknown) => ({ code: 1, report: { failed: (err as Error).message } }));
  const media = await run("media.js").catch((err: unknown) => ({ code: 1, report: { failed: (err as Error).message } }));
  const push = await run("push.js").catch((err: unknown) => ({ code: 1, report: { failed: (err as Error).message } }));
  const slidingSync = await run("sliding_sync.js").catch((err: unknown) => ({ code: 1, report: { failed: (err as Error).message } }));
  const federation = await run("federation.js").catch((err: unknown) => ({ code: 1, report: { failed: (err as Error).message } }));
  // Two browsers and a LiveKit SFU: the time from "Join call" to media both ways.
  const call = await run("call_media.js").catch((err: unknown) => ({ code: 1, report: { failed: (err as Error).message } }));
  const report = {
    http: http.report,
    footprint: footprint.report,
    delayed_events: delayed.report,
    sends: sends.report,
    workers: workers.report,
    fanout: fanout.report,
    media: media.report,
    push: push.report,
    sliding_sync: slidingSync.report,
    federation: federation.report,
    call: call.report,
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  return [http, footprint, delayed, sends, workers, fanout, media, push, slidingSync, federation, call].every((r) => r.code === 0) ? 0 : 1;
}

runMain(main);
