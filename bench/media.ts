/**
 * Media benchmark: Switchboard on SQLite, started as production starts it (`node dist/src/main.js
 * --config FILE`), against a bare node:http server (bench/media_baseline.ts) that streams the same
 * bytes from disk and writes uploads to disk with an fsync, in the same run:
 *   - download of a 1 MiB file, and of a cached 96×96 crop thumbnail: req/s, the same number of
 *     requests over the same keep-alive connections to each (bench/media_load.ts, in this process);
 *   - upload of a 10 MiB file, one after another: MB/s;
 *   - each server's RSS before, during and after two uploads of exactly `max_upload_size` (50 MiB):
 *     uploads stream to disk, so memory should stay flat.
 * Each side is loaded alone, in rounds that alternate the order (A B, B A, …), so that a machine
 * that slows down for a moment slows both alike. Server CPU is read from /proc, per request.
 *
 * Environment:
 *   BENCH_MEDIA_ROUNDS       measured rounds (default 6)
 *   BENCH_MEDIA_CONNECTIONS  download connections (default 10)
 *   BENCH_MEDIA_DOWNLOADS    1 MiB downloads per server and round (default 150)
 *   BENCH_MEDIA_THUMBNAILS   thumbnail downloads per server and round (default 1000)
 *   BENCH_MEDIA_UPLOADS      10 MiB uploads per server and round (default 2)
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import sharp from "sharp";
import { CleanUps, envCount, printReport, runMain } from "./entry.js";
import type { MediaRoute } from "./media_baseline.js";
import { call, fixedLoad, upload, type CountResult } from "./media_load.js";
import { mainThreadCpuUs, rssAroundUpload, startBaseline, startSwitchboard, type Server } from "./media_servers.js";
import { machineBusyUs, procCpuTime } from "./postgres.js";
import { closeClients, registerClients } from "./send_client.js";

const ROUNDS = envCount("BENCH_MEDIA_ROUNDS", 6);
const CONNECTIONS = envCount("BENCH_MEDIA_CONNECTIONS", 10);
const DOWNLOADS = envCount("BENCH_MEDIA_DOWNLOADS", 150);
const THUMBNAILS = envCount("BENCH_MEDIA_THUMBNAILS", 1000);
const UPLOADS = envCount("BENCH_MEDIA_UPLOADS", 2);
const MiB = 1024 * 1024;
/** Exactly the default `max_upload_size`, the largest upload Switchboard accepts. */
const BIG_UPLOAD = 50 * MiB;
const TARGET = 0.7;

type RssFigures = Awaited<ReturnType<typeof rssAroundUpload>>;
const THUMB_QUERY = "?width=96&height=96&method=crop";

const log = (msg: string) => console.error(`[bench:media] ${msg}`);
const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const cleanups = new CleanUps(log);

// ---- load ------------------------------------------------------------------

/** What one side did over all its rounds of one figure. */
interface Tally {
  count: number;
  bytes: number;
  wallMs: number;
  serverCpuUs: number;
  mainThreadUs: number;
  ownCpuUs: number;
  /** The whole machine's busy CPU: what is left after the server and this process is neighbours'. */
  machineUs: number;
  non2xx: number;
  errors: number;
  latencies: number[];
  /** Each round's operations per second, in the order measured. */
  rounds: number[];
}

const newTally = (): Tally => ({ count: 0, bytes: 0, wallMs: 0, serverCpuUs: 0, mainThreadUs: 0, ownCpuUs: 0, machineUs: 0, non2xx: 0, errors: 0, latencies: [], rounds: [] });

/** Runs `work` against `s`, adding what it did and the CPU both processes used to `t`. */
async function measured(s: Server, t: Tally, work: () => Promise<Omit<CountResult, "wallMs">>): Promise<void> {
  const [cpu0, main0, machine0, own0] = [procCpuTime(s.pid), mainThreadCpuUs(s.pid), machineBusyUs(), process.cpuUsage()];
  const t0 = performance.now();
  const r = await work();
  const wallMs = performance.now() - t0;
  t.wallMs += wallMs;
  t.rounds.push(round((r.requests / wallMs) * 1000, 1));
  const own = process.cpuUsage(own0);
  t.ownCpuUs += own.user + own.system;
  t.serverCpuUs += procCpuTime(s.pid) - cpu0;
  t.mainThreadUs += mainThreadCpuUs(s.pid) - main0;
  t.machineUs += machineBusyUs() - machine0;
  t.count += r.requests;
  t.bytes += r.bytes;
  t.non2xx += r.non2xx;
  t.errors += r.errors;
  t.latencies.push(...r.latencies);
}

