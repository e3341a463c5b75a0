/** The `switchboard doctor` command itself: usage errors, exit statuses, --json, --config, --ca-file, Ctrl-C. */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { stringify } from "yaml";
import { getJson, login, run, start, tempDir } from "./helpers/cli.js";
import { FakeSfu, livekitBlock, PASSWORD, startDoctorServer, type DoctorServer } from "./helpers/doctor.js";
import { testProxy } from "./helpers/doctor_proxy.js";
import { makeTestCa, tlsFront } from "./helpers/livekit.js";
import { eventually } from "./helpers/server.js";

describe("switchboard doctor: usage", () => {
  const cases: [string, string[], RegExp][] = [
    ["no SERVER", ["doctor"], /doctor needs SERVER/],
    ["--user without --password", ["doctor", "example.com", "--user", "u"], /--user and --password go together/],
    ["a token and a password", ["doctor", "example.com", "--access-token", "t", "--user", "u", "--password", "p"], /not both/],
    ["plain http without the flag", ["doctor", "http://127.0.0.1:1"], /--insecure-http/],
    ["not a server name", ["doctor", "exa mple.com"], /neither a server name nor a base URL/],
    ["a CA file that is not there", ["doctor", "example.com", "--ca-file", "/nonexistent/ca.pem"], /--ca-file/],
    ["an option of another command", ["doctor", "example.com", "--admin"], /--admin does not apply to doctor/],
  ];
  for (const [what, args, message] of cases) {
    test(`${what}: exit 2`, async () => {
      const r = await run(args, tempDir());
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
    });
  }
});

