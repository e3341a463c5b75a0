/**
 * Authentication state that several Switchboard processes on one database must share: a UIA
 * session started on one homeserver continues on another, a shared-secret nonce is spent once
 * whichever homeserver sees it, and revoked access tokens leave every homeserver's cache.
 * Several homeservers run in this process on one database (SQLite file, or PostgreSQL with
 * SWITCHBOARD_TEST_POSTGRES), as separate processes would.
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { CACHE_TRUST_MS } from "../src/services/auth.js";
import { InProcessNotifier } from "../src/services/sync/notifier.js";
import { dropTestDatabase, TEST_POSTGRES } from "./helpers/database.js";
import { registerUser, request, startServer, type Reply, type TestServer } from "./helpers/server.js";

const SECRET = "shared between the homeservers";
const PASSWORD = "correct horse battery staple";
const ADMIN_REGISTER = "/_synapse/admin/v1/register";
const PASSWORD_CHANGE = "/_matrix/client/v3/account/password";
const WHOAMI = "/_matrix/client/v3/account/whoami";
const UIA_LIFETIME_MS = 15 * 60_000;

function assertError(res: Reply, status: number, errcode: string): void {
  assert.equal(res.status, status, `expected ${status} ${errcode}, got ${res.status} ${JSON.stringify(res.body)}`);
  assert.equal(res.body.errcode, errcode);
}

const passwordAuth = (user: string, password: string, session: string) => ({
  type: "m.login.password",
  identifier: { type: "m.id.user", user },
  password,
  session,
});

const mac = (nonce: string, user: string) =>
  createHmac("sha1", SECRET).update(`${nonce}\0${user}\0${PASSWORD}\0notadmin`).digest("hex");

let dir: string;
/** `a` and `b` share a notifier, as processes joined by a cross-process notifier would. */
let a: TestServer;
let b: TestServer;
/** Shares only the database, on a clock the tests move: a process that hears no notifications. */
let c: TestServer;
let cNow = Date.now();

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "switchboard-shared-"));
  const config = { registration_shared_secret: SECRET };
  const notifier = new InProcessNotifier();
  a = await startServer(config, { dir, homeserver: { notifier } });
  b = await startServer(config, { dir, homeserver: { notifier } });
  c = await startServer(config, { dir, clock: { now: () => cNow } });
});
after(async () => {
  await Promise.all([a?.stop(), b?.stop(), c?.stop()]);
  rmSync(dir, { recursive: true, force: true });
  if (TEST_POSTGRES) await dropTestDatabase(dir);
});

/** Starts a password change: the 401 that opens a UIA session; returns the session. */
async function startPasswordChange(server: TestServer, token: string): Promise<string> {
  const res = await request(server.baseUrl, "POST", PASSWORD_CHANGE, { token, body: { new_password: "unused" } });
  assert.equal(res.status, 401, JSON.stringify(res.body));
  assert.equal(res.body.errcode, undefined);
  assert.deepEqual(res.body.flows, [{ stages: ["m.login.password"] }]);
  assert.equal(typeof res.body.session, "string");
  return res.body.session as string;
}

/** A wrong password in a session: refused, and the reply names the session the server used. */
async function wrongPassword(server: TestServer, token: string, user: string, session: string): Promise<string> {
  const res = await request(server.baseUrl, "POST", PASSWORD_CHANGE, {
    token,
    body: { new_password: "unused", auth: passwordAuth(user, "wrong password", session) },
  });
  assertError(res, 401, "M_FORBIDDEN");
  assert.deepEqual(res.body.flows, [{ stages: ["m.login.password"] }]);
  return res.body.session as string;
}

