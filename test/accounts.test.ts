/**
 * Accounts with a real Matrix client (matrix-js-sdk): registration through
 * UIA, login, whoami, logout, a second device, password changes; and the
 * `/login` and `/logout/all` error cases over plain HTTP.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { MatrixClient } from "matrix-js-sdk";
import { loadSdk } from "./helpers/matrix-sdk.js";
import { registerUser, request, startServer, type Reply, type TestServer } from "./helpers/server.js";

type Sdk = Awaited<ReturnType<typeof loadSdk>>;

const PASSWORD = "correct horse battery staple";
const LOGIN = "/_matrix/client/v3/login";
const WHOAMI = "/_matrix/client/v3/account/whoami";

function assertError(res: Reply, status: number, errcode: string): void {
  assert.equal(res.status, status, `expected ${status} ${errcode}, got ${res.status} ${JSON.stringify(res.body)}`);
  assert.equal(res.body.errcode, errcode);
}

/** Asserts that an SDK call fails with this status and errcode; returns the error's JSON body. */
async function sdkRejects(call: Promise<unknown>, status: number, errcode: string | undefined): Promise<Record<string, unknown>> {
  let body: Record<string, unknown> = {};
  await assert.rejects(call, (err: unknown) => {
    const e = err as { httpStatus?: number; errcode?: string; data?: Record<string, unknown> };
    assert.equal(e.httpStatus, status, String(err));
    assert.equal(e.errcode, errcode);
    body = e.data ?? {};
    return true;
  });
  return body;
}

function passwordAuth(user: string, password: string, session?: string) {
  return { type: "m.login.password", identifier: { type: "m.id.user", user }, password, ...(session ? { session } : {}) };
}

function passwordLogin(user: string, password: string, extra: Record<string, unknown> = {}) {
  return { type: "m.login.password", identifier: { type: "m.id.user", user }, password, ...extra };
}

let server: TestServer;
let sdk: Sdk;

