/** The `switchboard doctor` command itself: usage errors, exit statuses, --json, --config, --ca-file. */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { stringify } from "yaml";
import { getJson, login, run, tempDir } from "./helpers/cli.js";
import { FakeSfu, livekitBlock, PASSWORD, startDoctorServer, type DoctorServer } from "./helpers/doctor.js";
import { makeTestCa, tlsFront } from "./helpers/livekit.js";

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
});
