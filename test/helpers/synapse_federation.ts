/**
 * A Switchboard and a real Synapse (../shared/tools/synapse.sh, from PyPI) that federate over
 * TLS. Neither name needs DNS: each server is named by an IP literal with a port
 * (`127.0.0.1:PORT`), the port of an HTTPS front (a certificate from a test CA with an
 * `IP:127.0.0.1` SAN) that passes requests on to the server's plain-HTTP listener. Both servers
 * trust the CA (`federation_custom_ca_list`) and may reach loopback (`ip_range_whitelist`).
 */
import { execFile } from "node:child_process";
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync, type WriteStream } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import pino from "pino";
import { makeTestCa, tlsFront, type TlsFront } from "./livekit.js";
import { startServer, type TestServer } from "./server.js";

const SYNAPSE_SH = fileURLToPath(new URL("../../../../shared/tools/synapse.sh", import.meta.url));

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export interface SynapseFederation {
  dir: string;
  synapse: { name: string; baseUrl: string; dir: string; front: TlsFront };
  switchboard: { name: string; server: TestServer; front: TlsFront; logFile: string };
  /** The last lines of Synapse's log and of Switchboard's, for assertion messages. */
  logs(lines?: number): string;
  close(): Promise<void>;
}

/** Starts both servers, or says why Synapse could not start. */
export async function startSynapseFederation(): Promise<SynapseFederation | { failed: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-synapse-fed-"));
  const pki = makeTestCa(["localhost"], ["127.0.0.1"]);
  const caFile = path.join(dir, "ca.pem");
  writeFileSync(caFile, pki.ca);
  const sbFront = await tlsFront(pki);
  const synFront = await tlsFront(pki);
  const synName = `127.0.0.1:${synFront.port}`;
  const sbName = `127.0.0.1:${sbFront.port}`;
  const synPort = await freePort();
  const extra = {
    federation_custom_ca_list: [caFile],
    ip_range_whitelist: ["127.0.0.1"],
    // Synapse checks IP-literal server names against this list alone (not the whitelist): empty it.
    federation_ip_range_blacklist: [],
    trusted_key_servers: [],
    // Every /sync here is an initial one; Synapse would answer a repeat from its cache for 2 minutes.
    caches: { sync_response_cache_duration: 0 },
    rc_federation: { window_size: 1000, sleep_limit: 10000, sleep_delay: 0, reject_limit: 10000, concurrent: 100 },
    rc_key_requests: { per_second: 10000, burst_count: 10000 },
  };
  writeFileSync(path.join(dir, "extra.yaml"), JSON.stringify(extra)); // JSON is YAML
  const synDir = path.join(dir, "hs");
  const closeFronts = () => Promise.allSettled([sbFront.close(), synFront.close()]);
  let baseUrl: string;
  try {
    const { stdout } = await promisify(execFile)("bash", [SYNAPSE_SH, "start", String(synPort), synDir, "--server-name", synName, "--extra", path.join(dir, "extra.yaml")], {
      timeout: 600_000,
    });
    baseUrl = stdout.trim().split("\n").pop()!;
  } catch (err) {
    await promisify(execFile)("bash", [SYNAPSE_SH, "stop", synDir]).catch(() => undefined);
    await closeFronts();
    rmSync(dir, { recursive: true, force: true });
    const e = err as { message: string; stderr?: string };
    return { failed: `Synapse could not be started with ${SYNAPSE_SH}: ${(e.stderr?.trim() || e.message).split("\n").slice(-3).join(" / ")}` };
  }
  synFront.target = baseUrl;
  // A test run that is killed (a file timeout) skips `after`: never leave Synapse running behind it.
  const synapsePid = Number(readFileSync(path.join(synDir, "synapse.pid"), "utf8"));
  const killSynapse = () => {
    try {
      process.kill(synapsePid);
    } catch {
      // Already stopped.
    }
  };
  process.once("exit", killSynapse);
  // The test runner stops a file that overran its timeout with SIGTERM, which skips "exit" handlers.
  const onSignal = () => {
    killSynapse();
    process.exit(1);
  };
  process.once("SIGTERM", onSignal);
  const logFile = path.join(dir, "switchboard.log");
  const logStream: WriteStream = createWriteStream(logFile);
  const server = await startServer(
    {
      server_name: sbName,
      public_baseurl: `https://${sbName}/`,
      federation_custom_ca_list: [caFile],
      ip_range_whitelist: ["127.0.0.1"],
      trusted_key_servers: [],
    },
    { logger: pino({ level: process.env.SWITCHBOARD_TEST_LOG ?? "info" }, logStream) },
  );
  sbFront.target = server.baseUrl;
  const tail = (file: string, n: number) => {
    try {
      return readFileSync(file, "utf8").split("\n").slice(-n).join("\n");
    } catch {
      return "";
    }
  };
  return {
    dir,
    synapse: { name: synName, baseUrl, dir: synDir, front: synFront },
    switchboard: { name: sbName, server, front: sbFront, logFile },
    logs: (n = 30) => `--- Synapse log ---\n${tail(path.join(synDir, "homeserver.log"), n)}\n--- Switchboard log ---\n${tail(logFile, n)}`,
    async close() {
      await server.stop().catch(() => undefined);
      await promisify(execFile)("bash", [SYNAPSE_SH, "stop", synDir]).catch(() => undefined);
      process.off("exit", killSynapse);
      process.off("SIGTERM", onSignal);
      await closeFronts();
      logStream.end();
      if (!process.env.SWITCHBOARD_KEEP_SYNAPSE) rmSync(dir, { recursive: true, force: true });
    },
  };
}
