/** OpenID tokens and the userinfo endpoint the LiveKit JWT service calls: reference §6. */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { removeTestData } from "./helpers/database.js";
import { loadSdk } from "./helpers/matrix-sdk.js";
import { registerUser, request, startServer, type TestServer } from "./helpers/server.js";

const USERINFO = "/_matrix/federation/v1/openid/userinfo";
const requestToken = (userId: string) => `/_matrix/client/v3/user/${encodeURIComponent(userId)}/openid/request_token`;

describe("OpenID", () => {
  let server: TestServer;
  let alice: { user_id: string; access_token: string; device_id: string };
  before(async () => {
    server = await startServer({ server_name: "localhost" });
    alice = await registerUser(server.baseUrl, "alice");
  });
  after(async () => server?.stop());

  test("request_token returns a Bearer token for this server that expires in an hour", async () => {
    const res = await request(server.baseUrl, "POST", requestToken(alice.user_id), { token: alice.access_token, body: {} });
    assert.equal(res.status, 200);
    assert.equal(res.body.token_type, "Bearer");
    assert.equal(res.body.matrix_server_name, "localhost");
    assert.equal(res.body.expires_in, 3600);
    assert.equal(typeof res.body.access_token, "string");
    const info = await request(server.baseUrl, "GET", `${USERINFO}?access_token=${encodeURIComponent(res.body.access_token as string)}`);
    assert.equal(info.status, 200);
    assert.deepEqual(info.body, { sub: alice.user_id });
    assert.equal(info.headers.get("access-control-allow-origin"), "*");
  });

  test("guests get no OpenID token (403 M_GUEST_ACCESS_FORBIDDEN), as in Synapse", async () => {
    const guestServer = await startServer({ server_name: "localhost", allow_guest_access: true });
    try {
      const reg = await request(guestServer.baseUrl, "POST", "/_matrix/client/v3/register?kind=guest", { body: {} });
      assert.equal(reg.status, 200);
      const guest = reg.body as { user_id: string; access_token: string };
      const res = await request(guestServer.baseUrl, "POST", requestToken(guest.user_id), { token: guest.access_token, body: {} });
      assert.equal(res.status, 403);
      assert.deepEqual(res.body, { errcode: "M_GUEST_ACCESS_FORBIDDEN", error: "Guest access is not allowed here" });
    } finally {
      await guestServer.stop();
    }
  });

  test("request_token for another user is 403 M_FORBIDDEN", async () => {
    const res = await request(server.baseUrl, "POST", requestToken("@bob:localhost"), { token: alice.access_token, body: {} });
    assert.equal(res.status, 403);
    assert.deepEqual(res.body, { errcode: "M_FORBIDDEN", error: "Cannot request OpenID tokens for other users" });
  });

  test("request_token without a token is 401 M_MISSING_TOKEN", async () => {
    const res = await request(server.baseUrl, "POST", requestToken(alice.user_id), { body: {} });
    assert.equal(res.status, 401);
    assert.deepEqual(res.body, { errcode: "M_MISSING_TOKEN", error: "Missing access token" });
  });

  test("userinfo without a token is 401 M_MISSING_TOKEN", async () => {
    const res = await request(server.baseUrl, "GET", USERINFO);
    assert.equal(res.status, 401);
    assert.deepEqual(res.body, { errcode: "M_MISSING_TOKEN", error: "Missing access token" });
  });

  test("userinfo with an unknown token is 401 M_UNKNOWN_TOKEN", async () => {
    const res = await request(server.baseUrl, "GET", `${USERINFO}?access_token=forged`);
    assert.equal(res.status, 401);
    // No soft_logout: that field belongs to the client API's own tokens.
    assert.deepEqual(res.body, { errcode: "M_UNKNOWN_TOKEN", error: "Unknown or expired access token" });
  });

  test("a client access token is not an OpenID token", async () => {
    const res = await request(server.baseUrl, "GET", `${USERINFO}?access_token=${alice.access_token}`);
    assert.equal(res.status, 401);
    assert.deepEqual(res.body, { errcode: "M_UNKNOWN_TOKEN", error: "Unknown or expired access token" });
  });

  test("matrix-js-sdk getOpenIdToken, then userinfo, gives the user's sub", async () => {
    const sdk = await loadSdk();
    const client = sdk.createClient({
      baseUrl: server.baseUrl,
      accessToken: alice.access_token,
      userId: alice.user_id,
      deviceId: alice.device_id,
    });
    const openid = await client.getOpenIdToken();
    assert.equal(openid.matrix_server_name, "localhost");
    const info = await request(server.baseUrl, "GET", `${USERINFO}?access_token=${encodeURIComponent(openid.access_token)}`);
    assert.deepEqual(info.body, { sub: alice.user_id });
  });
});

