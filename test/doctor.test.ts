/**
 * `switchboard doctor` against a real Switchboard: configured well, every check passes; with one
 * fault at a time, exactly the check that owns it fails, naming the cause and the fix.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { dump, doctorOn, failures, FakeJwtService, FakeSfu, corsProxy, haveCoturn, livekitBlock, noUpgradeProxy, PASSWORD, startCoturn, startDoctorServer, type DoctorServer } from "./helpers/doctor.js";
import { login } from "./helpers/cli.js";
import { freePort } from "./helpers/ports.js";
import { testProxy } from "./helpers/doctor_proxy.js";
import { request } from "./helpers/server.js";
import type { Transport } from "../src/cli/doctor/context.js";
import type { DoctorReport } from "../src/cli/doctor/report.js";
import { configFromObject } from "../src/config/load.js";
import { RtcService } from "../src/services/rtc.js";

const TURN_SECRET = "doctor-turn-secret";
if (!haveCoturn && process.env.CI) throw new Error("coturn (turnserver) is not installed; CI is set, so the TURN cases must run");

/** The one failure a fault must cause, and what its cause and fix must say. */
function onlyFailure(report: DoctorReport, id: string, cause: RegExp, fix: RegExp): void {
  const failed = failures(report);
  assert.deepEqual(failed.map((c) => c.id), [id], dump(report));
  assert.match(failed[0]!.cause ?? "", cause);
  assert.match(failed[0]!.fix ?? "", fix);
}

const status = (report: DoctorReport, id: string) => report.checks.find((c) => c.id === id)?.status;

