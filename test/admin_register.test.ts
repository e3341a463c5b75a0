/**
 * Synapse's shared-secret registration (`POST /_synapse/admin/v1/register`),
 * computed here as `register_new_matrix_user` computes it.
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { request, startServer, type Reply, type TestServer } from "./helpers/server.js";

const SECRET = "s3cr3t shared by the operator";
const URL = "/_synapse/admin/v1/register";
const PASSWORD = "correct horse battery staple";

function assertError(res: Reply, status: number, errcode: string): void {
  assert.equal(res.status, status, `expected ${status} ${errcode}, got ${res.status} ${JSON.stringify(res.body)}`);
  assert.equal(res.body.errcode, errcode);
}

function mac(secret: string, nonce: string, user: string, password: string, admin: boolean, userType?: string): string {
  const h = createHmac("sha1", secret).update(`${nonce}\0${user}\0${password}\0${admin ? "admin" : "notadmin"}`);
  if (userType) h.update(`\0${userType}`);
  return h.digest("hex");
}

let server: TestServer;
before(async () => {
  server = await startServer({ registration_shared_secret: SECRET, enable_registration: false, enable_registration_without_verification: false });
});
after(async () => server?.stop());

async function nonce(baseUrl = server.baseUrl): Promise<string> {
  const res = await request(baseUrl, "GET", URL);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(typeof res.body.nonce, "string");
  return res.body.nonce as string;
}

/** Whether a token belongs to a server admin, asked through an admin-only endpoint. */
async function isAdmin(token: string): Promise<boolean> {
  const res = await request(server.baseUrl, "GET", "/_synapse/admin/v1/registration_tokens", { token });
  if (res.status === 403) {
    assert.equal(res.body.errcode, "M_FORBIDDEN");
    return false;
  }
  assert.equal(res.status, 200);
  return true;
}