describe("OpenID token expiry and persistence", () => {
  test("a token expires after 3600 s", async () => {
    let now = Date.now();
    const server = await startServer({}, { clock: { now: () => now } });
    try {
      const alice = await registerUser(server.baseUrl, "expiring");
      const res = await request(server.baseUrl, "POST", requestToken(alice.user_id), { token: alice.access_token, body: {} });
      const url = `${USERINFO}?access_token=${encodeURIComponent(res.body.access_token as string)}`;
      now += 3599_000;
      assert.equal((await request(server.baseUrl, "GET", url)).status, 200);
      now += 2_000;
      const expired = await request(server.baseUrl, "GET", url);
      assert.equal(expired.status, 401);
      assert.equal(expired.body.errcode, "M_UNKNOWN_TOKEN");
    } finally {
      await server.stop();
    }
  });

  test("a token survives a restart", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "switchboard-openid-"));
    try {
      const first = await startServer({}, { dir });
      const alice = await registerUser(first.baseUrl, "restarting");
      const res = await request(first.baseUrl, "POST", requestToken(alice.user_id), { token: alice.access_token, body: {} });
      await first.stop();
      const second = await startServer({}, { dir });
      try {
        const info = await request(second.baseUrl, "GET", `${USERINFO}?access_token=${encodeURIComponent(res.body.access_token as string)}`);
        assert.equal(info.status, 200);
        assert.deepEqual(info.body, { sub: alice.user_id });
      } finally {
        await second.stop();
      }
    } finally {
      await removeTestData(dir);
    }
  });
});

describe("listener resources", () => {
  let server: TestServer;
  let urls: string[];
  before(async () => {
    server = await startServer({
      listeners: [
        { port: 0, bind_addresses: ["127.0.0.1"], resources: [{ names: ["client"] }] },
        { port: 0, bind_addresses: ["127.0.0.1"], resources: [{ names: ["openid"] }] },
        { port: 0, bind_addresses: ["127.0.0.1"], resources: [{ names: ["federation"] }] },
      ],
    });
    urls = server.homeserver.urls();
  });
  after(async () => server?.stop());

  test("userinfo is served where openid or federation is, and not on a client-only listener", async () => {
    const [client, openid, federation] = urls as [string, string, string];
    const alice = await registerUser(client, "resources");
    const res = await request(client, "POST", requestToken(alice.user_id), { token: alice.access_token, body: {} });
    const path = `${USERINFO}?access_token=${encodeURIComponent(res.body.access_token as string)}`;
    assert.deepEqual((await request(openid, "GET", path)).body, { sub: alice.user_id });
    assert.deepEqual((await request(federation, "GET", path)).body, { sub: alice.user_id });
    const onClient = await request(client, "GET", path);
    assert.equal(onClient.status, 404);
    assert.equal(onClient.body.errcode, "M_UNRECOGNIZED");
    const versionsOnOpenId = await request(openid, "GET", "/_matrix/client/versions");
    assert.equal(versionsOnOpenId.status, 404);
    assert.equal(versionsOnOpenId.body.errcode, "M_UNRECOGNIZED");
  });
});
