/**
 * Push benchmark: messages go into a room of `MEMBERS` users, each with an http pusher to a
 * recording push gateway in this process, and into a room of as many other users without
 * pushers, in the same run, in rounds that alternate the order (bench/push_load.ts):
 *   - send throughput with pushers, as a ratio of without (target ≥ 0.7);
 *   - delivery latency: from each send's acknowledgement (the 200 of `/send`) to the gateway's
 *     receipt of each push for it, p50/p99 (target p99 < 200 ms);
 *   - server CPU per send in each room and in a room of the sender alone: what a room of
 *     `MEMBERS` costs more than a room of one, per recipient, bounds the cost of evaluating push
 *     rules for one recipient (it includes recording the notification and waking `/sync`).
 * Every member has the default rules: in a group room, a message notifies everyone (low prio).
 *
 * Baselines in the same run, against the same gateway:
 *   - Switchboard on SQLite (the default) is the subject;
 *   - a bare node:http client posting the same push body in the same bursts (bench/bare_pusher.ts):
 *     the CPU a push costs with nothing but the request, the floor under Switchboard's figure;
 *   - Synapse 1.163 on PostgreSQL (../shared/tools/synapse.sh), under the same load.
 *
 * Environment:
 *   BENCH_PUSH_MEMBERS  members per room (default 100)
 *   BENCH_PUSH_SENDERS  members sending at once, each over its own connection (default 4)
 *   BENCH_PUSH_SENDS    sends per room and round (default 20)
 *   BENCH_PUSH_ROUNDS   measured rounds (default 2)
 *   BENCH_PUSH_CPU_PROF a directory: Switchboard writes a V8 CPU profile there when it stops
 *   BENCH_POSTGRES      a postgres:// URL whose user may create databases (else a private cluster)
 *   BENCH_SKIP_SYNAPSE  set: leave Synapse out
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { CleanUps, envCount, printReport, runMain } from "./entry.js";
import { openPostgres, procCpuTime } from "./postgres.js";
import { Gateway, pct, runPushLoad, type PushLoadOptions, type PushLoadResult } from "./push_load.js";
import { startSynapse } from "./synapse.js";
import { spawnOnSqlite } from "./switchboard_process.js";

const MEMBERS = envCount("BENCH_PUSH_MEMBERS", 100);
const OPTIONS: PushLoadOptions = {
  members: MEMBERS,
  senders: Math.min(envCount("BENCH_PUSH_SENDERS", 4), MEMBERS),
  sends: envCount("BENCH_PUSH_SENDS", 20),
  rounds: envCount("BENCH_PUSH_ROUNDS", 2),
  drainLimitMs: 60_000,
  log: (msg) => log(msg),
};
const TARGET_RATIO = 0.7;
const TARGET_P99_MS = 200;
/** Synapse's config beyond synapse.sh's: its pushers may reach the gateway on loopback, as Switchboard's are allowed to here. */
const SYNAPSE_EXTRA = 'ip_range_whitelist: ["127.0.0.1/32"]\n';

const log = (msg: string) => console.error(`[bench:push] ${msg}`);
const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const reason = (err: unknown) => (err instanceof Error ? err.message : String(err));
const cleanups = new CleanUps(log);

/** The report of one server's run. */
function figures(r: PushLoadResult) {
  const p99 = pct(r.latencies, 99);
  return {
    with_pushers: r.with_pushers,
    without_pushers: r.without_pushers,
    sender_alone: r.sender_alone,
    throughput: { ratio: r.ratio, ratio_median_of_rounds: r.ratioMedianOfRounds, target: TARGET_RATIO, meets_target: r.ratio >= TARGET_RATIO },
    delivery_latency_ms: {
      description: "from each send's acknowledgement to the gateway's receipt of each of its pushes (negative: the push came first)",
      pushes: r.latencies.length,
      missing: r.missing,
      min: pct(r.latencies, 0),
      p50: pct(r.latencies, 50),
      p90: pct(r.latencies, 90),
      p99,
      max: round(r.latencies[r.latencies.length - 1] ?? Number.NaN),
      target_p99: TARGET_P99_MS,
      meets_target: p99 < TARGET_P99_MS,
      /** The longest wait, after a round's last send, for all its pushes. */
      drain_after_last_send_ms: round(r.drainMs, 0),
    },
    server_cpu: {
      /** (room of MEMBERS without pushers − sender alone) / (MEMBERS − 1): push rule evaluation, notification records and /sync wake-up, per recipient. */
      us_per_recipient_upper_bound: r.usPerRecipient,
      /** (with pushers − without) / (MEMBERS − 1): building and sending one push, and recording its progress. */
      us_per_push: r.usPerPush,
    },
  };
}

