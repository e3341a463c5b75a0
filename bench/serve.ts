/**
 * Benchmark child: one Switchboard on a free loopback port with its own
 * temporary SQLite file, logging as in production (pino JSON, level "info",
 * one line per request, one synchronous write per event-loop turn) but into /dev/null.
 * Tells the parent its URL over IPC; closes and exits when told to stop.
 *
 * BENCH_SERVE_CONFIG, a JSON object, replaces top-level keys of the config below (bench/sends.ts
 * uses it for a PostgreSQL `database` and for rate limits that would turn sends into 429s).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { configFromObject } from "../src/config/load.js";
import { createHomeserver } from "../src/homeserver.js";
import { createLogger, logDestination } from "../src/http/logging.js";
import { handleCommonMessages, type ReadyMessage } from "./protocol.js";

/** Only for investigation (e.g. "silent"); the reported figures use "info". */
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL ?? "info";

const dir = mkdtempSync(path.join(tmpdir(), "switchboard-bench-"));
const overrides = JSON.parse(process.env.BENCH_SERVE_CONFIG ?? "{}") as Record<string, unknown>;
const { config } = configFromObject(
  {
    server_name: "localhost",
    public_baseurl: "http://localhost/",
    listeners: [{ port: 0, bind_addresses: ["127.0.0.1"] }],
    database: { name: "sqlite3", args: { database: path.join(dir, "homeserver.db") } },
    signing_key_path: path.join(dir, "signing.key"),
    // The driver registers its user over HTTP.
    enable_registration: true,
    enable_registration_without_verification: true,
    // One user makes every request; a per-user limit would turn the benchmark into a 429 count.
    rc_rtc_transports: { per_second: 1_000_000, burst_count: 1_000_000 },
    matrix_rtc: { transports: [{ type: "livekit", livekit_service_url: "https://livekit-jwt.example.com" }] },
    log_level: "info",
    ...overrides,
  },
  path.join(dir, "switchboard.yaml"),
);
// The logger and destination production uses for stdout, pointed at /dev/null.
const logger = createLogger(LOG_LEVEL, logDestination("/dev/null"));
const homeserver = await createHomeserver(config, logger);

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  try {
    await homeserver.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
    logger.flush(() => process.exit(0));
  }
}

handleCommonMessages(() => void stop());

const [url] = await homeserver.start();
process.send!({ type: "ready", url: url! } satisfies ReadyMessage);
