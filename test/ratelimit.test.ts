/**
 * `rc_login` and `rc_registration`: 429 `M_LIMIT_EXCEEDED` with
 * `retry_after_ms` and `Retry-After`. Buckets refill so slowly
 * (per_second 0.001) that no test depends on timing.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { registerUser, request, startServer, type Reply, type TestServer } from "./helpers/server.js";

const PASSWORD = "correct horse battery staple";
const LOGIN = "/_matrix/client/v3/login";
const TIGHT = { per_second: 0.001, burst_count: 2 };
const NO_LIMIT = { per_second: 1000, burst_count: 1000 };

function assertError(res: Reply, status: number, errcode: string): void {
  assert.equal(res.status, status, `expected ${status} ${errcode}, got ${res.status} ${JSON.stringify(res.body)}`);
  assert.equal(res.body.errcode, errcode);
}

function assertLimited(res: Reply): void {
  assertError(res, 429, "M_LIMIT_EXCEEDED");
  const ms = res.body.retry_after_ms;
  assert.equal(typeof ms, "number");
  assert.ok(Number.isInteger(ms) && (ms as number) > 0, `retry_after_ms: ${String(ms)}`);
  const header = res.headers.get("retry-after");
  assert.match(header ?? "", /^[0-9]+$/);
  assert.equal(Number(header), Math.ceil((ms as number) / 1000));
  assert.equal(res.headers.get("access-control-allow-origin"), "*");
}

const login = (baseUrl: string, user: string, password = PASSWORD) =>
  request(baseUrl, "POST", LOGIN, { body: { type: "m.login.password", identifier: { type: "m.id.user", user }, password } });

async function withServer(overrides: Record<string, unknown>, fn: (s: TestServer) => Promise<void>): Promise<void> {
  const s = await startServer(overrides);
  try {
    await fn(s);
  } finally {
    await s.stop();
  }
}

test("rc_login.address limits login attempts per client address", async () => {
  await withServer({ rc_login: { address: TIGHT, account: NO_LIMIT, failed_attempts: NO_LIMIT } }, async (s) => {
    assertError(await login(s.baseUrl, "nobody"), 403, "M_FORBIDDEN");
    assertError(await login(s.baseUrl, "somebody"), 403, "M_FORBIDDEN");
    assertLimited(await login(s.baseUrl, "anybody"));
    // Malformed attempts count as attempts too, once they reach the login handler.
    assertLimited(await request(s.baseUrl, "POST", LOGIN, { body: { type: "m.login.magic" } }));
  });
});

test("rc_login.failed_attempts limits failed logins per account, even with the right password", async () => {
  await withServer({ rc_login: { address: NO_LIMIT, account: NO_LIMIT, failed_attempts: TIGHT } }, async (s) => {
    await Promise.all([registerUser(s.baseUrl, "victim"), registerUser(s.baseUrl, "other")]);
    assertError(await login(s.baseUrl, "victim", "guess 1"), 403, "M_FORBIDDEN");
    assertError(await login(s.baseUrl, "@victim:localhost", "guess 2"), 403, "M_FORBIDDEN");
    assertLimited(await login(s.baseUrl, "victim", "guess 3"));
    assertLimited(await login(s.baseUrl, "VICTIM"));
    // Other accounts are not affected.
    assert.equal((await login(s.baseUrl, "other")).status, 200);
  });
});

test("rc_login.failed_attempts also limits the password stage of user-interactive auth, with a 429", async () => {
  await withServer({ rc_login: { address: NO_LIMIT, account: NO_LIMIT, failed_attempts: TIGHT } }, async (s) => {
    const { access_token: token, user_id: userId } = await registerUser(s.baseUrl, "victim");
    const changePassword = (password: string) =>
      request(s.baseUrl, "POST", "/_matrix/client/v3/account/password", {
        token,
        body: { new_password: "new password", auth: { type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password } },
      });
    for (const guess of ["guess 1", "guess 2"]) {
      const res = await changePassword(guess);
      assertError(res, 401, "M_FORBIDDEN");
      assert.ok(Array.isArray(res.body.flows), "a failed stage still answers with the UIA flows");
    }
    assertLimited(await changePassword("guess 3"));
    // Not even the right password gets through until the bucket drains.
    assertLimited(await changePassword(PASSWORD));
    assertLimited(await login(s.baseUrl, "victim"));
  });
});

test("rc_login.account limits successful logins per account", async () => {
  await withServer({ rc_login: { address: NO_LIMIT, account: TIGHT, failed_attempts: NO_LIMIT } }, async (s) => {
    await Promise.all([registerUser(s.baseUrl, "busy"), registerUser(s.baseUrl, "calm")]);
    assert.equal((await login(s.baseUrl, "busy")).status, 200);
    assert.equal((await login(s.baseUrl, "busy")).status, 200);
    const limited = await login(s.baseUrl, "busy");
    assertLimited(limited);
    assert.equal(limited.body.access_token, undefined);
    assert.equal((await login(s.baseUrl, "calm")).status, 200);
  });
});

test("rc_registration limits registrations per client address", async () => {
  await withServer({ rc_registration: TIGHT }, async (s) => {
    await registerUser(s.baseUrl, "first");
    await registerUser(s.baseUrl, "second");
    assertLimited(
      await request(s.baseUrl, "POST", "/_matrix/client/v3/register", {
        body: { username: "third", password: PASSWORD, auth: { type: "m.login.dummy" } },
      }),
    );
    // Even the first, flow-fetching step of a registration is refused.
    assertLimited(await request(s.baseUrl, "POST", "/_matrix/client/v3/register", { body: {} }));
    const available = await request(s.baseUrl, "GET", "/_matrix/client/v3/register/available?username=third");
    assert.deepEqual(available.body, { available: true });
  });
});

test("a process that shares the database with others enforces its share of the limit, never less than one action", async () => {
  const { RateLimiter } = await import("../src/services/ratelimiter.js");
  let now = 0;
  const clock = { now: () => now };
  let processes = 2;
  const limiter = new RateLimiter({ per_second: 1, burst_count: 6 }, clock, () => 1 / processes);
  const allowed = () => {
    let n = 0;
    while (limiter.check("@u:x").allowed) n++;
    return n;
  };
  assert.equal(allowed(), 3, "half the burst with two processes");
  now += 2000; // drains at half the rate: one action per 2 s
  assert.equal(allowed(), 1);
  processes = 20;
  now += 1_000_000;
  assert.equal(allowed(), 1, "a burst split twenty ways still allows one");
  processes = 1;
  now += 1_000_000;
  assert.equal(allowed(), 6, "alone, the whole limit");
});
