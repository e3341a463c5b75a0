/**
 * `switchboard doctor` with a real LiveKit SFU (livekit-server 1.11, built by .ci/run with
 * `go install`; the binary is $(go env GOPATH)/bin/server). Skipped where it is not built, unless
 * `CI` is set: CI must run it.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { freePort } from "./helpers/ports.js";
import { doctorOn, dump, failures, livekitBlock, noUpgradeProxy, SFU_KEY, SFU_SECRET, startDoctorServer, type DoctorServer } from "./helpers/doctor.js";

function livekitBinary(): string | undefined {
  const gopath = spawnSync("go", ["env", "GOPATH"], { encoding: "utf8" });
  const bin = gopath.status === 0 ? path.join(gopath.stdout.trim(), "bin", "server") : undefined;
  return bin && existsSync(bin) ? bin : undefined;
}

const BIN = livekitBinary();
if (!BIN && process.env.CI) throw new Error("livekit-server is not built ($(go env GOPATH)/bin/server); CI is set, so this suite must run");
const skip = BIN ? false : "livekit-server is not built here (.ci/run builds it; set CI to make this a failure)";

describe("switchboard doctor with a real LiveKit SFU", { skip, timeout: 300_000 }, () => {
  let sfu: ChildProcess;
  let dir: string;
  let sfuUrl: string;
  const servers: DoctorServer[] = [];

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "switchboard-doctor-livekit-"));
    const [port, tcp, udp] = [await freePort(), await freePort(), await freePort("127.0.0.1")];
    const config = {
      port,
      bind_addresses: ["127.0.0.1"],
      rtc: { tcp_port: tcp, udp_port: udp, use_external_ip: false, enable_loopback_candidate: true },
      keys: { [SFU_KEY]: SFU_SECRET },
      room: { auto_create: false },
      logging: { level: "warn" },
    };
    writeFileSync(path.join(dir, "livekit.yaml"), JSON.stringify(config)); // JSON is YAML
    sfu = spawn(BIN!, ["--config", path.join(dir, "livekit.yaml"), "--node-ip", "127.0.0.1"], { stdio: "ignore" });
    sfuUrl = `ws://127.0.0.1:${port}`;
    // Ready when its HTTP port answers.
    for (let i = 0; ; i++) {
      assert.equal(sfu.exitCode, null, "livekit-server exited while starting");
      const up = await fetch(`http://127.0.0.1:${port}/`).then((r) => r.ok, () => false);
      if (up) break;
      assert.ok(i < 300, "livekit-server never answered");
      await new Promise((r) => setTimeout(r, 100));
    }
  });
  after(async () => {
    for (const s of servers) await s.server.stop();
    sfu?.kill("SIGKILL");
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the right key and secret: the SFU accepts the tokens", async () => {
    const target = await startDoctorServer(livekitBlock(sfuUrl));
    servers.push(target);
    const report = await doctorOn(target);
    assert.deepEqual(failures(report), [], dump(report));
    for (const id of ["livekit.1.sfu", "livekit.1.sfu-auth", "livekit.1.sfu-ws"]) assert.equal(report.checks.find((c) => c.id === id)?.status, "pass", dump(report));
  });

  test("a secret the SFU does not have", async () => {
    const target = await startDoctorServer(livekitBlock(sfuUrl, "a-secret-the-sfu-does-not-have-0123456789"));
    servers.push(target);
    const report = await doctorOn(target);
    assert.deepEqual(failures(report).map((c) => c.id), ["livekit.1.sfu-auth"], dump(report));
  });

  test("a proxy that does not pass WebSocket upgrades: /rtc/validate works, the WebSocket does not", async () => {
    const proxy = await noUpgradeProxy(() => sfuUrl.replace(/^ws/, "http"));
    try {
      const target = await startDoctorServer(livekitBlock(`ws://${proxy.name}`));
      servers.push(target);
      const report = await doctorOn(target);
      assert.deepEqual(failures(report).map((c) => c.id), ["livekit.1.sfu-ws"], dump(report));
      assert.match(failures(report)[0]!.cause!, /the proxy in front of the SFU does not pass WebSocket upgrades/);
      assert.equal(report.checks.find((c) => c.id === "livekit.1.sfu-auth")?.status, "pass", dump(report));
    } finally {
      await proxy.close();
    }
  });
});
