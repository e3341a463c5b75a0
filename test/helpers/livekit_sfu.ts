/**
 * A real LiveKit SFU (livekit-server 1.11, built by `.ci/run` with the machine's Go toolchain)
 * on loopback, for tests that need the SFU itself: signalling, media, its room service API and
 * its webhooks. Each instance gets free ports, its own key pair and a config file; ICE uses the
 * loopback address only, so nothing leaves the machine.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import dgram from "node:dgram";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import path from "node:path";
import { RoomServiceClient } from "livekit-server-sdk";
import { freePort } from "./ports.js";

/** Where `go install github.com/livekit/livekit-server/cmd/server@v1.11.0` puts the binary. */
export const SFU_BINARY = process.env.LIVEKIT_SERVER_BIN ?? path.join(process.env.GOPATH ?? path.join(homedir(), "go"), "bin", "server");

/**
 * A reason to skip, only outside CI: in CI (`CI` set) `.ci/run` has built the SFU, so a missing
 * binary must fail the tests loudly rather than skip them.
 */
export function sfuMissing(): string | false {
  if (existsSync(SFU_BINARY) || process.env.CI) return false;
  return `${SFU_BINARY} is absent (go install github.com/livekit/livekit-server/cmd/server@v1.11.0; .ci/run builds it)`;
}

async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

export interface LiveKitSfu {
  /** `ws://127.0.0.1:PORT`, what clients connect to and `livekit.url` names. */
  url: string;
  apiKey: string;
  apiSecret: string;
  rooms: RoomServiceClient;
  /** The SFU's own output, for diagnostics when a test fails. */
  log(): string;
  stop(): Promise<void>;
}

/** Starts the SFU and resolves once it answers on its signalling port. */
export async function startLiveKitSfu(opts: { webhookUrl?: string } = {}): Promise<LiveKitSfu> {
  if (!existsSync(SFU_BINARY)) throw new Error(`the LiveKit SFU is not built: ${SFU_BINARY} is absent (.ci/run builds it)`);
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-livekit-"));
  const apiKey = `APIsb${randomBytes(6).toString("hex")}`;
  const apiSecret = randomBytes(32).toString("base64url");
  const [port, tcpPort, udpPort] = [await freePort(), await freePort(), await freeUdpPort()];
  const config = [
    `port: ${port}`,
    "bind_addresses: [127.0.0.1]",
    "rtc:",
    `  tcp_port: ${tcpPort}`,
    `  udp_port: ${udpPort}`,
    "  use_external_ip: false",
    // Only loopback is used, so its candidate must be offered (LiveKit leaves it out by default).
    "  enable_loopback_candidate: true",
    "  node_ip: 127.0.0.1",
    "keys:",
    `  ${apiKey}: ${apiSecret}`,
    "room:",
    // Rooms exist only when Switchboard creates them, as MSC4195 has it.
    "  auto_create: false",
    ...(opts.webhookUrl ? ["webhook:", `  api_key: ${apiKey}`, "  urls:", `    - ${opts.webhookUrl}`] : []),
    "logging:",
    "  level: info",
    "",
  ].join("\n");
  const configFile = path.join(dir, "livekit.yaml");
  writeFileSync(configFile, config);
  let output = "";
  const child: ChildProcess = spawn(SFU_BINARY, ["--config", configFile, "--bind", "127.0.0.1", "--node-ip", "127.0.0.1"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const keep = (chunk: Buffer) => {
    output += chunk.toString("utf8");
    if (output.length > 2_000_000) output = output.slice(-1_000_000);
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const url = `ws://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  // Ready when the signalling port answers HTTP; an SFU that exits first fails the start.
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`livekit-server exited with ${child.exitCode}:\n${output}`);
    }
    const ok = await fetch(`http://127.0.0.1:${port}/`).then((r) => r.ok, () => false);
    if (ok) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const rooms = new RoomServiceClient(`http://127.0.0.1:${port}`, apiKey, apiSecret);
  return { url, apiKey, apiSecret, rooms, log: () => output, stop };
}
