/**
 * Delayed-event scheduler benchmark (issue: "Calls that clean up after
 * themselves", §6). Runs in one process against a real SQLite file:
 *   - RSS growth with 100k delayed events pending;
 *   - scheduling rate, beside a bare SQLite insert of the same rows;
 *   - firing lateness (p50/p99 ms after due) while 1,000 events a second
 *     fire, beside the lateness of bare setTimeout timers due at the same times;
 *   - after a restart with 100k pending, the time until the scheduler runs
 *     again, beside a bare read of the same rows.
 * Prints one JSON document on stdout.
 */
import Database from "better-sqlite3";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import pino from "pino";
import { configFromObject } from "../src/config/load.js";
import { createHomeserver, type Homeserver } from "../src/homeserver.js";
import type { Requester } from "../src/services/auth.js";

const PENDING = Number(process.env.BENCH_DELAYED_PENDING ?? 100_000);
const FIRE_RATE = 1000;
const USERS = 100;
const FIRE_SECONDS = Number(process.env.BENCH_DELAYED_FIRE_SECONDS ?? 5);
const log = (msg: string) => console.error(`[bench:delayed] ${msg}`);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const rssMb = () => process.memoryUsage().rss / 1024 / 1024;

async function open(dir: string): Promise<Homeserver> {
  const { config } = configFromObject({
    server_name: "bench.local",
    listeners: [{ port: 0, bind_addresses: ["127.0.0.1"] }],
    database: { name: "sqlite3", args: { database: path.join(dir, "hs.db") } },
    signing_key_path: path.join(dir, "signing.key"),
    log_level: "warn",
    max_event_delay_duration: "7d",
    experimental_features: { msc4140_max_delayed_events_per_user: Math.ceil(PENDING / USERS) + FIRE_RATE * FIRE_SECONDS },
    rc_message: { per_second: 1e6, burst_count: 1e6 },
  });
  return createHomeserver(config, pino({ level: "warn" }, pino.destination("/dev/null")));
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-bench-delayed-"));
  try {
    let hs = await open(dir);
    await hs.start();
    const { services } = hs;
    // Spread over users, as calls are: the per-user limit stays meaningful (each holds at most PENDING/USERS).
    const requesters: Requester[] = [];
    for (let u = 0; u < USERS; u++) {
      const created = await services.accounts.createUser(`bench${u}`, "bench-password", { admin: false, login: true });
      requesters.push({ userId: created.user_id, deviceId: created.device_id!, isGuest: false, tokenHash: "" });
    }
    const requester = requesters[0]!;
    const user = { user_id: requester.userId };
    const { room_id: roomId } = await services.rooms.createRoom(requester, {
      preset: "public_chat",
      invite: [],
      initialState: [],
      isDirect: false,
    });
    for (const r of requesters.slice(1)) await services.rooms.join(r, roomId);
    log(`${USERS} users joined`);

    // Scheduling: PENDING events due in six days, so none fires during the run.
    global.gc?.();
    const rssBefore = rssMb();
    const schedStart = performance.now();
    for (let i = 0; i < PENDING; i++) {
      const who = requesters[i % USERS]!;
      await services.delayedEvents.schedule(who, {
        roomId,
        type: "org.matrix.msc3401.call.member",
        stateKey: `_${who.userId}_D${i}_m.call`,
        content: {},
        delayMs: 6 * 86_400_000,
      });
    }
    const schedSeconds = (performance.now() - schedStart) / 1000;
    global.gc?.();
    const rssAfter = rssMb();
    log(`scheduled ${PENDING} in ${schedSeconds.toFixed(1)} s`);

    // Baseline: the same number of rows inserted into a bare SQLite table with the same pragmas.
    const bare = new Database(path.join(dir, "bare.db"));
    bare.pragma("journal_mode = WAL");
    bare.pragma("synchronous = NORMAL");
    bare.exec("CREATE TABLE t (id TEXT PRIMARY KEY, room TEXT, type TEXT, sk TEXT, content TEXT, send_at INTEGER)");
    const ins = bare.prepare("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)");
    const bareStart = performance.now();
    for (let i = 0; i < PENDING; i++) ins.run(`id${i}`, roomId, "t", `k${i}`, "{}", Date.now() + 1e9);
    const bareSeconds = (performance.now() - bareStart) / 1000;
    bare.close();

    // Firing: FIRE_RATE events a second for FIRE_SECONDS, due 1/FIRE_RATE s apart, while the 100k wait.
    // They are all scheduled before the first falls due, from the rate measured above.
    const total = FIRE_RATE * FIRE_SECONDS;
    const dueByKey = new Map<string, number>();
    const lateness: number[] = [];
    services.persister.onPersisted((event) => {
      const due = dueByKey.get(event.pdu.state_key ?? "");
      if (due !== undefined) lateness.push(Date.now() - due);
    });
    const firstDue = Date.now() + 2000 + Math.ceil((total / (PENDING / schedSeconds)) * 1500);
    for (let i = 0; i < total; i++) {
      const due = firstDue + Math.floor((i * 1000) / FIRE_RATE);
      const stateKey = `_${user.user_id}_F${i}_m.call`;
      dueByKey.set(stateKey, due);
      await services.delayedEvents.schedule(requester, {
        roomId,
        type: "org.matrix.msc3401.call.member",
        stateKey,
        content: {},
        delayMs: due - Date.now(),
      });
    }
    // Baseline: bare timers due at the same instants, in the same process, under the same load.
    const bareLateness: number[] = [];
    for (let i = 0; i < total; i++) {
      const due = firstDue + Math.floor((i * 1000) / FIRE_RATE);
      setTimeout(() => bareLateness.push(Date.now() - due), Math.max(0, due - Date.now()));
    }
    const deadline = firstDue + FIRE_SECONDS * 1000 + 60_000;
    while ((lateness.length < total || bareLateness.length < total) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
    }
    lateness.sort((a, b) => a - b);
    bareLateness.sort((a, b) => a - b);
    log(`fired ${lateness.length}/${total}`);

    // Restart with 100k pending.
    await hs.stop();
    const restartStart = performance.now();
    hs = await open(dir);
    await hs.start();
    const restartMs = performance.now() - restartStart;
    await hs.stop();
    // The scheduler's own share: loading what is pending into its heap.
    hs = await open(dir);
    const loadStart = performance.now();
    await hs.services.delayedEvents.start();
    const loadMs = performance.now() - loadStart;
    hs.services.delayedEvents.stop();
    await hs.stop();
    const db = new Database(path.join(dir, "hs.db"), { readonly: true });
    const readStart = performance.now();
    const rows = db.prepare("SELECT delay_id, send_at FROM delayed_events WHERE status != 'finalised'").all();
    const readMs = performance.now() - readStart;
    db.close();

    const p99 = percentile(lateness, 99);
    console.log(
      JSON.stringify(
        {
          benchmark: "delayed_events",
          node: process.version,
          date: new Date().toISOString(),
          pending: PENDING,
          rss_mb: { before: round(rssBefore), after: round(rssAfter), growth: round(rssAfter - rssBefore), target_growth_below: 150 },
          scheduling: {
            per_second: round(PENDING / schedSeconds, 0),
            baseline_bare_sqlite_insert_per_second: round(PENDING / bareSeconds, 0),
            ratio: round(bareSeconds / schedSeconds, 3),
          },
          firing: {
            rate_per_second: FIRE_RATE,
            fired: lateness.length,
            expected: total,
            lateness_ms: { p50: percentile(lateness, 50), p99, max: lateness[lateness.length - 1] },
            baseline_bare_timer_lateness_ms: { p50: percentile(bareLateness, 50), p99: percentile(bareLateness, 99) },
            target_p99_below_ms: 50,
            meets_target: p99 < 50,
          },
          restart: {
            pending_rows: rows.length,
            ms_until_scheduler_runs: round(restartMs, 1),
            scheduler_load_ms: round(loadMs, 1),
            baseline_bare_read_ms: round(readMs, 1),
            scheduler_load_ratio_to_bare_read: round(loadMs / Math.max(readMs, 0.001), 2),
          },
        },
        null,
        2,
      ),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