describe("UIA sessions", () => {
  test("a session started on one homeserver is continued and completed on another", async () => {
    const user = await registerUser(a.baseUrl, "uiatraveller");
    const session = await startPasswordChange(a, user.access_token);
    // A refused stage on the other homeserver answers within the same session: it found it.
    assert.equal(await wrongPassword(b, user.access_token, "uiatraveller", session), session);
    const done = await request(b.baseUrl, "POST", PASSWORD_CHANGE, {
      token: user.access_token,
      body: { new_password: "new password", logout_devices: false, auth: passwordAuth("uiatraveller", PASSWORD, session) },
    });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    const login = await request(a.baseUrl, "POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", user: "uiatraveller", password: "new password" },
    });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    // A completed session is gone for every homeserver: naming it starts a new one.
    assert.notEqual(await wrongPassword(a, user.access_token, "uiatraveller", session), session);
  });

  test("a session started for one operation is not continued for another on the other homeserver", async () => {
    const user = await registerUser(a.baseUrl, "uiapurpose");
    const register = await request(a.baseUrl, "POST", "/_matrix/client/v3/register", { body: { username: "uiapurpose2", password: PASSWORD } });
    assert.equal(register.status, 401, JSON.stringify(register.body));
    const foreign = register.body.session as string;
    assert.equal(typeof foreign, "string");
    assert.notEqual(await wrongPassword(b, user.access_token, "uiapurpose", foreign), foreign);
  });

  test("a session expires after 15 minutes, on every homeserver", async () => {
    const user = await registerUser(a.baseUrl, "uialate");
    const session = await startPasswordChange(a, user.access_token);
    cNow = Date.now() + UIA_LIFETIME_MS - 60_000;
    assert.equal(await wrongPassword(c, user.access_token, "uialate", session), session);
    cNow = Date.now() + UIA_LIFETIME_MS + 60_000;
    assert.notEqual(await wrongPassword(c, user.access_token, "uialate", session), session);
    cNow = Date.now();
  });

  test("stages completed at once through two homeservers are all kept", async () => {
    const sessionId = "concurrent-stages";
    const stores = [a.homeserver.storage.uiaSessions, b.homeserver.storage.uiaSessions];
    const now = Date.now();
    await stores[0]!.create({ sessionId, purpose: "test", createdTs: now, completed: [] }, now - UIA_LIFETIME_MS);
    const stages = Array.from({ length: 20 }, (_, i) => `stage.${String(i).padStart(2, "0")}`);
    // Every stage twice, so that a repeated stage is not recorded twice either.
    const results = await Promise.all(
      [...stages, ...stages].map((stage, i) => stores[i % 2]!.completeStage(sessionId, stage, now - UIA_LIFETIME_MS)),
    );
    results.forEach((completed, i) => assert.ok(completed?.includes(stages[i % stages.length]!), JSON.stringify(completed)));
    const stored = await stores[1]!.get(sessionId, now - UIA_LIFETIME_MS);
    assert.deepEqual([...stored!.completed].sort(), stages);
    // A session that is gone (or expired) takes no stage.
    assert.equal(await stores[0]!.completeStage("no-such-session", "stage", now - UIA_LIFETIME_MS), undefined);
    assert.equal(await stores[0]!.completeStage(sessionId, "late", now + 1), undefined);
    await stores[0]!.delete(sessionId);
  });
});

describe("shared-secret registration nonces", () => {
  async function nonce(server: TestServer): Promise<string> {
    const res = await request(server.baseUrl, "GET", ADMIN_REGISTER);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(typeof res.body.nonce, "string");
    return res.body.nonce as string;
  }

  const registerWith = (server: TestServer, n: string, user: string) =>
    request(server.baseUrl, "POST", ADMIN_REGISTER, { body: { nonce: n, username: user, password: PASSWORD, mac: mac(n, user) } });

  test("a nonce issued by one homeserver works once, on another", async () => {
    const n = await nonce(a);
    const first = await registerWith(b, n, "noncetraveller");
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(first.body.user_id, "@noncetraveller:localhost");
    for (const server of [a, b]) {
      const replay = await registerWith(server, n, "noncereplay");
      assertError(replay, 400, "M_UNKNOWN");
      assert.equal(replay.body.error, "unrecognised nonce");
    }
  });

  test("of several requests racing with one nonce on two homeservers, exactly one succeeds", async () => {
    const n = await nonce(b);
    const users = ["racer0", "racer1", "racer2", "racer3", "racer4", "racer5"];
    const replies = await Promise.all(users.map((user, i) => registerWith(i % 2 ? a : b, n, user)));
    const winners = replies.filter((r) => r.status === 200);
    assert.equal(winners.length, 1, JSON.stringify(replies.map((r) => r.body)));
    for (const loser of replies.filter((r) => r.status !== 200)) {
      assertError(loser, 400, "M_UNKNOWN");
      assert.equal(loser.body.error, "unrecognised nonce");
    }
    // Only the winner's account exists.
    const created = await Promise.all(users.map((u) => request(a.baseUrl, "GET", `/_matrix/client/v3/profile/@${u}:localhost`)));
    assert.equal(created.filter((r) => r.status === 200).length, 1);
    for (const missing of created.filter((r) => r.status !== 200)) assertError(missing, 404, "M_NOT_FOUND");
  });

  test("a nonce expires after a minute, whichever homeserver issued it", async () => {
    const n = await nonce(a);
    cNow = Date.now() + 2 * 60_000;
    const late = await registerWith(c, n, "noncelate");
    cNow = Date.now();
    assertError(late, 400, "M_UNKNOWN");
    assert.equal(late.body.error, "unrecognised nonce");
  });
});