/** Uploads one after another, each over a new connection; failures are counted, not thrown. */
async function uploads(s: Server, token: string, body: Buffer, n: number): Promise<Omit<CountResult, "wallMs">> {
  const r = { requests: 0, non2xx: 0, errors: 0, bytes: 0, latencies: [] as number[] };
  for (let i = 0; i < n; i++) {
    const res = await call(s.url, "POST", "/_matrix/media/v3/upload?filename=ten.bin", token, body).catch(() => undefined);
    if (!res) r.errors++;
    else if (res.status !== 200) r.non2xx++;
    else {
      r.requests++;
      r.bytes += body.length;
      r.latencies.push(res.ms);
    }
  }
  return r;
}

/** Both servers, `ROUNDS` rounds after one unmeasured, alternating which goes first. */
async function pair(name: string, sides: Server[], work: (s: Server) => Promise<Omit<CountResult, "wallMs">>): Promise<Tally[]> {
  for (const s of sides) await work(s);
  const tallies = sides.map(newTally);
  for (let r = 0; r < ROUNDS; r++) {
    for (const k of r % 2 === 0 ? [0, 1] : [1, 0]) await measured(sides[k]!, tallies[k]!, () => work(sides[k]!));
  }
  tallies.forEach((t, k) => log(`${sides[k]!.label} ${name}: ${round((t.count / t.wallMs) * 1000, 1)}/s, ${round(t.bytes / MiB / (t.wallMs / 1000), 1)} MiB/s`));
  return tallies;
}

function summary(t: Tally) {
  const sorted = [...t.latencies].sort((a, b) => a - b);
  const pct = (p: number) => round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN);
  const cores = (us: number) => round(us / (t.wallMs * 1000));
  return {
    per_s: round((t.count / t.wallMs) * 1000, 1),
    mib_per_s: round(t.bytes / MiB / (t.wallMs / 1000), 1),
    count: t.count,
    non_2xx: t.non2xx,
    errors: t.errors,
    rounds_per_s: t.rounds,
    latency_ms: { p50: pct(50), p99: pct(99) },
    /** In cores: 1 = one core busy the whole measured time. The generator shares the machine's cores. */
    server_cpu_cores: cores(t.serverCpuUs),
    /** The event loop's thread alone; the rest is libuv's pool (file system calls, hashing) and V8's helpers. */
    server_main_thread_cpu_cores: cores(t.mainThreadUs),
    server_cpu_us_per_op: round(t.serverCpuUs / t.count, 0),
    generator_cpu_cores: cores(t.ownCpuUs),
    /** Everything else on the machine meanwhile: well above 0, neighbours took CPU from the figure. */
    other_cpu_cores: cores(t.machineUs - t.serverCpuUs - t.ownCpuUs),
  };
}

/** One figure: both sides, their ratio (req/s or MB/s alike: the same bytes per operation) and the target. */
function figure(description: string, [sw, base]: Tally[], problems: string[], warnings: string[], key: string) {
  const switchboard = summary(sw!);
  const baseline = summary(base!);
  const ratio = round(switchboard.per_s / baseline.per_s, 3);
  // Round by round, each pair measured back to back: the median shrugs off a round a neighbour spoiled.
  const pairs = sw!.rounds.map((r, i) => r / base!.rounds[i]!).sort((a, b) => a - b);
  const mid = pairs.length >> 1;
  for (const [side, m] of [["Switchboard", switchboard], ["the baseline", baseline]] as const) {
    if (m.non_2xx || m.errors) problems.push(`${key}: ${side} had ${m.non_2xx} non-2xx answers and ${m.errors} errors`);
  }
  const others = Math.max(switchboard.other_cpu_cores, baseline.other_cpu_cores);
  if (others > 0.25) warnings.push(`${key}: other processes took up to ${others} cores while it was measured: the figures are noisy`);
  if (ratio < TARGET) warnings.push(`${key}: Switchboard/baseline is ${ratio}, below the ${TARGET} target`);
  return {
    description,
    switchboard,
    baseline,
    ratio,
    target: TARGET,
    meets_target: ratio >= TARGET,
    ratio_median_of_rounds: round(pairs.length % 2 ? pairs[mid]! : (pairs[mid - 1]! + pairs[mid]!) / 2, 3),
    /** Baseline CPU per operation over Switchboard's: the same comparison, less sensitive to a busy machine. */
    ratio_cpu_efficiency: round(baseline.server_cpu_us_per_op / switchboard.server_cpu_us_per_op, 3),
  };
}