describe("shared-secret registration", () => {
  test("GET gives a fresh nonce each time", async () => {
    const [a, b] = [await nonce(), await nonce()];
    assert.ok(a.length >= 16);
    assert.notEqual(a, b);
  });

  test("a correct HMAC creates a user and logs it in, even with registration closed", async () => {
    const n = await nonce();
    const res = await request(server.baseUrl, "POST", URL, {
      body: { nonce: n, username: "plainuser", password: PASSWORD, admin: false, mac: mac(SECRET, n, "plainuser", PASSWORD, false) },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.user_id, "@plainuser:localhost");
    assert.equal(res.body.home_server, "localhost");
    assert.equal(typeof res.body.device_id, "string");
    const token = res.body.access_token as string;
    const who = await request(server.baseUrl, "GET", "/_matrix/client/v3/account/whoami", { token });
    assert.equal(who.body.user_id, "@plainuser:localhost");
    assert.equal(await isAdmin(token), false);
    // The password is the one given.
    const login = await request(server.baseUrl, "POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", user: "plainuser", password: PASSWORD },
    });
    assert.equal(login.status, 200);
  });

  test("admin: true makes a server admin, and the flag is part of the MAC", async () => {
    const n = await nonce();
    const res = await request(server.baseUrl, "POST", URL, {
      body: { nonce: n, username: "adminuser", password: PASSWORD, admin: true, mac: mac(SECRET, n, "adminuser", PASSWORD, true) },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(await isAdmin(res.body.access_token as string), true);

    // A MAC made for "notadmin" does not make an admin.
    const m = await nonce();
    const forged = await request(server.baseUrl, "POST", URL, {
      body: { nonce: m, username: "sneaky", password: PASSWORD, admin: true, mac: mac(SECRET, m, "sneaky", PASSWORD, false) },
    });
    assertError(forged, 403, "M_FORBIDDEN");
  });

  test("a displayname is applied", async () => {
    const n = await nonce();
    const res = await request(server.baseUrl, "POST", URL, {
      body: { nonce: n, username: "named", password: PASSWORD, displayname: "Named User", mac: mac(SECRET, n, "named", PASSWORD, false) },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const profile = await request(server.baseUrl, "GET", "/_matrix/client/v3/profile/@named:localhost/displayname");
    assert.deepEqual(profile.body, { displayname: "Named User" });
  });

  test("user_type is part of the MAC when given, as in Synapse", async () => {
    const n = await nonce();
    const res = await request(server.baseUrl, "POST", URL, {
      body: { nonce: n, username: "botuser", password: PASSWORD, user_type: "bot", mac: mac(SECRET, n, "botuser", PASSWORD, false, "bot") },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.user_id, "@botuser:localhost");
  });

  test("a wrong MAC is 403 M_FORBIDDEN", async () => {
    const wrongMacs = [
      (n: string) => mac("another secret", n, "wrongmac", PASSWORD, false),
      (n: string) => mac(SECRET, n, "someoneelse", PASSWORD, false),
      () => "not hex at all",
      () => "",
    ];
    for (const wrongMac of wrongMacs) {
      const n = await nonce();
      const res = await request(server.baseUrl, "POST", URL, {
        body: { nonce: n, username: "wrongmac", password: PASSWORD, mac: wrongMac(n) },
      });
      assertError(res, 403, "M_FORBIDDEN");
    }
    // The password is part of the MAC too.
    const n = await nonce();
    const res = await request(server.baseUrl, "POST", URL, {
      body: { nonce: n, username: "wrongmac", password: "other password", mac: mac(SECRET, n, "wrongmac", PASSWORD, false) },
    });
    assertError(res, 403, "M_FORBIDDEN");
    const login = await request(server.baseUrl, "POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", user: "wrongmac", password: PASSWORD },
    });
    assertError(login, 403, "M_FORBIDDEN");
  });

  test("an unknown or reused nonce is 400 M_UNKNOWN", async () => {
    const unknown = await request(server.baseUrl, "POST", URL, {
      body: { nonce: "deadbeef", username: "nononce", password: PASSWORD, mac: mac(SECRET, "deadbeef", "nononce", PASSWORD, false) },
    });
    assertError(unknown, 400, "M_UNKNOWN");

    const n = await nonce();
    const first = await request(server.baseUrl, "POST", URL, {
      body: { nonce: n, username: "reuser", password: PASSWORD, mac: mac(SECRET, n, "reuser", PASSWORD, false) },
    });
    assert.equal(first.status, 200);
    const replay = await request(server.baseUrl, "POST", URL, {
      body: { nonce: n, username: "reuser2", password: PASSWORD, mac: mac(SECRET, n, "reuser2", PASSWORD, false) },
    });
    assertError(replay, 400, "M_UNKNOWN");

    // A nonce spent on a wrong MAC is spent too.
    const m = await nonce();
    const bad = await request(server.baseUrl, "POST", URL, { body: { nonce: m, username: "probe", password: PASSWORD, mac: "00" } });
    assertError(bad, 403, "M_FORBIDDEN");
    const retry = await request(server.baseUrl, "POST", URL, {
      body: { nonce: m, username: "probe", password: PASSWORD, mac: mac(SECRET, m, "probe", PASSWORD, false) },
    });
    assertError(retry, 400, "M_UNKNOWN");
  });

  test("a taken or invalid name is refused with the registration errcodes", async () => {
    const n = await nonce();
    const taken = await request(server.baseUrl, "POST", URL, {
      body: { nonce: n, username: "plainuser", password: PASSWORD, mac: mac(SECRET, n, "plainuser", PASSWORD, false) },
    });
    assertError(taken, 400, "M_USER_IN_USE");
    const m = await nonce();
    const invalid = await request(server.baseUrl, "POST", URL, {
      body: { nonce: m, username: "_reserved", password: PASSWORD, mac: mac(SECRET, m, "_reserved", PASSWORD, false) },
    });
    assertError(invalid, 400, "M_INVALID_USERNAME");
  });

  test("a missing field is 400 M_MISSING_PARAM", async () => {
    const n = await nonce();
    assertError(await request(server.baseUrl, "POST", URL, { body: { nonce: n, username: "x", password: PASSWORD } }), 400, "M_MISSING_PARAM");
  });

  test("without registration_shared_secret, both calls are 400 M_UNKNOWN", async () => {
    const s = await startServer();
    try {
      assertError(await request(s.baseUrl, "GET", URL), 400, "M_UNKNOWN");
      const res = await request(s.baseUrl, "POST", URL, {
        body: { nonce: "abc", username: "nobody", password: PASSWORD, mac: mac(SECRET, "abc", "nobody", PASSWORD, false) },
      });
      assertError(res, 400, "M_UNKNOWN");
    } finally {
      await s.stop();
    }
  });
});
