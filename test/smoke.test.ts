import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { loadSdk } from "./helpers/matrix-sdk.js";
import { registerUser, request, startServer, type TestServer } from "./helpers/server.js";

let server: TestServer;
before(async () => {
  server = await startServer();
});
after(async () => server?.stop());

test("versions answers", async () => {
  const res = await request(server.baseUrl, "GET", "/_matrix/client/versions");
  assert.equal(res.status, 200);
  assert.ok(Array.isArray(res.body.versions));
});

test("matrix-js-sdk logs in and calls whoami", async () => {
  await registerUser(server.baseUrl, "smoke");
  const sdk = await loadSdk();
  const client = sdk.createClient({ baseUrl: server.baseUrl });
  const login = await client.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: "smoke" }, password: "correct horse battery staple" });
  const authed = sdk.createClient({ baseUrl: server.baseUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
  const who = await authed.whoami();
  assert.equal(who.user_id, "@smoke:localhost");
});