describe("revoked access tokens", () => {
  async function loginAs(user: string, deviceId: string): Promise<string> {
    const res = await request(a.baseUrl, "POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", user, password: PASSWORD, device_id: deviceId },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.access_token as string;
  }

  /** Asserts the token works on the server (which then has it in its cache). */
  async function works(server: TestServer, token: string): Promise<void> {
    const res = await request(server.baseUrl, "GET", WHOAMI, { token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }

  async function refused(server: TestServer, token: string): Promise<void> {
    assertError(await request(server.baseUrl, "GET", WHOAMI, { token }), 401, "M_UNKNOWN_TOKEN");
  }

  test("a logout on one homeserver is followed at once by one that hears its notifier", async () => {
    const user = await registerUser(a.baseUrl, "tokenlogout");
    await works(b, user.access_token);
    const out = await request(a.baseUrl, "POST", "/_matrix/client/v3/logout", { token: user.access_token, body: {} });
    assert.equal(out.status, 200, JSON.stringify(out.body));
    await refused(b, user.access_token);
    await refused(a, user.access_token);
  });

  test("a password change revokes every other token on the homeservers that hear of it", async () => {
    await registerUser(a.baseUrl, "tokenpassword");
    const current = await loginAs("tokenpassword", "CURRENT");
    const sibling = await loginAs("tokenpassword", "CURRENT");
    const other = await loginAs("tokenpassword", "OTHER");
    for (const token of [current, sibling, other]) await works(b, token);
    const session = await startPasswordChange(a, current);
    const done = await request(a.baseUrl, "POST", PASSWORD_CHANGE, {
      token: current,
      body: { new_password: "after the change", auth: passwordAuth("tokenpassword", PASSWORD, session) },
    });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    await refused(b, sibling);
    await refused(b, other);
    await works(b, current);
  });

  test("a device deleted on one homeserver loses its token on the other", async () => {
    const user = await registerUser(a.baseUrl, "tokendevice");
    const doomed = await loginAs("tokendevice", "DOOMED");
    await works(b, doomed);
    const url = "/_matrix/client/v3/devices/DOOMED";
    const started = await request(a.baseUrl, "DELETE", url, { token: user.access_token, body: {} });
    assert.equal(started.status, 401, JSON.stringify(started.body));
    const deleted = await request(a.baseUrl, "DELETE", url, {
      token: user.access_token,
      body: { auth: passwordAuth("tokendevice", PASSWORD, started.body.session as string) },
    });
    assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
    await refused(b, doomed);
  });

  test("a homeserver that missed the revocation trusts its cached entry for at most CACHE_TRUST_MS", async () => {
    const user = await registerUser(a.baseUrl, "tokenstale");
    cNow = Date.now();
    await works(c, user.access_token);
    const out = await request(a.baseUrl, "POST", "/_matrix/client/v3/logout", { token: user.access_token, body: {} });
    assert.equal(out.status, 200, JSON.stringify(out.body));
    // `c` shares no notifier with `a`: until the bound, its cache is all it consults.
    await works(c, user.access_token);
    cNow += CACHE_TRUST_MS;
    await refused(c, user.access_token);
    cNow = Date.now();
  });
});
