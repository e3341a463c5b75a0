/**
 * Benchmark child for bench/federation.ts: one Switchboard with a made-up server name on SQLite,
 * logging as in production (info, one JSON line per request) into /dev/null, with an HTTPS front
 * on a port the parent chose (a reverse proxy, as in test/helpers/federation.ts) and a resolver that
 * maps every benchmark server name's port 8448 to its front. The parent chooses every front's port
 * before any server starts, so each server knows all the others from the start.
 *
 * Environment (all set by the parent):
 *   BENCH_FED_NAME   server name
 *   BENCH_FED_DIR    folder for the database and signing key (the parent reads the key to sign as this server)
 *   BENCH_FED_PKI    JSON {ca, key, cert}: the test CA and the certificate every front serves
 *   BENCH_FED_PORTS  JSON {name: front port} for every server name in the benchmark
 *   BENCH_FED_FRONT  this server's front port
 */
import http from "node:http";
import https from "node:https";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { configFromObject } from "../src/config/load.js";
import { createHomeserver } from "../src/homeserver.js";
import { createLogger, logDestination } from "../src/http/logging.js";
import { testDialer } from "../test/helpers/livekit.js";
import { handleCommonMessages, type ReadyMessage } from "./protocol.js";

const LOG_LEVEL = process.env.BENCH_LOG_LEVEL ?? "info";
const MANY = { per_second: 1_000_000, burst_count: 1_000_000 };

const name = process.env.BENCH_FED_NAME!;
const dir = process.env.BENCH_FED_DIR!;
const pki = JSON.parse(process.env.BENCH_FED_PKI!) as { ca: string; key: string; cert: string };
const ports = JSON.parse(process.env.BENCH_FED_PORTS!) as Record<string, number>;
const frontPort = Number(process.env.BENCH_FED_FRONT);
const caFile = path.join(dir, "ca.pem");
writeFileSync(caFile, pki.ca);

const { config } = configFromObject(
  {
    server_name: name,
    public_baseurl: `https://${name}/`,
    listeners: [{ port: 0, bind_addresses: ["127.0.0.1"] }],
    database: { name: "sqlite3", args: { database: path.join(dir, "homeserver.db") } },
    signing_key_path: path.join(dir, "signing.key"),
    enable_registration: true,
    enable_registration_without_verification: true,
    federation_custom_ca_list: [caFile],
    // The fronts listen on loopback, which is blocked by default (SSRF protection).
    ip_range_whitelist: ["127.0.0.1"],
    trusted_key_servers: [],
    rc_message: MANY,
    rc_registration: MANY,
    rc_login: { address: MANY, account: MANY, failed_attempts: MANY },
    log_level: "info",
  },
  path.join(dir, "switchboard.yaml"),
);
const addresses: Record<string, { address: string; port: number }> = {};
for (const [n, port] of Object.entries(ports)) addresses[`${n}:8448`] = { address: "127.0.0.1", port };
const logger = createLogger(LOG_LEVEL, logDestination("/dev/null"));
const homeserver = await createHomeserver(config, logger, undefined, { outbound: { dialer: testDialer(addresses) } });
const [url] = await homeserver.start();

// The HTTPS front: what another server reaches at `name:8448`.
const upstream = new http.Agent({ keepAlive: true });
const front = https.createServer({ key: pki.key, cert: pki.cert }, (req, res) => {
  const up = http.request(url! + (req.url ?? "/"), { method: req.method, headers: req.headers, agent: upstream }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    answer.pipe(res);
  });
  up.on("error", () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
  req.pipe(up);
});
await new Promise<void>((resolve) => front.listen(frontPort, "127.0.0.1", resolve));

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  front.closeAllConnections();
  front.close();
  upstream.destroy();
  await homeserver.stop().catch(() => undefined);
  logger.flush(() => process.exit(0));
}
handleCommonMessages(() => void stop());
process.send!({ type: "ready", url: url! } satisfies ReadyMessage);
