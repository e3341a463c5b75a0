/**
 * The doctor's OpenID userinfo lookup, made as a JWT service makes it, for a server name without
 * a port (`doctor.test`): `/.well-known/matrix/server`, SRV `_matrix-fed._tcp`, port 8448, over
 * verified TLS. Made-up names reach loopback through the doctor's dialer (as the server's own
 * outbound tests do), HTTPS fronts carry a test CA's certificates, and the doctor trusts that CA
 * as `--ca-file` makes it.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { runDoctor } from "../src/cli/doctor/runner.js";
import type { DoctorOptions } from "../src/cli/doctor/context.js";
import type { DoctorReport } from "../src/cli/doctor/report.js";
import type { SrvRecord } from "../src/services/outbound/dialer.js";
import { freePort } from "./helpers/ports.js";
import { dump, failures, FakeSfu, livekitBlock, PASSWORD } from "./helpers/doctor.js";
import { doctorFront, type DoctorFront } from "./helpers/doctor_proxy.js";
import { makeTestCa, testDialer } from "./helpers/livekit.js";
import { NO_LIMIT, registerUser, startServer, type TestServer } from "./helpers/server.js";

const check = (report: DoctorReport, id: string) => report.checks.find((c) => c.id === id);

describe("switchboard doctor: the userinfo lookup for a server name without a port", { timeout: 300_000 }, () => {
  const pki = makeTestCa(["doctor.test", "hs.doctor.test", "fed.doctor.test"]);
  // A certificate from a CA the doctor (and so a JWT service) does not trust.
  const stranger = makeTestCa(["doctor.test", "fed.doctor.test"]);
  const sfu = new FakeSfu();
  let front: DoctorFront;
  let untrusted: DoctorFront;
  let server: TestServer;
  let closed: number;

  before(async () => {
    const sfuUrl = await sfu.start();
    front = await doctorFront(pki);
    untrusted = await doctorFront(stranger);
    closed = await freePort();
    server = await startServer({
      server_name: "doctor.test",
      public_baseurl: `https://hs.doctor.test:${front.port}/`,
      listeners: [{ port: 0, bind_addresses: ["127.0.0.1"], resources: [{ names: ["client", "federation"] }] }],
      serve_server_wellknown: true,
      rc_rtc_transports: NO_LIMIT,
      ...livekitBlock(sfuUrl),
    });
    front.target = server.baseUrl;
    untrusted.target = server.baseUrl;
    await registerUser(server.baseUrl, "doctor", PASSWORD);
  });
  after(async () => {
    await server?.stop();
    await front?.close();
    await untrusted?.close();
    await sfu.stop();
  });

  /** The doctor on `doctor.test` over HTTPS, trusting the test CA; `srv` and `addresses` add to the made-up DNS. */
  function doctor(srv: Record<string, SrvRecord[]> = {}, addresses: Record<string, { address: string; port?: number }> = {}, opts: Partial<DoctorOptions> = {}) {
    const dialer = testDialer(
      {
        "doctor.test:443": { address: "127.0.0.1", port: front.port },
        "hs.doctor.test": { address: "127.0.0.1" },
        "fed.doctor.test": { address: "127.0.0.1" },
        ...addresses,
      },
      srv,
    );
    return runDoctor({ server: "doctor.test", insecureHttp: false, ca: pki.ca, user: "doctor", password: PASSWORD, delayMs: 1000, dialer, ...opts });
  }
  const srvTo = (port: number) => ({ "_matrix-fed._tcp.doctor.test": [{ name: "fed.doctor.test", port, priority: 10, weight: 5 }] });

  test("/.well-known/matrix/server delegates to the homeserver: the lookup passes", async () => {
    front.serverWellKnown = undefined;
    const report = await doctor();
    assert.deepEqual(failures(report), [], dump(report));
    const userinfo = check(report, "openid.userinfo")!;
    assert.equal(userinfo.status, "pass", dump(report));
    assert.equal(userinfo.got, "200, sub @doctor:doctor.test");
    assert.match(userinfo.asked, new RegExp(`^as a JWT service would, for doctor\\.test: /\\.well-known/matrix/server → hs\\.doctor\\.test:${front.port}; GET https://hs\\.doctor\\.test:${front.port}/_matrix/federation/v1/openid/userinfo\\?access_token=…$`));
    assert.equal(check(report, "livekit.1.service-token")?.status, "pass", dump(report));
  });

  test("no /.well-known/matrix/server, an SRV record: the lookup follows it and checks the certificate for the server name", async () => {
    front.serverWellKnown = 404;
    try {
      const report = await doctor(srvTo(front.port));
      assert.deepEqual(failures(report), [], dump(report));
      const userinfo = check(report, "openid.userinfo")!;
      assert.equal(userinfo.status, "pass", dump(report));
      assert.match(userinfo.asked, /\/\.well-known\/matrix\/server → 404 \(not JSON: "<h1>404 Not Found<\/h1>"\); SRV _matrix-fed\._tcp\.doctor\.test → fed\.doctor\.test:\d+; GET https:\/\/fed\.doctor\.test:/);
    } finally {
      front.serverWellKnown = undefined;
    }
  });

  test("an untrusted certificate where the SRV record points: the TLS step fails", async () => {
    front.serverWellKnown = 404;
    try {
      const report = await doctor(srvTo(untrusted.port));
      assert.deepEqual(failures(report).map((c) => c.id), ["openid.userinfo"], dump(report));
      const userinfo = check(report, "openid.userinfo")!;
      assert.match(userinfo.got, new RegExp(`^TLS failed \\(fed\\.doctor\\.test:${untrusted.port}, certificate for doctor\\.test\\): the TLS certificate is not trusted \\(`));
      assert.match(userinfo.cause!, /JWT services verify TLS: the certificate on fed\.doctor\.test:\d+ is not one they trust/);
      assert.match(userinfo.fix!, /publicly trusted certificate/);
    } finally {
      front.serverWellKnown = undefined;
    }
  });

  test("neither /.well-known/matrix/server nor SRV: port 8448, named when nothing answers there", async () => {
    front.serverWellKnown = 404;
    try {
      const refused = await doctor({}, { "doctor.test:8448": { address: "127.0.0.1", port: closed } });
      assert.deepEqual(failures(refused).map((c) => c.id), ["openid.userinfo"], dump(refused));
      const userinfo = check(refused, "openid.userinfo")!;
      assert.match(userinfo.asked, /no SRV record for doctor\.test: port 8448; GET https:\/\/doctor\.test:8448\//);
      assert.equal(userinfo.got, "port 8448 failed (doctor.test:8448): connection refused: nothing listens there");
      assert.match(userinfo.cause!, /No \/\.well-known\/matrix\/server and no SRV record, so JWT services try port 8448 on doctor\.test/);
      assert.match(userinfo.fix!, /serve_server_wellknown: true/);

      const open = await doctor({}, { "doctor.test:8448": { address: "127.0.0.1", port: front.port } });
      assert.deepEqual(failures(open), [], dump(open));
      assert.equal(check(open, "openid.userinfo")?.status, "pass");
    } finally {
      front.serverWellKnown = undefined;
    }
  });

  test("SERVER as a base URL on another host: .well-known is checked at the user's server name too", async () => {
    const report = await doctor({}, {}, { server: `https://hs.doctor.test:${front.port}` });
    assert.deepEqual(failures(report), [], dump(report));
    const at = check(report, "well-known.server-name")!;
    assert.equal(at.status, "pass", dump(report));
    assert.match(at.asked, /^GET https:\/\/doctor\.test\/\.well-known\/matrix\/client \(@doctor:doctor\.test names server doctor\.test, not the host of https:\/\/hs\.doctor\.test:\d+\)$/);
    assert.equal(at.got, `200, base_url https://hs.doctor.test:${front.port} (as given), Access-Control-Allow-Origin: * (once)`);
  });
});
