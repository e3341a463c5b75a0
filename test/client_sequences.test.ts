/**
 * The request sequences real call clients make against a homeserver, in
 * order, with the CORS checks a browser applies to each step.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { registerUser, request, type Reply, startServer, type TestServer } from "./helpers/server.js";

const ORIGIN = "https://call.example.org";
const LIVEKIT = { type: "livekit", livekit_service_url: "https://livekit-jwt.example.org" };

function browserAllows(res: Reply): void {
  assert.equal(res.headers.get("access-control-allow-origin"), "*", "the browser needs CORS on this response");
}

/** What a browser sends before any request that carries an Authorization header. */
async function preflight(server: TestServer, method: string, path: string): Promise<void> {
  const res = await request(server.baseUrl, "OPTIONS", path, {
    headers: { origin: ORIGIN, "access-control-request-method": method, "access-control-request-headers": "authorization,content-type" },
  });
  assert.equal(res.status, 200);
  browserAllows(res);
  assert.match(res.headers.get("access-control-allow-methods") ?? "", new RegExp(method));
  assert.match(res.headers.get("access-control-allow-headers") ?? "", /Authorization/);
  assert.match(res.headers.get("access-control-allow-headers") ?? "", /Content-Type/);
}

describe("client sequences", () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ matrix_rtc: { transports: [LIVEKIT] } });
  });
  after(async () => server?.stop());

  test("Element Call as a single-page app: versions → transports → OpenID token → userinfo", async () => {
    const user = await registerUser(server.baseUrl, "ecspa");
    const headers = { origin: ORIGIN };

    const versions = await request(server.baseUrl, "GET", "/_matrix/client/versions", { headers });
    assert.equal(versions.status, 200);
    browserAllows(versions);

    const transportsPath = "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports";
    await preflight(server, "GET", transportsPath);
    const transports = await request(server.baseUrl, "GET", transportsPath, { token: user.access_token, headers });
    assert.equal(transports.status, 200);
    browserAllows(transports);
    assert.deepEqual(transports.body.rtc_transports, [LIVEKIT]);

    const openIdPath = `/_matrix/client/v3/user/${encodeURIComponent(user.user_id)}/openid/request_token`;
    await preflight(server, "POST", openIdPath);
    const openid = await request(server.baseUrl, "POST", openIdPath, { token: user.access_token, body: {}, headers });
    assert.equal(openid.status, 200);
    browserAllows(openid);

    // The JWT service, given the OpenID token, asks the homeserver who it belongs to.
    const userinfo = await request(
      server.baseUrl,
      "GET",
      `/_matrix/federation/v1/openid/userinfo?access_token=${encodeURIComponent(openid.body.access_token as string)}`,
    );
    assert.equal(userinfo.status, 200);
    assert.deepEqual(userinfo.body, { sub: user.user_id });
    assert.equal((userinfo.body.sub as string).split(":")[1], openid.body.matrix_server_name);
  });

  test("a widget client (no access token) gets 401 M_MISSING_TOKEN from transport discovery, by design", async () => {
    for (const path of ["/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", "/_matrix/client/v1/rtc/transports"]) {
      const res = await request(server.baseUrl, "GET", path, { headers: { origin: ORIGIN } });
      assert.equal(res.status, 401);
      assert.equal(res.body.errcode, "M_MISSING_TOKEN");
      browserAllows(res);
    }
  });

  test("an older Element X or Element Web reads rtc_foci from .well-known, across origins", async () => {
    const res = await request(server.baseUrl, "GET", "/.well-known/matrix/client", { headers: { origin: "https://app.element.io" } });
    assert.equal(res.status, 200);
    browserAllows(res);
    assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
    assert.deepEqual(res.body["org.matrix.msc4143.rtc_foci"], [LIVEKIT]);
  });
});