/** The bare client's CPU per push, in a child process, posting `body` to the gateway in bursts of a room's pushes. */
async function bareFloor(gateway: Gateway, body: string): Promise<number> {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), "bare_pusher.js");
  const { stdout } = await promisify(execFile)(process.execPath, [script], {
    env: { ...process.env, BARE_URL: gateway.url, BARE_BODY: body, BARE_BURST: String(MEMBERS - 1), BARE_BURSTS: String(OPTIONS.sends * OPTIONS.rounds), BARE_WARM: String(OPTIONS.sends) },
    timeout: 120_000,
  });
  return (JSON.parse(stdout) as { cpu_us_per_request: number }).cpu_us_per_request;
}

async function main(): Promise<number> {
  const problems: string[] = [];
  const warnings: string[] = [];
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-bench-push-"));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  const report: Record<string, unknown> = {
    description: `sends into a room of ${MEMBERS} members, each with an http pusher to a local gateway, against a room of ${MEMBERS} without pushers; ${OPTIONS.senders} senders at once, ${OPTIONS.sends} sends per room and round, ${OPTIONS.rounds} measured rounds after one unmeasured`,
    members: MEMBERS,
    senders: OPTIONS.senders,
    rounds: OPTIONS.rounds,
  };
  try {
    const gateway = await new Gateway().start();
    cleanups.push(() => gateway.stop());

    // The gateway listens on loopback, which pushers may not reach unless allowed.
    const prof = process.env.BENCH_PUSH_CPU_PROF;
    const sw = await spawnOnSqlite(dir, { ip_range_whitelist: ["127.0.0.1/32"] }, prof ? ["--cpu-prof", `--cpu-prof-dir=${path.resolve(prof)}`] : []);
    cleanups.push(() => sw.stop());
    const mine = await runPushLoad({ name: "Switchboard", url: sw.url, cpuUs: () => procCpuTime(sw.pid) }, gateway, OPTIONS, "");
    await sw.stop();
    problems.push(...mine.problems);
    const switchboard = figures(mine);
    report.switchboard_sqlite = switchboard;
    if (!switchboard.throughput.meets_target) warnings.push(`send throughput with pushers is ${mine.ratio} of without, below the ${TARGET_RATIO} target`);
    if (!switchboard.delivery_latency_ms.meets_target) warnings.push(`push delivery p99 is ${switchboard.delivery_latency_ms.p99} ms, above the ${TARGET_P99_MS} ms target`);

    // The floor: the same bytes, the same bursts, nothing but the request.
    if (gateway.sample) {
      const bare = await bareFloor(gateway, gateway.sample);
      report.bare_client = {
        description: `a bare node:http keep-alive client in a process of its own, posting one of Switchboard's push bodies to the same gateway in bursts of ${MEMBERS - 1} at once: the CPU of the request alone`,
        cpu_us_per_push: round(bare, 1),
      };
      report.switchboard_us_per_push_over_bare_client = round(mine.usPerPush / bare, 2);
    }

    if (process.env.BENCH_SKIP_SYNAPSE) {
      report.synapse_postgres = { skipped: "BENCH_SKIP_SYNAPSE is set" };
    } else {
      const postgres = await openPostgres();
      if ("skipped" in postgres) {
        report.synapse_postgres = { skipped: `no PostgreSQL for Synapse: ${postgres.skipped}` };
      } else {
        cleanups.push(() => postgres.close());
        try {
          log("starting Synapse on PostgreSQL (the first time, synapse.sh installs it into a virtualenv)");
          const synapse = await startSynapse(await postgres.createDatabase("synapse_push_bench"), SYNAPSE_EXTRA);
          cleanups.push(() => synapse.stop());
          const theirs = await runPushLoad({ name: "Synapse", url: synapse.url, cpuUs: () => synapse.cpuTime() }, gateway, OPTIONS, "");
          problems.push(...theirs.problems);
          report.synapse_postgres = { version: synapse.version, ...figures(theirs) };
          report.switchboard_over_synapse = {
            throughput_ratio: round(mine.ratio / theirs.ratio, 2),
            sends_per_s_with_pushers: round(mine.with_pushers.per_s / theirs.with_pushers.per_s, 2),
            delivery_p99: round(pct(mine.latencies, 99) / pct(theirs.latencies, 99), 2),
            cpu_per_push: round(mine.usPerPush / theirs.usPerPush, 2),
          };
        } catch (err) {
          log(`Synapse skipped: ${reason(err)}`);
          report.synapse_postgres = { skipped: `Synapse could not be had: ${reason(err)}` };
        }
      }
    }
  } catch (err) {
    problems.push(reason(err));
    report.failed = reason(err);
  } finally {
    await cleanups.run();
  }
  return printReport(report, warnings, problems, log);
}

runMain(main);