// ---- the run ---------------------------------------------------------------

/** The response headers the baseline repeats: all but those node:http writes itself. */
function replayable(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (typeof v === "string" && !["date", "connection", "keep-alive"].includes(k)) out[k] = v;
  return out;
}

async function main(): Promise<number> {
  const loadBefore = os.loadavg().map((n) => round(n));
  const problems: string[] = [];
  const warnings: string[] = [];
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-bench-media-"));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  let report: Record<string, unknown>;
  try {
    const sbDir = path.join(dir, "switchboard");
    const baseDir = path.join(dir, "baseline");
    for (const d of [sbDir, baseDir, path.join(baseDir, "uploads")]) mkdirSync(d);
    const sw = await startSwitchboard(sbDir, cleanups);
    const clients = await registerClients(sw.url, "media", 1);
    cleanups.push(async () => closeClients(clients));
    const { token } = clients[0]!;

    // The files: random bytes (nothing compresses them on the way), and a JPEG of random colours
    // blown up from 48×36, so that its thumbnail has detail (noise alone averages out to grey).
    const oneMiB = randomBytes(MiB);
    const picture = await sharp(randomBytes(48 * 36 * 3), { raw: { width: 48, height: 36, channels: 3 } })
      .resize(1600, 1200, { kernel: "cubic" })
      .jpeg({ quality: 85 })
      .toBuffer();
    const idOf = (uri: string) => uri.replace(/^mxc:\/\//, "");
    const fileId = idOf((await upload(sw.url, token, oneMiB, "application/octet-stream", "one.bin")).uri);
    const pictureId = idOf((await upload(sw.url, token, picture, "image/jpeg", "picture.jpg")).uri);
    const downloadPath = `/_matrix/client/v1/media/download/${fileId}`;
    const thumbPath = `/_matrix/client/v1/media/thumbnail/${pictureId}${THUMB_QUERY}`;
    const first = await call(sw.url, "GET", thumbPath, token);
    log(`first thumbnail request: ${first.status}, ${round(first.ms)} ms (made now, or by the upload's background work)`);
    // The second is served from disk: the figure is about that case.
    const [download, thumb] = [await call(sw.url, "GET", downloadPath, token), await call(sw.url, "GET", thumbPath, token)];
    for (const [what, res] of [["download", download], ["thumbnail", thumb]] as const) {
      if (res.status !== 200) throw new Error(`${what}: Switchboard answered ${res.status} ${res.body.toString("utf8").slice(0, 300)}`);
    }
    if (!download.body.equals(oneMiB)) problems.push("the download's bytes differ from the upload's");
    if (!thumb.body.equals(first.body)) problems.push("the thumbnail's bytes changed between its first and second request");

    // The baseline serves the same bytes with the same headers, from files of its own.
    writeFileSync(path.join(baseDir, "one.bin"), oneMiB);
    writeFileSync(path.join(baseDir, "thumb"), thumb.body);
    const routes: MediaRoute[] = [
      { url: downloadPath, file: path.join(baseDir, "one.bin"), headers: replayable(download.headers) },
      { url: thumbPath, file: path.join(baseDir, "thumb"), headers: replayable(thumb.headers) },
    ];
    const base = await startBaseline(routes, path.join(baseDir, "uploads"), cleanups);
    for (const [p, want] of [[downloadPath, download.body], [thumbPath, thumb.body]] as const) {
      if (!(await call(base.url, "GET", p, token)).body.equals(want)) problems.push(`the baseline's ${p} differs from Switchboard's`);
    }
    const sides = [sw, base];

    // Memory first, before the 10 MiB rounds have grown either heap, each side after one small
    // upload. Twice: the first upload grows the pools a stream needs, and a buffered body would
    // grow the process again by its size the second time too.
    const big = randomBytes(BIG_UPLOAD);
    const rss: Record<string, { first: RssFigures; second: RssFigures }> = {};
    for (const s of sides) {
      await upload(s.url, token, oneMiB, "application/octet-stream", "warm.bin");
      rss[s.label] = { first: await rssAroundUpload(s, token, big), second: await rssAroundUpload(s, token, big) };
      log(`${s.label}: RSS growth over two ${BIG_UPLOAD / MiB} MiB uploads: ${rss[s.label]!.first.growth_mib} MiB, then ${rss[s.label]!.second.growth_mib} MiB`);
    }

    const dl = await pair("1 MiB download", sides, (s) => fixedLoad(s.url, downloadPath, token, CONNECTIONS, DOWNLOADS, MiB));
    const th = await pair("thumbnail", sides, (s) => fixedLoad(s.url, thumbPath, token, CONNECTIONS, THUMBNAILS, thumb.body.length));
    const tenMiB = randomBytes(10 * MiB);
    const up = await pair("10 MiB upload", sides, (s) => uploads(s, token, tenMiB, UPLOADS));

    const [sbRss, baseRss] = [rss.switchboard!, rss.baseline!];
    // A quarter of the body beyond what the bare streaming server grows: part of it is held somewhere.
    const excess = sbRss.first.peak_growth_mib - baseRss.first.peak_growth_mib;
    if (excess > BIG_UPLOAD / MiB / 4) warnings.push(`rss: Switchboard's peak grew ${round(excess, 1)} MiB more than the baseline's over a 50 MiB upload`);
    report = {
      benchmark: "Switchboard media (SQLite) vs a bare node:http server streaming the same bytes to and from disk, in the same run",
      date: new Date().toISOString(),
      node: process.version,
      platform: `${os.platform()} ${os.arch()}`,
      cores: os.availableParallelism(),
      cpu_model: os.cpus()[0]?.model ?? "unknown",
      switchboard: "node dist/src/main.js --config FILE, SQLite, worker_processes 1, logging at info (a line per request) to a file",
      load: `bench/media_load.ts in this process; downloads: a fixed count over ${CONNECTIONS} keep-alive connections per round; uploads: one at a time, each on a new connection; one unmeasured round, then ${ROUNDS} alternating`,
      loadavg_before: loadBefore,
      download_1mib: {
        path: "GET /_matrix/client/v1/media/download/{server}/{id}",
        body_bytes: MiB,
        requests_per_round: DOWNLOADS,
        ...figure("req/s; the baseline streams the file with fs.createReadStream, with Switchboard's headers", [dl[0]!, dl[1]!], problems, warnings, "download_1mib"),
      },
      thumbnail_cached: {
        path: `GET /_matrix/client/v1/media/thumbnail/{server}/{id}${THUMB_QUERY}`,
        source: `${picture.length}-byte 1600×1200 JPEG`,
        body_bytes: thumb.body.length,
        content_type: thumb.headers["content-type"],
        requests_per_round: THUMBNAILS,
        ...figure("req/s of a thumbnail already on disk; the baseline streams the same bytes from a file", [th[0]!, th[1]!], problems, warnings, "thumbnail_cached"),
      },
      upload_10mib: {
        path: "POST /_matrix/media/v3/upload",
        body_bytes: 10 * MiB,
        uploads_per_round: UPLOADS,
        ...figure("MiB/s (per_s is uploads/s); the baseline streams the body to a file and fsyncs it; Switchboard also hashes it (SHA-256), renames it into place, syncs the folder and adds a row", [up[0]!, up[1]!], problems, warnings, "upload_10mib"),
      },
      rss_50mib_upload: {
        body_bytes: BIG_UPLOAD,
        note: "RSS of each server process in MiB around an upload, done twice; growth_mib is after − before, peak_growth_mib is peak − before",
        growth_mib: sbRss.first.growth_mib,
        baseline_growth_mib: baseRss.first.growth_mib,
        second_upload_growth_mib: sbRss.second.growth_mib,
        baseline_second_upload_growth_mib: baseRss.second.growth_mib,
        switchboard: sbRss,
        baseline: baseRss,
      },
      loadavg_after: os.loadavg().map((n) => round(n)),
      ok: problems.length === 0,
      problems,
      warnings,
    };
  } finally {
    await cleanups.run();
  }
  return printReport(report, warnings, problems, log);
}

runMain(main);