describe("switchboard doctor against Switchboard", { timeout: 300_000 }, () => {
  const sfu = new FakeSfu();
  let sfuUrl: string;
  let coturn: { port: number; stop(): void } | undefined;
  const servers: DoctorServer[] = [];
  const start = async (overrides: Record<string, unknown>, resources?: string[]) => {
    const s = await startDoctorServer(overrides, resources);
    servers.push(s);
    return s;
  };
  const turnConfig = (secret = TURN_SECRET) =>
    coturn
      ? {
          // The third names no transport, so it is tried over UDP and TCP both.
          turn_uris: [`turn:127.0.0.1:${coturn.port}?transport=udp`, `turn:127.0.0.1:${coturn.port}?transport=tcp`, `turn:127.0.0.1:${coturn.port}`],
          turn_shared_secret: secret,
        }
      : {};

  before(async () => {
    sfuUrl = await sfu.start();
    if (haveCoturn) coturn = await startCoturn(TURN_SECRET);
  });
  after(async () => {
    for (const s of servers) await s.server.stop();
    await sfu.stop();
    coturn?.stop();
  });

  test("configured well, every check passes", async () => {
    const target = await start({ ...livekitBlock(sfuUrl), ...turnConfig() });
    const report = await doctorOn(target);
    assert.deepEqual(failures(report), [], dump(report));
    // Sliding sync is not Switchboard's yet; TURN warns only where coturn is missing.
    const allowedWarnings = new Set(["feature.simplified_msc3575", ...(coturn ? [] : ["turn"])]);
    for (const c of report.checks) {
      if (c.status === "warn") assert.ok(allowedWarnings.has(c.id), `unexpected warning ${c.id}: ${c.got}`);
      assert.notEqual(c.status, "skip", `skipped ${c.id}: ${c.got}`);
    }
    for (const id of ["well-known", "well-known.cors", "well-known.rtc_foci", "versions", "versions.cors", "feature.msc4143", "feature.msc4140",
      "feature.msc4354", "feature.msc4222", "login", "room", "rtc-transports.unstable", "rtc-transports.v1", "rtc-transports.well-known",
      "openid", "openid.userinfo", "livekit.1.healthz", "livekit.1.service-cors", "livekit.1.service-token", "livekit.1.sfu", "livekit.1.sfu-auth",
      "livekit.1.sfu-ws", "delayed-events", "sticky-events", "state-after", "cleanup"]) {
      assert.equal(status(report, id), "pass", `${id}\n${dump(report)}`);
    }
    if (coturn) for (const id of ["turn", "turn.1", "turn.2", "turn.3.udp", "turn.3.tcp"]) assert.equal(status(report, id), "pass", dump(report));
    assert.equal(report.mutates, true);
    assert.ok(sfu.validated.length > 0, "the SFU saw the token");
    assert.ok(sfu.opened.length > 0, "the doctor opened the SFU's WebSocket");
    // It left its room and logged its device out: the account is as it was.
    const session = await login(target.baseUrl, target.user, PASSWORD);
    const token = session.body.access_token as string;
    assert.deepEqual((await request(target.baseUrl, "GET", "/_matrix/client/v3/joined_rooms", { token })).body, { joined_rooms: [] });
    const devices = (await request(target.baseUrl, "GET", "/_matrix/client/v3/devices", { token })).body.devices as { display_name?: string }[];
    assert.ok(!devices.some((d) => d.display_name === "switchboard doctor"), JSON.stringify(devices));
    assert.match(report.checks.find((c) => c.id === "delayed-events")!.got, /; max delay 24 h \(\/capabilities\)$/);
    // Nothing secret in the report: the password never, tokens only as their first characters.
    const text = JSON.stringify(report);
    assert.doesNotMatch(text, /doctor test password/);
    assert.doesNotMatch(text, /eyJ[A-Za-z0-9_-]{12,}/);
    assert.doesNotMatch(text, /undefined/);
  });

  test("without credentials it changes nothing and says what it skipped", async () => {
    const target = await start(livekitBlock(sfuUrl));
    const report = await doctorOn(target, { user: undefined, password: undefined });
    assert.deepEqual(failures(report), [], dump(report));
    assert.equal(report.mutates, false);
    assert.match(report.notes.join(" "), /nothing on the server is changed/);
    assert.equal(status(report, "login"), "skip");
    assert.match(report.checks.find((c) => c.id === "rtc-transports.unstable")!.got, /needs an access token/);
    assert.equal(status(report, "delayed-events"), "skip");
    assert.equal(status(report, "well-known.rtc_foci"), "pass");
    assert.doesNotMatch(JSON.stringify(report), /undefined/);
  });

  test("no transports: rtc/transports fails, with the fix", async () => {
    const report = await doctorOn(await start({}));
    onlyFailure(report, "rtc-transports.unstable", /No transport is configured/, /livekit block|matrix_rtc\.transports/);
  });

  test("msc4143 off: the /versions flag fails, and the transport checks say why they skipped", async () => {
    const report = await doctorOn(await start({ ...livekitBlock(sfuUrl), experimental_features: { msc4143_enabled: false } }));
    onlyFailure(report, "feature.msc4143", /transport discovery/, /msc4143_enabled/);
    assert.equal(status(report, "rtc-transports.unstable"), "skip");
  });

  test("a .well-known without CORS behind a proxy", async () => {
    const target = await start(livekitBlock(sfuUrl));
    const proxy = await corsProxy(() => target.baseUrl, "strip");
    try {
      const report = await doctorOn(target, { server: proxy.name });
      onlyFailure(report, "well-known.cors", /MISSING_MATRIX_RTC_FOCUS/, /Access-Control-Allow-Origin: \*/);
      assert.match(report.checks.find((c) => c.id === "well-known.cors")!.got, /no Access-Control-Allow-Origin/);
    } finally {
      await proxy.close();
    }
  });

  test("a proxy that adds a second CORS header", async () => {
    const target = await start(livekitBlock(sfuUrl));
    const proxy = await corsProxy(() => target.baseUrl, "double");
    try {
      const report = await doctorOn(target, { server: proxy.name });
      onlyFailure(report, "well-known.cors", /Both the reverse proxy and the homeserver/, /add_header/);
    } finally {
      await proxy.close();
    }
  });

  test("a proxy in front of the JWT service that drops its CORS headers", async () => {
    let upstream = "";
    const proxy = await corsProxy(() => upstream, "strip", "/livekit/jwt/");
    try {
      // The bundled service twice: as itself (#1), and listed again behind the proxy (#2).
      const target = await start({ ...livekitBlock(sfuUrl), matrix_rtc: { transports: [{ type: "livekit", livekit_service_url: `http://${proxy.name}/livekit/jwt` }] } });
      upstream = target.baseUrl;
      const report = await doctorOn(target);
      onlyFailure(report, "livekit.2.service-cors", /reverse proxy in front of the JWT service/, /Pass OPTIONS through/);
      assert.equal(status(report, "livekit.1.service-cors"), "pass");
      assert.equal(status(report, "livekit.2.service-token"), "pass", dump(report));
    } finally {
      await proxy.close();
    }
  });

  test("a LiveKit secret the SFU does not have", async () => {
    const report = await doctorOn(await start(livekitBlock(sfuUrl, "not-the-sfu-secret-0123456789-abcdefgh")));
    onlyFailure(report, "livekit.1.sfu-auth", /differ from the SFU's keys/, /api_secret/);
    assert.equal(status(report, "livekit.1.service-token"), "skip");
  });

  test("an unreachable SFU", async () => {
    const closed = await freePort();
    const report = await doctorOn(await start(livekitBlock(`ws://127.0.0.1:${closed}`)));
    onlyFailure(report, "livekit.1.sfu", /cannot open the SFU's WebSocket|cannot reach the SFU/, /livekit\.url/);
  });

  test("lk-jwt-service that cannot create the room: its keys or LIVEKIT_URL are named", async () => {
    let homeserver = "";
    const closed = await freePort();
    const wrongSecret = new FakeJwtService(() => homeserver, sfuUrl, { secret: "not-the-sfu-secret-0123456789-abcdefgh" });
    const noSfu = new FakeJwtService(() => homeserver, sfuUrl, { apiUrl: `http://127.0.0.1:${closed}` });
    const services = [wrongSecret, noSfu];
    try {
      for (const service of services) {
        const serviceUrl = await service.start();
        // #1 the bundled service; #2 lk-jwt-service alone; #3 the SFU's url with lk-jwt-service, so the homeserver's token vouches for the SFU.
        const target = await start({
          ...livekitBlock(sfuUrl),
          matrix_rtc: { transports: [{ type: "livekit", livekit_service_url: serviceUrl }, { type: "livekit", url: sfuUrl, livekit_service_url: serviceUrl }] },
        });
        homeserver = target.baseUrl;
        const report = await doctorOn(target);
        assert.deepEqual(failures(report).map((c) => c.id), ["livekit.2.service-token", "livekit.3.service-token"], dump(report));
        for (const id of ["livekit.2.service-token", "livekit.3.service-token"]) {
          const c = report.checks.find((x) => x.id === id)!;
          assert.equal(c.got, '500 M_UNKNOWN "Unable to create room on SFU"');
          assert.match(c.cause!, /LIVEKIT_KEY\/LIVEKIT_SECRET of the JWT service differ from the SFU's keys, or the service cannot reach LIVEKIT_URL/);
          assert.match(c.fix!, /LIVEKIT_KEY and LIVEKIT_SECRET .* LIVEKIT_URL/);
        }
        assert.doesNotMatch(report.checks.find((c) => c.id === "livekit.2.service-token")!.cause!, /accepts/);
        assert.match(report.checks.find((c) => c.id === "livekit.3.service-token")!.cause!, /the SFU accepts the homeserver's token, so the SFU itself is fine/);
        for (const id of ["livekit.1.service-token", "livekit.2.healthz", "livekit.2.service-cors", "livekit.3.hs-token", "livekit.3.sfu-auth", "livekit.3.sfu-ws"]) {
          assert.equal(status(report, id), "pass", `${id}\n${dump(report)}`);
        }
      }
    } finally {
      for (const service of services) await service.stop();
    }
  });

  test("a proxy in front of the SFU that does not pass WebSocket upgrades", async () => {
    const proxy = await noUpgradeProxy(() => sfuUrl.replace(/^ws/, "http"));
    try {
      const opened = sfu.opened.length;
      const report = await doctorOn(await start(livekitBlock(`ws://${proxy.name}`)));
      onlyFailure(report, "livekit.1.sfu-ws", /the proxy in front of the SFU does not pass WebSocket upgrades/, /proxy_set_header Upgrade/);
      const ws = report.checks.find((c) => c.id === "livekit.1.sfu-ws")!;
      assert.match(ws.got, /^400 .*instead of 101$/);
      assert.match(ws.asked, /^WebSocket upgrade to ws:\/\/127\.0\.0\.1:\d+\/rtc\?access_token=eyJ[^&]{0,6}…, closed at once$/);
      // /rtc/validate got through the proxy; the WebSocket never reached the SFU.
      assert.equal(status(report, "livekit.1.sfu-auth"), "pass", dump(report));
      assert.equal(sfu.opened.length, opened);
      assert.doesNotMatch(JSON.stringify(report), /eyJ[A-Za-z0-9_-]{12,}/);
    } finally {
      await proxy.close();
    }
  });

  test("a TURN secret coturn does not share", { skip: haveCoturn ? false : "coturn is not installed (.ci/run installs it; set CI to make this a failure)" }, async () => {
    const report = await doctorOn(await start({ ...livekitBlock(sfuUrl), ...turnConfig("a-different-secret") }));
    const failed = failures(report);
    assert.deepEqual(failed.map((c) => c.id), ["turn.1", "turn.2", "turn.3.udp", "turn.3.tcp"], dump(report));
    for (const c of failed) {
      assert.match(c.got, /^401/);
      assert.match(c.cause!, /turn_shared_secret differs/);
      assert.match(c.fix!, /static-auth-secret/);
    }
  });

  test("delayed events off", async () => {
    const report = await doctorOn(await start({ ...livekitBlock(sfuUrl), experimental_features: { msc4140_enabled: false } }));
    onlyFailure(report, "feature.msc4140", /delayed events/, /msc4140_enabled/);
    assert.equal(status(report, "delayed-events"), "skip");
  });

  test("no maximum delay in /capabilities: read from the refusal of a 10-year delay, or none when it is accepted (and cancelled)", async () => {
    // A proxy serves /capabilities without the delayed-events entry; SERVER is its base URL, so every client request passes it.
    let upstream = "";
    const strip = (body: unknown) => {
      const caps = (body as { capabilities: Record<string, unknown> }).capabilities;
      delete caps["org.matrix.msc4140.delayed_events"];
      delete caps["m.delayed_events"];
      return body;
    };
    const proxy = await testProxy(() => upstream, { rewrite: { path: "/_matrix/client/v3/capabilities", json: strip } });
    try {
      for (const [max, expected] of [
        ["2h", /; max delay 2 h \(not in \/capabilities; from the refusal of a 10-year delay: 403 M_MAX_DELAY_EXCEEDED\)$/],
        ["20y", /; no maximum: not in \/capabilities, and a 10-year delay was accepted \(and cancelled at once\)$/],
      ] as const) {
        const target = await start({ ...livekitBlock(sfuUrl), max_event_delay_duration: max });
        upstream = target.baseUrl;
        const report = await doctorOn(target, { server: `http://${proxy.name}` });
        assert.deepEqual(failures(report), [], dump(report));
        assert.match(report.checks.find((c) => c.id === "delayed-events")!.got, expected, dump(report));
        // The user's server name is not the proxy's host: its .well-known is checked too, and names the other base URL.
        const atName = report.checks.find((c) => c.id === "well-known.server-name")!;
        assert.equal(atName.status, "warn", dump(report));
        assert.equal(atName.got, `200, base_url ${target.baseUrl}, not http://${proxy.name} as given`);
        // Nothing stays scheduled: the probe was refused, or cancelled at once.
        const token = (await login(target.baseUrl, target.user, PASSWORD)).body.access_token as string;
        const scheduled = await request(target.baseUrl, "GET", "/_matrix/client/v1/delayed_events?status=scheduled", { token });
        assert.deepEqual(scheduled.body.delayed_events, [], JSON.stringify(scheduled.body));
      }
    } finally {
      await proxy.close();
    }
  });

  test("the OpenID userinfo endpoint not served", async () => {
    const report = await doctorOn(await start(livekitBlock(sfuUrl), ["client"]));
    onlyFailure(report, "openid.userinfo", /userinfo path is not served/, /federation or openid/);
    // The bundled service checks its own users in process, so their tokens still work.
    assert.equal(status(report, "livekit.1.service-token"), "pass");
  });

  test("--config: what is served against what is configured", async () => {
    const overrides = livekitBlock(sfuUrl);
    const target = await start(overrides);
    // What this config makes Switchboard serve, computed as `doctor --config` does.
    const { config } = configFromObject({ server_name: target.name, public_baseurl: `${target.baseUrl}/`, ...overrides });
    const served = new RtcService(config).transports() as Transport[];
    const same = await doctorOn(target, {}, { file: "switchboard.yaml", transports: served });
    assert.equal(status(same, "config.transports"), "pass", dump(same));
    const other = await doctorOn(target, {}, { file: "switchboard.yaml", transports: [...served, { type: "livekit", livekit_service_url: "https://rtc.example.com" }] });
    onlyFailure(other, "config.transports", /different server|restarted/, /reverse proxy/);
    assert.match(other.checks.find((c) => c.id === "config.transports")!.got, /gives 2 transports, but the public URL serves 1/);
  });
});
