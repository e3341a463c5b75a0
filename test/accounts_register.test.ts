/**
 * Registration over plain HTTP (issue 2, section 6): the UIA 401, names,
 * closed registration, guests, the optional fields, availability, and
 * registration tokens with Synapse's admin API.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { registerUser, request, startServer, type Reply, type TestServer } from "./helpers/server.js";

const PASSWORD = "correct horse battery staple";
const REGISTER = "/_matrix/client/v3/register";
const AVAILABLE = "/_matrix/client/v3/register/available";
const WHOAMI = "/_matrix/client/v3/account/whoami";
const TOKENS = "/_synapse/admin/v1/registration_tokens";
const VALIDITY = "/_matrix/client/v1/register/m.login.registration_token/validity";

function assertError(res: Reply, status: number, errcode: string): void {
  assert.equal(res.status, status, `expected ${status} ${errcode}, got ${res.status} ${JSON.stringify(res.body)}`);
  assert.equal(res.body.errcode, errcode);
}

function assertUia(res: Reply, stages: string[]): string {
  assert.equal(res.status, 401, JSON.stringify(res.body));
  assert.deepEqual(res.body.flows, [{ stages }]);
  assert.ok(typeof res.body.params === "object" && res.body.params !== null && !Array.isArray(res.body.params));
  assert.equal(typeof res.body.session, "string");
  assert.ok((res.body.session as string).length > 0);
  return res.body.session as string;
}

const dummy = (session?: string) => ({ type: "m.login.dummy", ...(session ? { session } : {}) });

let server: TestServer;
before(async () => {
  server = await startServer({ allow_guest_access: true });
});
after(async () => server?.stop());

describe("open registration", () => {
  test("POST /register without auth is 401 with flows, params and session", async () => {
    const empty = await request(server.baseUrl, "POST", REGISTER, { body: {} });
    assertUia(empty, ["m.login.dummy"]);
    assert.deepEqual(empty.body.params, {});
    assert.equal(empty.body.errcode, undefined);
    const named = await request(server.baseUrl, "POST", REGISTER, { body: { username: "uiauser", password: PASSWORD } });
    const session = assertUia(named, ["m.login.dummy"]);
    assert.notEqual(session, empty.body.session);
    // Completing the session registers the user.
    const done = await request(server.baseUrl, "POST", REGISTER, {
      body: { username: "uiauser", password: PASSWORD, auth: dummy(session) },
    });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    assert.equal(done.body.user_id, "@uiauser:localhost");
    assert.equal(done.body.home_server, "localhost");
    assert.equal(typeof done.body.access_token, "string");
    assert.equal(typeof done.body.device_id, "string");
  });

  test("a taken name is 400 M_USER_IN_USE, before and after UIA, whatever its case", async () => {
    await registerUser(server.baseUrl, "taken");
    assertError(await request(server.baseUrl, "POST", REGISTER, { body: { username: "taken", password: PASSWORD } }), 400, "M_USER_IN_USE");
    assertError(
      await request(server.baseUrl, "POST", REGISTER, { body: { username: "TAKEN", password: PASSWORD, auth: dummy() } }),
      400,
      "M_USER_IN_USE",
    );
  });

  test("an invalid name is 400 M_INVALID_USERNAME", async () => {
    for (const username of ["bad!name", "with space", "é", "a:b", "_underscore", "12345", ""]) {
      const res = await request(server.baseUrl, "POST", REGISTER, { body: { username, password: PASSWORD, auth: dummy() } });
      assertError(res, 400, "M_INVALID_USERNAME");
    }
  });

  test("inhibit_login registers without logging in", async () => {
    const res = await request(server.baseUrl, "POST", REGISTER, {
      body: { username: "inhibited", password: PASSWORD, inhibit_login: true, auth: dummy() },
    });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { user_id: "@inhibited:localhost", home_server: "localhost" });
    const login = await request(server.baseUrl, "POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", user: "inhibited", password: PASSWORD },
    });
    assert.equal(login.status, 200);
  });

  test("device_id and initial_device_display_name are honoured", async () => {
    const res = await request(server.baseUrl, "POST", REGISTER, {
      body: { username: "withdevice", password: PASSWORD, device_id: "MYPHONE", initial_device_display_name: "My phone", auth: dummy() },
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.device_id, "MYPHONE");
    const token = res.body.access_token as string;
    const who = await request(server.baseUrl, "GET", WHOAMI, { token });
    assert.deepEqual(who.body, { user_id: "@withdevice:localhost", device_id: "MYPHONE", is_guest: false });
    const device = await request(server.baseUrl, "GET", "/_matrix/client/v3/devices/MYPHONE", { token });
    assert.equal(device.status, 200);
    assert.equal(device.body.device_id, "MYPHONE");
    assert.equal(device.body.display_name, "My phone");
  });

  test("a registration without a username gets a generated one", async () => {
    const res = await request(server.baseUrl, "POST", REGISTER, { body: { password: PASSWORD, auth: dummy() } });
    assert.equal(res.status, 200);
    assert.match(res.body.user_id as string, /^@[0-9]+:localhost$/);
  });

  test("GET /register/available", async () => {
    const free = await request(server.baseUrl, "GET", `${AVAILABLE}?username=freename`);
    assert.equal(free.status, 200);
    assert.deepEqual(free.body, { available: true });
    await registerUser(server.baseUrl, "occupied");
    assertError(await request(server.baseUrl, "GET", `${AVAILABLE}?username=occupied`), 400, "M_USER_IN_USE");
    assertError(await request(server.baseUrl, "GET", `${AVAILABLE}?username=Occupied`), 400, "M_USER_IN_USE");
    assertError(await request(server.baseUrl, "GET", `${AVAILABLE}?username=_bad`), 400, "M_INVALID_USERNAME");
    assertError(await request(server.baseUrl, "GET", `${AVAILABLE}?username=no%21`), 400, "M_INVALID_USERNAME");
    assertError(await request(server.baseUrl, "GET", AVAILABLE), 400, "M_MISSING_PARAM");
  });

  test("the token validity endpoint is 403 M_FORBIDDEN when tokens are not required", async () => {
    assertError(await request(server.baseUrl, "GET", `${VALIDITY}?token=abc`), 403, "M_FORBIDDEN");
  });
});

describe("guests", () => {
  test("kind=guest registers a guest when allow_guest_access is set", async () => {
    const res = await request(server.baseUrl, "POST", `${REGISTER}?kind=guest`, { body: {} });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.match(res.body.user_id as string, /^@[0-9]+:localhost$/);
    const token = res.body.access_token as string;
    const who = await request(server.baseUrl, "GET", WHOAMI, { token });
    assert.equal(who.status, 200);
    assert.deepEqual(who.body, { user_id: res.body.user_id, device_id: res.body.device_id, is_guest: true });
    // Guests are kept out of what the spec does not open to them.
    assertError(await request(server.baseUrl, "GET", "/_matrix/client/v3/devices", { token }), 403, "M_GUEST_ACCESS_FORBIDDEN");
    assertError(
      await request(server.baseUrl, "POST", "/_matrix/client/v3/account/password", { token, body: { new_password: "x" } }),
      403,
      "M_GUEST_ACCESS_FORBIDDEN",
    );
  });

  test("kind=guest is 403 M_FORBIDDEN when allow_guest_access is off", async () => {
    const s = await startServer();
    try {
      assertError(await request(s.baseUrl, "POST", `${REGISTER}?kind=guest`, { body: {} }), 403, "M_FORBIDDEN");
    } finally {
      await s.stop();
    }
  });
});

describe("closed registration", () => {
  test("POST /register is 403 M_FORBIDDEN", async () => {
    const s = await startServer({ enable_registration: false, enable_registration_without_verification: false });
    try {
      assertError(await request(s.baseUrl, "POST", REGISTER, { body: {} }), 403, "M_FORBIDDEN");
      assertError(
        await request(s.baseUrl, "POST", REGISTER, { body: { username: "someone", password: PASSWORD, auth: dummy() } }),
        403,
        "M_FORBIDDEN",
      );
    } finally {
      await s.stop();
    }
  });
});

describe("registration tokens", () => {
  let s: TestServer;
  let adminToken: string;
  let userToken: string;

  before(async () => {
    s = await startServer({ registration_requires_token: true, enable_registration_without_verification: false });
    const { accounts } = s.homeserver.services;
    const [admin, user] = await Promise.all([
      accounts.createUser("boss", PASSWORD, { admin: true, login: true }),
      accounts.createUser("plain", PASSWORD, { admin: false, login: true }),
    ]);
    adminToken = admin.access_token!;
    userToken = user.access_token!;
  });
  after(async () => s.stop());

  const register = (username: string, auth?: Record<string, unknown>) =>
    request(s.baseUrl, "POST", REGISTER, { body: { username, password: PASSWORD, ...(auth ? { auth } : {}) } });

  test("POST /register asks for m.login.registration_token", async () => {
    assertUia(await register("needstoken"), ["m.login.registration_token"]);
    // The dummy stage is not offered here, so it does not get anyone in.
    const res = await register("needstoken", dummy());
    assert.equal(res.status, 401);
    assert.deepEqual(res.body.flows, [{ stages: ["m.login.registration_token"] }]);
  });

  test("a non-admin cannot make tokens: 403 M_FORBIDDEN", async () => {
    assertError(await request(s.baseUrl, "POST", `${TOKENS}/new`, { token: userToken, body: {} }), 403, "M_FORBIDDEN");
    assertError(await request(s.baseUrl, "GET", TOKENS, { token: userToken }), 403, "M_FORBIDDEN");
    assertError(await request(s.baseUrl, "POST", `${TOKENS}/new`, { body: {} }), 401, "M_MISSING_TOKEN");
  });

  test("a bad token is 401 M_UNAUTHORIZED, with the flows", async () => {
    const session = assertUia(await register("badtoken"), ["m.login.registration_token"]);
    const res = await register("badtoken", { type: "m.login.registration_token", token: "not-a-token", session });
    assertError(res, 401, "M_UNAUTHORIZED");
    assert.deepEqual(res.body.flows, [{ stages: ["m.login.registration_token"] }]);
    assert.equal(typeof res.body.session, "string");
  });

  test("an admin-made token registers users until uses_allowed is spent", async () => {
    const made = await request(s.baseUrl, "POST", `${TOKENS}/new`, { token: adminToken, body: { uses_allowed: 1 } });
    assert.equal(made.status, 200, JSON.stringify(made.body));
    const token = made.body.token as string;
    assert.match(token, /^[A-Za-z0-9._~-]{16}$/);
    assert.deepEqual(made.body, { token, uses_allowed: 1, pending: 0, completed: 0, expiry_time: null });

    assert.deepEqual((await request(s.baseUrl, "GET", `${VALIDITY}?token=${token}`)).body, { valid: true });
    assert.deepEqual((await request(s.baseUrl, "GET", `${VALIDITY}?token=unknown`)).body, { valid: false });
    assertError(await request(s.baseUrl, "GET", VALIDITY), 400, "M_MISSING_PARAM");

    const session = assertUia(await register("tokenuser"), ["m.login.registration_token"]);
    const ok = await register("tokenuser", { type: "m.login.registration_token", token, session });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.user_id, "@tokenuser:localhost");
    const who = await request(s.baseUrl, "GET", WHOAMI, { token: ok.body.access_token as string });
    assert.equal(who.body.user_id, "@tokenuser:localhost");

    // Spent: no longer valid, and refused.
    assert.deepEqual((await request(s.baseUrl, "GET", `${VALIDITY}?token=${token}`)).body, { valid: false });
    const again = await register("tokenuser2", { type: "m.login.registration_token", token });
    assertError(again, 401, "M_UNAUTHORIZED");
    const info = await request(s.baseUrl, "GET", `${TOKENS}/${token}`, { token: adminToken });
    assert.equal(info.status, 200);
    assert.equal(info.body.completed, 1);
  });

  test("an admin can name, list and delete tokens", async () => {
    const made = await request(s.baseUrl, "POST", `${TOKENS}/new`, { token: adminToken, body: { token: "named-token" } });
    assert.equal(made.status, 200);
    assert.equal(made.body.uses_allowed, null);
    const dup = await request(s.baseUrl, "POST", `${TOKENS}/new`, { token: adminToken, body: { token: "named-token" } });
    assertError(dup, 400, "M_INVALID_PARAM");
    const list = await request(s.baseUrl, "GET", TOKENS, { token: adminToken });
    assert.ok((list.body.registration_tokens as { token: string }[]).some((t) => t.token === "named-token"));
    assert.equal((await request(s.baseUrl, "DELETE", `${TOKENS}/named-token`, { token: adminToken })).status, 200);
    assertError(await request(s.baseUrl, "GET", `${TOKENS}/named-token`, { token: adminToken }), 404, "M_NOT_FOUND");
    assert.deepEqual((await request(s.baseUrl, "GET", `${VALIDITY}?token=named-token`)).body, { valid: false });
  });
});