describe("switchboard doctor: the command against a server", { timeout: 300_000 }, () => {
  const sfu = new FakeSfu();
  let good: DoctorServer;
  let bare: DoctorServer;
  before(async () => {
    const sfuUrl = await sfu.start();
    good = await startDoctorServer(livekitBlock(sfuUrl));
    bare = await startDoctorServer({});
  });
  after(async () => {
    await good?.server.stop();
    await bare?.server.stop();
    await sfu.stop();
  });

  test("--json: one object, exit 0 when nothing failed, no secret in it", async () => {
    const r = await run(["doctor", good.name, "--insecure-http", "--user", good.user, "--password", PASSWORD, "--json"], tempDir());
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout) as { summary: { fail: number; pass: number }; mutates: boolean; checks: { id: string }[] };
    assert.equal(report.summary.fail, 0);
    assert.ok(report.summary.pass > 20);
    assert.equal(report.mutates, true);
    assert.doesNotMatch(r.stdout, new RegExp(PASSWORD));
    assert.doesNotMatch(r.stdout, /eyJ[A-Za-z0-9_-]{12,}/);
  });

  test("--access-token: the credentialed checks run in that session, which stays logged in; the token is not printed", async () => {
    const token = (await login(good.baseUrl, good.user, PASSWORD)).body.access_token as string;
    const r = await run(["doctor", good.name, "--insecure-http", "--access-token", token, "--json"], tempDir());
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout) as { mutates: boolean; checks: { id: string; status: string; got: string }[] };
    assert.equal(report.mutates, true);
    for (const id of ["login", "room", "rtc-transports.unstable", "livekit.1.hs-token", "openid", "livekit.1.service-token", "livekit.1.sfu-auth", "livekit.1.sfu-ws",
      "delayed-events", "sticky-events", "cleanup"]) {
      assert.equal(report.checks.find((c) => c.id === id)?.status, "pass", `${id}\n${r.stdout}`);
    }
    assert.match(report.checks.find((c) => c.id === "login")!.got, /^200, @doctor:/);
    assert.ok(!(r.stdout + r.stderr).includes(token), "the token is printed");
    // The doctor logs out only a device it logged in itself: the operator's session still works.
    assert.equal((await getJson(`${good.baseUrl}/_matrix/client/v3/account/whoami`, token)).status, 200);
    const table = await run(["doctor", good.name, "--insecure-http", "--access-token", token], tempDir());
    assert.equal(table.code, 0, table.stdout + table.stderr);
    assert.ok(!(table.stdout + table.stderr).includes(token), "the token is printed");
  });

  test("a table without colours when not a terminal; exit 1 when a check failed", async () => {
    const r = await run(["doctor", bare.name, "--insecure-http", "--user", bare.user, "--password", PASSWORD], tempDir());
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.ok(!r.stdout.includes("\u001b["), "no colour codes");
    assert.match(r.stdout, /^✘ rtc\/transports \(unstable\) +GET .* → 200, an empty list$/m);
    assert.match(r.stdout, /^ +cause: No transport is configured/m);
    assert.match(r.stdout, /^ +fix: +Switchboard: configure the livekit block/m);
    assert.match(r.stdout, /^✔ \.well-known /m);
    assert.match(r.stdout, /\d+ passed, 1 failed, \d+ warnings?, \d+ skipped$/m);
  });

  test("--config names a config that serves something else", async () => {
    const dir = tempDir();
    const file = path.join(dir, "switchboard.yaml");
    writeFileSync(
      file,
      stringify({
        server_name: bare.name,
        public_baseurl: `${bare.baseUrl}/`,
        matrix_rtc: { transports: [{ type: "livekit", livekit_service_url: "https://rtc.example.com/livekit/jwt" }] },
      }),
    );
    const r = await run(["doctor", bare.name, "--insecure-http", "--access-token", "not-a-token", "--config", file, "--json"], dir);
    assert.equal(r.code, 1, r.stderr);
    const report = JSON.parse(r.stdout) as { checks: { id: string; status: string; got: string }[] };
    // A bad token: the login check fails and says so; nothing needing the account runs.
    assert.equal(report.checks.find((c) => c.id === "login")?.status, "fail");
    assert.doesNotMatch(r.stdout, /not-a-token/);
    assert.match(report.checks.find((c) => c.id === "config.transports")?.got ?? "", /nothing served to compare/);
  });

  test("--ca-file trusts a private CA; without it the TLS failure is named", async () => {
    const tls = makeTestCa(["localhost"]);
    const front = await tlsFront(tls);
    front.target = good.baseUrl;
    const dir = tempDir();
    writeFileSync(path.join(dir, "ca.pem"), tls.ca);
    try {
      const url = `https://localhost:${front.port}`;
      const untrusted = await run(["doctor", url, "--json"], dir);
      assert.equal(untrusted.code, 1);
      const a = JSON.parse(untrusted.stdout) as { checks: { id: string; status: string; got: string }[] };
      assert.match(a.checks.find((c) => c.id === "versions")!.got, /TLS certificate is not trusted/);
      const trusted = await run(["doctor", url, "--ca-file", path.join(dir, "ca.pem"), "--json"], dir);
      const b = JSON.parse(trusted.stdout) as { checks: { id: string; status: string; got: string }[] };
      assert.equal(b.checks.find((c) => c.id === "versions")?.status, "pass", trusted.stdout);
      assert.equal(b.checks.find((c) => c.id === "well-known.cors")?.status, "pass", trusted.stdout);
      // The transports name plain http/ws loopback URLs; without --insecure-http they are skipped, not failed.
      for (const id of ["livekit.1.sfu", "livekit.1.healthz"]) {
        const c = b.checks.find((x) => x.id === id);
        assert.equal(c?.status, "skip", trusted.stdout);
        assert.match(c!.got, /plain (http|ws:\/\/).*pass --insecure-http/);
      }
      assert.equal(b.checks.filter((c) => c.status === "fail").length, 0, trusted.stdout);
    } finally {
      await front.close();
    }
  });

  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    test(`${signal} during the checks: the clean-up still runs (delayed event cancelled, room left, device logged out), then exit ${code}`, async () => {
      // The delayed event's PUT waits at a proxy: the doctor is mid-check, and its throwaway room exists.
      const proxy = await testProxy(() => good.baseUrl, { hold: (method, url) => method === "PUT" && url.includes("org.matrix.msc4140.delay=") });
      try {
        const doctor = start(["doctor", `http://${proxy.name}`, "--insecure-http", "--user", good.user, "--password", PASSWORD, "--json"], tempDir());
        await proxy.firstHeld;
        const token = (await login(good.baseUrl, good.user, PASSWORD)).body.access_token as string;
        const joined = async () => (await getJson(`${good.baseUrl}/_matrix/client/v3/joined_rooms`, token)).body.joined_rooms as string[];
        const devices = async () => ((await getJson(`${good.baseUrl}/_matrix/client/v3/devices`, token)).body.devices as { device_id: string; display_name?: string }[]);
        const [room] = await joined();
        assert.ok(room, "the throwaway room exists");
        const device = (await devices()).find((d) => d.display_name === "switchboard doctor");
        assert.ok(device, "the doctor's device exists");

        doctor.child.kill(signal);
        await eventually(async () => (doctor.out.stderr.includes(`${signal}: stopping and cleaning up`) ? true : undefined));
        // The request in flight is answered (so the delayed event is scheduled), and no other starts.
        proxy.release();
        const r = await doctor.exited;
        assert.equal(r.code, code, r.stdout + r.stderr);
        const report = JSON.parse(r.stdout) as { interrupted?: string; checks: { id: string; status: string; got: string }[] };
        assert.equal(report.interrupted, signal);
        const ids = report.checks.map((c) => c.id);
        assert.deepEqual(ids.slice(-2), ["interrupted", "cleanup"], r.stdout);
        assert.ok(!ids.includes("delayed-events") && !ids.includes("sticky-events"), r.stdout);
        const cleanup = report.checks.find((c) => c.id === "cleanup")!;
        assert.equal(cleanup.status, "pass", r.stdout);
        assert.match(cleanup.got, /^cancelled delayed event \S+, left /);
        assert.ok(cleanup.got.endsWith(`, left ${room}, logged out device ${device.device_id}`), cleanup.got);
        // And the server agrees: no room, no device, nothing scheduled.
        assert.deepEqual(await joined(), []);
        assert.ok(!(await devices()).some((d) => d.device_id === device.device_id));
        const scheduled = await getJson(`${good.baseUrl}/_matrix/client/v1/delayed_events?status=scheduled`, token);
        assert.deepEqual(scheduled.body.delayed_events, [], JSON.stringify(scheduled.body));
      } finally {
        await proxy.close();
      }
    });
  }
});
