/** MSC4143 transport discovery, `/versions` and `.well-known`: reference §1 and §2. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { loadSdk } from "./helpers/matrix-sdk.js";
import { registerUser, request, startServer, type TestServer } from "./helpers/server.js";

const UNSTABLE = "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports";
const STABLE = "/_matrix/client/v1/rtc/transports";
const LIVEKIT = { type: "livekit", livekit_service_url: "https://livekit-jwt.example.com" };
// Synapse's own test entry: an unknown type with its fields passed through as written.
const FOCUS_A = { type: "focusA", required_field: "theField" };

describe("rtc/transports with transports configured", () => {
  let server: TestServer;
  let token: string;
  before(async () => {
    server = await startServer({ matrix_rtc: { transports: [LIVEKIT, FOCUS_A] }, allow_guest_access: true });
    token = (await registerUser(server.baseUrl, "rtcuser")).access_token;
  });
  after(async () => server?.stop());

  for (const path of [UNSTABLE, STABLE]) {
    test(`${path} lists the transports in configured order`, async () => {
      const res = await request(server.baseUrl, "GET", path, { token });
      assert.equal(res.status, 200);
      assert.deepEqual(res.body, { rtc_transports: [LIVEKIT, FOCUS_A] });
      assert.equal(res.headers.get("access-control-allow-origin"), "*");
    });

    test(`${path} without a token is 401 M_MISSING_TOKEN`, async () => {
      const res = await request(server.baseUrl, "GET", path);
      assert.equal(res.status, 401);
      assert.deepEqual(res.body, { errcode: "M_MISSING_TOKEN", error: "Missing access token" });
    });

    test(`${path} with an unknown token is 401 M_UNKNOWN_TOKEN`, async () => {
      const res = await request(server.baseUrl, "GET", path, { token: "sbt_not_a_real_token" });
      assert.equal(res.status, 401);
      assert.deepEqual(res.body, { errcode: "M_UNKNOWN_TOKEN", error: "Unknown or expired access token", soft_logout: false });
    });
  }

  test("guests get the transports too", async () => {
    const reg = await request(server.baseUrl, "POST", "/_matrix/client/v3/register?kind=guest", { body: {} });
    assert.equal(reg.status, 200);
    const res = await request(server.baseUrl, "GET", STABLE, { token: reg.body.access_token as string });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.rtc_transports, [LIVEKIT, FOCUS_A]);
  });

  test("a CORS preflight for the endpoint succeeds", async () => {
    const res = await request(server.baseUrl, "OPTIONS", UNSTABLE, {
      headers: { origin: "https://call.example.com", "access-control-request-headers": "authorization" },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    assert.match(res.headers.get("access-control-allow-headers") ?? "", /Authorization/);
  });

  test("other methods are 405 M_UNRECOGNIZED", async () => {
    const res = await request(server.baseUrl, "POST", STABLE, { token, body: {} });
    assert.equal(res.status, 405);
    assert.deepEqual(res.body, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" });
  });

  test("/.well-known/matrix/client carries the same list as rtc_foci, with CORS", async () => {
    const res = await request(server.baseUrl, "GET", "/.well-known/matrix/client", {
      headers: { origin: "https://app.element.io" },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
    assert.deepEqual(res.body["org.matrix.msc4143.rtc_foci"], [LIVEKIT, FOCUS_A]);
    assert.deepEqual(res.body["m.homeserver"], { base_url: "http://localhost/" });
  });

  test("/.well-known/matrix/client answers OPTIONS", async () => {
    const res = await request(server.baseUrl, "OPTIONS", "/.well-known/matrix/client");
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
  });
});

describe("rtc/transports with nothing configured", () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(async () => server?.stop());

  test("answers an empty list, never a missing key", async () => {
    const { access_token } = await registerUser(server.baseUrl, "empty");
    const res = await request(server.baseUrl, "GET", UNSTABLE, { token: access_token });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { rtc_transports: [] });
  });

  test("well-known has no rtc_foci", async () => {
    const res = await request(server.baseUrl, "GET", "/.well-known/matrix/client");
    assert.equal(res.status, 200);
    assert.equal("org.matrix.msc4143.rtc_foci" in res.body, false);
  });
});

describe("rtc/transports switched off", () => {
  let server: TestServer;
  let token: string;
  before(async () => {
    server = await startServer({
      experimental_features: { msc4143_enabled: false },
      matrix_rtc: { transports: [LIVEKIT] },
      // Hand-written, as Synapse admins do it: switched off with the rest.
      extra_well_known_client_content: { "org.matrix.msc4143.rtc_foci": [LIVEKIT], "io.element.e2ee": { default: true } },
    });
    token = (await registerUser(server.baseUrl, "off")).access_token;
  });
  after(async () => server?.stop());

  for (const path of [UNSTABLE, STABLE]) {
    test(`${path} is 404 M_UNRECOGNIZED`, async () => {
      const res = await request(server.baseUrl, "GET", path, { token });
      assert.equal(res.status, 404);
      assert.deepEqual(res.body, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" });
    });
  }

  test("/.well-known/matrix/client has no rtc_foci either, not even a hand-written one", async () => {
    const res = await request(server.baseUrl, "GET", "/.well-known/matrix/client");
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { "m.homeserver": { base_url: "http://localhost/" }, "io.element.e2ee": { default: true } });
  });

  test("/versions still has the flag, set to false", async () => {
    const res = await request(server.baseUrl, "GET", "/_matrix/client/versions");
    assert.equal((res.body.unstable_features as Record<string, boolean>)["org.matrix.msc4143"], false);
  });
});

describe("well-known settings", () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({
      matrix_rtc: { transports: [LIVEKIT], advertise_in_well_known: false },
      extra_well_known_client_content: {
        "m.homeserver": { base_url: "https://evil.example.com" },
        "io.element.e2ee": { default: true },
      },
    });
  });
  after(async () => server?.stop());

  test("advertise_in_well_known: false leaves rtc_foci out; extra content merges but cannot override m.homeserver", async () => {
    const res = await request(server.baseUrl, "GET", "/.well-known/matrix/client");
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, {
      "m.homeserver": { base_url: "http://localhost/" },
      "io.element.e2ee": { default: true },
    });
  });
});

describe("rate limit", () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({
      matrix_rtc: { transports: [LIVEKIT] },
      rc_rtc_transports: { per_second: 0.001, burst_count: 2 },
    });
  });
  after(async () => server?.stop());

  test("is per user and answers 429 M_LIMIT_EXCEEDED with retry_after_ms", async () => {
    const a = (await registerUser(server.baseUrl, "limited-a")).access_token;
    const b = (await registerUser(server.baseUrl, "limited-b")).access_token;
    for (let i = 0; i < 2; i++) assert.equal((await request(server.baseUrl, "GET", STABLE, { token: a })).status, 200);
    const limited = await request(server.baseUrl, "GET", STABLE, { token: a });
    assert.equal(limited.status, 429);
    assert.deepEqual(Object.keys(limited.body).sort(), ["errcode", "error", "retry_after_ms"]);
    assert.equal(limited.body.errcode, "M_LIMIT_EXCEEDED");
    assert.equal(typeof limited.body.error, "string");
    assert.ok((limited.body.retry_after_ms as number) > 0);
    assert.ok(Number(limited.headers.get("retry-after")) > 0);
    assert.equal((await request(server.baseUrl, "GET", STABLE, { token: b })).status, 200);
  });
});

describe("/versions", () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(async () => server?.stop());

  test("advertises msc4143, is publicly cacheable without a token and varies on Authorization", async () => {
    const res = await request(server.baseUrl, "GET", "/_matrix/client/versions");
    assert.equal(res.status, 200);
    assert.equal((res.body.unstable_features as Record<string, boolean>)["org.matrix.msc4143"], true);
    assert.match(res.headers.get("cache-control") ?? "", /^public/);
    assert.match(res.headers.get("vary") ?? "", /Authorization/i);
  });

  test("its CORS preflight varies on Authorization too", async () => {
    const res = await request(server.baseUrl, "OPTIONS", "/_matrix/client/versions");
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, {});
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    assert.match(res.headers.get("vary") ?? "", /Authorization/i);
  });

  test("validates a token when one is sent", async () => {
    const bad = await request(server.baseUrl, "GET", "/_matrix/client/versions", { token: "sbt_nope" });
    assert.equal(bad.status, 401);
    assert.equal(bad.body.errcode, "M_UNKNOWN_TOKEN");
    assert.match(bad.headers.get("vary") ?? "", /Authorization/i);
    const { access_token } = await registerUser(server.baseUrl, "versions");
    const good = await request(server.baseUrl, "GET", "/_matrix/client/versions", { token: access_token });
    assert.equal(good.status, 200);
    assert.doesNotMatch(good.headers.get("cache-control") ?? "", /public/);
    assert.match(good.headers.get("vary") ?? "", /Authorization/i);
  });

  test("matrix-js-sdk sees msc4143 and the transports", async () => {
    const other = await startServer({ matrix_rtc: { transports: [LIVEKIT] } });
    try {
      const login = await registerUser(other.baseUrl, "sdkrtc");
      const sdk = await loadSdk();
      const client = sdk.createClient({
        baseUrl: other.baseUrl,
        accessToken: login.access_token,
        userId: login.user_id,
        deviceId: login.device_id,
      });
      assert.equal(await client.doesServerSupportUnstableFeature("org.matrix.msc4143"), true);
      assert.deepEqual(await client._unstable_getRTCTransports(), [LIVEKIT]);
    } finally {
      await other.stop();
    }
  });
});
