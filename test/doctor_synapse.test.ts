/**
 * `switchboard doctor` against a real Synapse 1.163 (../shared/tools/synapse.sh, from PyPI), with
 * msc4143 on and off: the report matches what Synapse serves. Its transport is a small JWT
 * service (helpers/doctor.ts) in front of the fake SFU. Without Synapse (no Python, no network
 * for PyPI) the suite is skipped, unless `CI` is set: CI must run it.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { runDoctor } from "../src/cli/doctor/runner.js";
import type { DoctorReport } from "../src/cli/doctor/report.js";
import { freePort } from "./helpers/ports.js";
import { dump, failures, FakeJwtService, FakeSfu, PASSWORD } from "./helpers/doctor.js";
import { testProxy } from "./helpers/doctor_proxy.js";
import { registerUser } from "./helpers/server.js";

const SYNAPSE_SH = fileURLToPath(new URL("../../../shared/tools/synapse.sh", import.meta.url));

interface Synapse {
  baseUrl: string;
  name: string;
  dir: string;
}

/** Starts Synapse named `127.0.0.1:PORT` (so that userinfo is found without DNS), or says why it could not. */
async function startSynapse(msc4143: boolean, serviceUrl: string): Promise<Synapse | { failed: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-doctor-synapse-"));
  const port = await freePort();
  const name = `127.0.0.1:${port}`;
  const transports = [{ type: "livekit", livekit_service_url: serviceUrl }];
  const extra = {
    serve_client_wellknown: true,
    matrix_rtc: { transports },
    extra_well_known_client_content: { "org.matrix.msc4143.rtc_foci": transports },
    experimental_features: { msc4143_enabled: msc4143 },
  };
  writeFileSync(path.join(dir, "extra.yaml"), JSON.stringify(extra)); // JSON is YAML
  try {
    const { stdout } = await promisify(execFile)("bash", [SYNAPSE_SH, "start", String(port), path.join(dir, "hs"), "--server-name", name, "--extra", path.join(dir, "extra.yaml")], {
      timeout: 600_000,
    });
    return { baseUrl: stdout.trim().split("\n").pop()!, name, dir };
  } catch (err) {
    await stopSynapse(dir);
    const e = err as { message: string; stderr?: string };
    return { failed: `Synapse could not be started with ${SYNAPSE_SH}: ${(e.stderr?.trim() || e.message).split("\n").slice(-3).join(" / ")}` };
  }
}

async function stopSynapse(dir: string): Promise<void> {
  await promisify(execFile)("bash", [SYNAPSE_SH, "stop", path.join(dir, "hs")]).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}

const sfu = new FakeSfu();
const sfuUrl = await sfu.start();
// The JWT service learns Synapse's URL once it runs; it only needs it per request.
let synapseUrl = "";
const jwt = new FakeJwtService(() => synapseUrl, sfuUrl);
const serviceUrl = await jwt.start();
const first = await startSynapse(true, serviceUrl);
if ("failed" in first && process.env.CI) throw new Error(`${first.failed}\n(CI is set: this suite must run there)`);
const skip = "failed" in first ? `${first.failed} (set CI to make this a failure)` : false;
// A skipped suite runs no `after`: the stand-ins must not keep the file alive until its timeout.
if (skip) {
  await jwt.stop();
  await sfu.stop();
}

async function doctorSynapse(synapse: Synapse, user: string): Promise<DoctorReport> {
  synapseUrl = synapse.baseUrl;
  await registerUser(synapse.baseUrl, user, PASSWORD);
  return runDoctor({ server: synapse.name, insecureHttp: true, user, password: PASSWORD, delayMs: 1000 });
}

describe("switchboard doctor against Synapse", { skip, timeout: 600_000 }, () => {
  after(async () => {
    if ("dir" in first) await stopSynapse(first.dir);
    await jwt.stop();
    await sfu.stop();
  });

  test("msc4143 on: everything passes; no v1 transports path is a warning", async () => {
    const report = await doctorSynapse(first as Synapse, "doctoron");
    assert.deepEqual(failures(report), [], dump(report));
    const v1 = report.checks.find((c) => c.id === "rtc-transports.v1")!;
    assert.equal(v1.status, "warn", dump(report));
    assert.match(v1.cause!, /Only the unstable path/);
    for (const id of ["well-known.cors", "well-known.rtc_foci", "feature.msc4143", "feature.msc4140", "rtc-transports.unstable", "rtc-transports.well-known",
      "openid", "openid.userinfo", "livekit.1.service-token", "livekit.1.sfu", "livekit.1.sfu-auth", "livekit.1.sfu-ws", "delayed-events", "cleanup"]) {
      assert.equal(report.checks.find((c) => c.id === id)?.status, "pass", `${id}\n${dump(report)}`);
    }
  });

  test("the maximum delay: from /capabilities, or, with that entry hidden by a proxy, from Synapse's refusal of a 10-year delay", async () => {
    const synapse = first as Synapse;
    const report = await doctorSynapse(synapse, "doctorcaps");
    assert.match(report.checks.find((c) => c.id === "delayed-events")!.got, /; max delay 24 h \(\/capabilities\)$/, dump(report));
    const strip = (body: unknown) => {
      const caps = (body as { capabilities: Record<string, unknown> }).capabilities;
      delete caps["org.matrix.msc4140.delayed_events"];
      delete caps["m.delayed_events"];
      return body;
    };
    const proxy = await testProxy(() => synapse.baseUrl, { rewrite: { path: "/_matrix/client/v3/capabilities", json: strip } });
    try {
      const hidden = await runDoctor({ server: `http://${proxy.name}`, insecureHttp: true, user: "doctorcaps", password: PASSWORD, delayMs: 1000 });
      assert.deepEqual(failures(hidden), [], dump(hidden));
      assert.match(hidden.checks.find((c) => c.id === "delayed-events")!.got, /; max delay 24 h \(not in \/capabilities; from the refusal of a 10-year delay: 400 ORG\.MATRIX\.MSC4140_DELAY_TOO_LARGE, the maximum read from its message\)$/, dump(hidden));
    } finally {
      await proxy.close();
    }
  });

  test("msc4143 off: the flag fails, rtc/transports is skipped, and the .well-known fallback still works", async () => {
    await stopSynapse((first as Synapse).dir);
    const off = await startSynapse(false, serviceUrl);
    assert.ok(!("failed" in off), "failed" in off ? off.failed : "");
    try {
      const report = await doctorSynapse(off, "doctoroff");
      assert.deepEqual(failures(report).map((c) => c.id), ["feature.msc4143"], dump(report));
      assert.equal(report.checks.find((c) => c.id === "rtc-transports.unstable")?.status, "skip");
      // Clients that fall back to rtc_foci still reach the JWT service and the SFU.
      assert.equal(report.checks.find((c) => c.id === "livekit.1.sfu-auth")?.status, "pass", dump(report));
    } finally {
      await stopSynapse(off.dir);
    }
  });
});