function clientFor(login: { access_token?: string; user_id: string; device_id?: string }): MatrixClient {
  return sdk.createClient({ baseUrl: server.baseUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
}

before(async () => {
  [server, sdk] = await Promise.all([startServer(), loadSdk()]);
});
after(async () => server?.stop());

describe("with matrix-js-sdk", () => {
  test("registers through the UIA dummy flow, logs in, calls whoami and logs out", async () => {
    const anon = sdk.createClient({ baseUrl: server.baseUrl });
    const uia = await sdkRejects(anon.registerRequest({ username: "sdkuser", password: PASSWORD }), 401, undefined);
    assert.deepEqual(uia.flows, [{ stages: ["m.login.dummy"] }]);
    assert.deepEqual(uia.params, {});
    assert.equal(typeof uia.session, "string");

    const reg = await anon.registerRequest({
      username: "sdkuser",
      password: PASSWORD,
      initial_device_display_name: "SDK registration",
      auth: { type: "m.login.dummy", session: uia.session as string },
    });
    assert.equal(reg.user_id, "@sdkuser:localhost");
    assert.equal(typeof reg.access_token, "string");
    assert.equal(typeof reg.device_id, "string");
    assert.deepEqual(await clientFor(reg).whoami(), { user_id: "@sdkuser:localhost", device_id: reg.device_id, is_guest: false });

    const login = await anon.loginRequest(passwordLogin("sdkuser", PASSWORD));
    assert.equal(login.user_id, "@sdkuser:localhost");
    assert.notEqual(login.device_id, reg.device_id);
    assert.notEqual(login.access_token, reg.access_token);
    const client = clientFor(login);
    assert.deepEqual(await client.whoami(), { user_id: "@sdkuser:localhost", device_id: login.device_id, is_guest: false });

    assert.deepEqual(await client.logout(), {});
    const gone = await sdkRejects(client.whoami(), 401, "M_UNKNOWN_TOKEN");
    assert.equal(gone.soft_logout, false);
    // The device went with the token; the registration's session is untouched.
    const devices = await clientFor(reg).getDevices();
    assert.deepEqual(
      devices.devices.map((d) => d.device_id),
      [reg.device_id],
    );
  });

  test("logs in a second device; both tokens work and both devices are listed", async () => {
    await registerUser(server.baseUrl, "twodevices");
    const anon = sdk.createClient({ baseUrl: server.baseUrl });
    const first = await anon.loginRequest(passwordLogin("twodevices", PASSWORD, { initial_device_display_name: "Laptop" }));
    const second = await anon.loginRequest(passwordLogin("twodevices", PASSWORD, { initial_device_display_name: "Phone" }));
    assert.notEqual(first.device_id, second.device_id);
    assert.equal((await clientFor(first).whoami()).device_id, first.device_id);
    assert.equal((await clientFor(second).whoami()).device_id, second.device_id);
    const { devices } = await clientFor(second).getDevices();
    const names = new Map(devices.map((d) => [d.device_id, d.display_name]));
    assert.equal(names.get(first.device_id), "Laptop");
    assert.equal(names.get(second.device_id), "Phone");
  });

  test("a password change logs out the other devices, keeps this one, and swaps the password", async () => {
    await registerUser(server.baseUrl, "changer");
    const anon = sdk.createClient({ baseUrl: server.baseUrl });
    const main = clientFor(await anon.loginRequest(passwordLogin("changer", PASSWORD, { device_id: "MAIN" })));
    const other = clientFor(await anon.loginRequest(passwordLogin("changer", PASSWORD)));
    // A second token on the current device is one of the "other access tokens" too.
    const sibling = clientFor(await anon.loginRequest(passwordLogin("changer", PASSWORD, { device_id: "MAIN" })));
    assert.equal((await sibling.whoami()).device_id, "MAIN");

    const uia = await sdkRejects(main.setPassword({}, "new password 1"), 401, undefined);
    assert.deepEqual(uia.flows, [{ stages: ["m.login.password"] }]);
    assert.deepEqual(uia.params, {});
    assert.equal(typeof uia.session, "string");

    // A wrong current password is refused inside UIA, with the flows again.
    const wrong = await sdkRejects(main.setPassword(passwordAuth("changer", "wrong", uia.session as string), "new password 1"), 401, "M_FORBIDDEN");
    assert.deepEqual(wrong.flows, [{ stages: ["m.login.password"] }]);

    assert.deepEqual(await main.setPassword(passwordAuth("changer", PASSWORD, wrong.session as string), "new password 1"), {});
    assert.deepEqual(await main.whoami(), { user_id: "@changer:localhost", device_id: "MAIN", is_guest: false });
    await sdkRejects(other.whoami(), 401, "M_UNKNOWN_TOKEN");
    await sdkRejects(sibling.whoami(), 401, "M_UNKNOWN_TOKEN");
    assert.deepEqual(
      (await main.getDevices()).devices.map((d) => d.device_id),
      ["MAIN"],
    );

    await sdkRejects(anon.loginRequest(passwordLogin("changer", PASSWORD)), 403, "M_FORBIDDEN");
    const again = await anon.loginRequest(passwordLogin("changer", "new password 1"));
    assert.equal(again.user_id, "@changer:localhost");
  });

  test("a password change with logout_devices false keeps the other devices", async () => {
    await registerUser(server.baseUrl, "keeper");
    const anon = sdk.createClient({ baseUrl: server.baseUrl });
    const main = clientFor(await anon.loginRequest(passwordLogin("keeper", PASSWORD)));
    const other = clientFor(await anon.loginRequest(passwordLogin("keeper", PASSWORD)));
    await changePassword(main, "keeper", PASSWORD, "new password 3", false);
    assert.equal((await other.whoami()).user_id, "@keeper:localhost");
    assert.equal((await main.getDevices()).devices.length, 3);
    await sdkRejects(anon.loginRequest(passwordLogin("keeper", PASSWORD)), 403, "M_FORBIDDEN");
    assert.equal((await anon.loginRequest(passwordLogin("keeper", "new password 3"))).user_id, "@keeper:localhost");
  });
});

/** Runs the two UIA steps of a password change. */
async function changePassword(client: MatrixClient, user: string, oldPw: string, newPw: string, logoutDevices?: boolean) {
  const uia = await sdkRejects(client.setPassword({}, newPw, logoutDevices), 401, undefined);
  assert.deepEqual(await client.setPassword(passwordAuth(user, oldPw, uia.session as string), newPw, logoutDevices), {});
}

describe("login", () => {
  let alice: { user_id: string; access_token: string; device_id: string };
  before(async () => {
    alice = await registerUser(server.baseUrl, "alice");
  });

  test("GET /login offers m.login.password", async () => {
    const res = await request(server.baseUrl, "GET", LOGIN);
    assert.equal(res.status, 200);
    assert.ok((res.body.flows as { type: string }[]).some((f) => f.type === "m.login.password"));
  });

  test("accepts the m.id.user identifier, the legacy user field and a full user ID", async () => {
    for (const body of [
      passwordLogin("alice", PASSWORD),
      { type: "m.login.password", user: "alice", password: PASSWORD },
      passwordLogin("@alice:localhost", PASSWORD),
      { type: "m.login.password", user: "@alice:localhost", password: PASSWORD },
    ]) {
      const res = await request(server.baseUrl, "POST", LOGIN, { body });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.user_id, "@alice:localhost");
      assert.equal(res.body.home_server, "localhost");
      assert.equal(typeof res.body.access_token, "string");
      assert.equal(typeof res.body.device_id, "string");
      const who = await request(server.baseUrl, "GET", WHOAMI, { token: res.body.access_token as string });
      assert.deepEqual(who.body, { user_id: "@alice:localhost", device_id: res.body.device_id, is_guest: false });
    }
  });

  test("honours device_id and initial_device_display_name", async () => {
    const res = await request(server.baseUrl, "POST", LOGIN, {
      body: passwordLogin("alice", PASSWORD, { device_id: "ALICEDESK", initial_device_display_name: "Desk" }),
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.device_id, "ALICEDESK");
    const dev = await request(server.baseUrl, "GET", "/_matrix/client/v3/devices/ALICEDESK", { token: alice.access_token });
    assert.equal(dev.status, 200);
    assert.equal(dev.body.display_name, "Desk");
    // Logging in again to a known device keeps its name, as the spec says.
    const again = await request(server.baseUrl, "POST", LOGIN, {
      body: passwordLogin("alice", PASSWORD, { device_id: "ALICEDESK", initial_device_display_name: "Renamed?" }),
    });
    assert.equal(again.body.device_id, "ALICEDESK");
    const kept = await request(server.baseUrl, "GET", "/_matrix/client/v3/devices/ALICEDESK", { token: alice.access_token });
    assert.equal(kept.body.display_name, "Desk");
  });

  test("a wrong password is 403 M_FORBIDDEN", async () => {
    assertError(await request(server.baseUrl, "POST", LOGIN, { body: passwordLogin("alice", "wrong") }), 403, "M_FORBIDDEN");
  });

  test("an unknown user is 403 M_FORBIDDEN", async () => {
    assertError(await request(server.baseUrl, "POST", LOGIN, { body: passwordLogin("nobody", PASSWORD) }), 403, "M_FORBIDDEN");
    assertError(
      await request(server.baseUrl, "POST", LOGIN, { body: passwordLogin("@alice:elsewhere.example", PASSWORD) }),
      403,
      "M_FORBIDDEN",
    );
  });

  test("an unknown login type is 400 M_UNKNOWN", async () => {
    assertError(
      await request(server.baseUrl, "POST", LOGIN, { body: { type: "m.login.magic", user: "alice", password: PASSWORD } }),
      400,
      "M_UNKNOWN",
    );
  });

  test("a login without user or password is 400 M_MISSING_PARAM", async () => {
    assertError(await request(server.baseUrl, "POST", LOGIN, { body: { type: "m.login.password", password: PASSWORD } }), 400, "M_MISSING_PARAM");
    assertError(await request(server.baseUrl, "POST", LOGIN, { body: { type: "m.login.password", user: "alice" } }), 400, "M_MISSING_PARAM");
  });
});

describe("logout", () => {
  test("POST /logout needs a token", async () => {
    assertError(await request(server.baseUrl, "POST", "/_matrix/client/v3/logout"), 401, "M_MISSING_TOKEN");
  });

  test("POST /logout/all kills every token of the user, and only theirs", async () => {
    const bystander = await registerUser(server.baseUrl, "bystander");
    const first = await registerUser(server.baseUrl, "leaver");
    const second = await request(server.baseUrl, "POST", LOGIN, { body: passwordLogin("leaver", PASSWORD) });
    assert.equal(second.status, 200);
    const res = await request(server.baseUrl, "POST", "/_matrix/client/v3/logout/all", { token: first.access_token, body: {} });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, {});
    for (const token of [first.access_token, second.body.access_token as string]) {
      const who = await request(server.baseUrl, "GET", WHOAMI, { token });
      assertError(who, 401, "M_UNKNOWN_TOKEN");
      assert.equal(who.body.soft_logout, false);
    }
    assert.equal((await request(server.baseUrl, "GET", WHOAMI, { token: bystander.access_token })).status, 200);
    // The user can still log in afterwards.
    assert.equal((await request(server.baseUrl, "POST", LOGIN, { body: passwordLogin("leaver", PASSWORD) })).status, 200);
  });
});
