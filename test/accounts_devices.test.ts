/**
 * Devices (with UIA by password for deletion) and profiles, over plain HTTP
 * (issue 2, section 6).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { registerUser, request, startServer, type Reply, type TestServer } from "./helpers/server.js";

const PASSWORD = "correct horse battery staple";
const DEVICES = "/_matrix/client/v3/devices";
const WHOAMI = "/_matrix/client/v3/account/whoami";

function assertError(res: Reply, status: number, errcode: string): void {
  assert.equal(res.status, status, `expected ${status} ${errcode}, got ${res.status} ${JSON.stringify(res.body)}`);
  assert.equal(res.body.errcode, errcode);
}

function assertPasswordUia(res: Reply): string {
  assert.equal(res.status, 401, JSON.stringify(res.body));
  assert.deepEqual(res.body.flows, [{ stages: ["m.login.password"] }]);
  assert.deepEqual(res.body.params, {});
  assert.equal(typeof res.body.session, "string");
  return res.body.session as string;
}

const passwordAuth = (user: string, password: string, session: string) => ({
  type: "m.login.password",
  identifier: { type: "m.id.user", user },
  password,
  session,
});

let server: TestServer;
let owner: { user_id: string; access_token: string; device_id: string };
let stranger: { user_id: string; access_token: string; device_id: string };

async function login(user: string, deviceId: string, name?: string): Promise<string> {
  const res = await request(server.baseUrl, "POST", "/_matrix/client/v3/login", {
    body: { type: "m.login.password", user, password: PASSWORD, device_id: deviceId, initial_device_display_name: name },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.access_token as string;
}

before(async () => {
  server = await startServer();
  [owner, stranger] = await Promise.all([registerUser(server.baseUrl, "owner"), registerUser(server.baseUrl, "stranger")]);
});
after(async () => server?.stop());

describe("devices", () => {
  test("GET /devices lists the user's devices, and GET /devices/{id} one of them", async () => {
    await login("owner", "LISTED", "Listed device");
    const list = await request(server.baseUrl, "GET", DEVICES, { token: owner.access_token });
    assert.equal(list.status, 200);
    const devices = list.body.devices as { device_id: string; display_name?: string; last_seen_ip?: string; last_seen_ts?: number }[];
    const ids = devices.map((d) => d.device_id);
    assert.ok(ids.includes(owner.device_id) && ids.includes("LISTED"), ids.join());
    assert.ok(!ids.includes(stranger.device_id));
    const listed = devices.find((d) => d.device_id === "LISTED")!;
    assert.equal(listed.display_name, "Listed device");
    assert.equal(listed.last_seen_ip, "127.0.0.1");
    assert.equal(typeof listed.last_seen_ts, "number");

    const one = await request(server.baseUrl, "GET", `${DEVICES}/LISTED`, { token: owner.access_token });
    assert.equal(one.status, 200);
    assert.deepEqual(one.body, listed);
  });

  test("an unknown device, or another user's, is 404 M_NOT_FOUND", async () => {
    const token = owner.access_token;
    assertError(await request(server.baseUrl, "GET", `${DEVICES}/NOSUCHDEVICE`, { token }), 404, "M_NOT_FOUND");
    assertError(await request(server.baseUrl, "GET", `${DEVICES}/${stranger.device_id}`, { token }), 404, "M_NOT_FOUND");
    assertError(await request(server.baseUrl, "PUT", `${DEVICES}/NOSUCHDEVICE`, { token, body: { display_name: "x" } }), 404, "M_NOT_FOUND");
    assertError(await request(server.baseUrl, "DELETE", `${DEVICES}/NOSUCHDEVICE`, { token }), 404, "M_NOT_FOUND");
  });

  test("PUT /devices/{id} renames a device", async () => {
    await login("owner", "RENAMED", "Old name");
    const put = await request(server.baseUrl, "PUT", `${DEVICES}/RENAMED`, { token: owner.access_token, body: { display_name: "New name" } });
    assert.equal(put.status, 200);
    assert.deepEqual(put.body, {});
    const dev = await request(server.baseUrl, "GET", `${DEVICES}/RENAMED`, { token: owner.access_token });
    assert.equal(dev.body.display_name, "New name");
    assertError(
      await request(server.baseUrl, "PUT", `${DEVICES}/RENAMED`, { token: owner.access_token, body: { display_name: 5 } }),
      400,
      "M_BAD_JSON",
    );
  });

  test("DELETE /devices/{id} needs the password through UIA, then revokes that device's token", async () => {
    const doomed = await login("owner", "DOOMED");
    const url = `${DEVICES}/DOOMED`;
    const session = assertPasswordUia(await request(server.baseUrl, "DELETE", url, { token: owner.access_token }));
    // The same with an empty JSON body.
    assertPasswordUia(await request(server.baseUrl, "DELETE", url, { token: owner.access_token, body: {} }));

    const wrong = await request(server.baseUrl, "DELETE", url, {
      token: owner.access_token,
      body: { auth: passwordAuth("owner", "wrong password", session) },
    });
    assertError(wrong, 401, "M_FORBIDDEN");
    assert.deepEqual(wrong.body.flows, [{ stages: ["m.login.password"] }]);
    assert.equal((await request(server.baseUrl, "GET", WHOAMI, { token: doomed })).status, 200);

    // Someone else's password does not do.
    const other = await request(server.baseUrl, "DELETE", url, {
      token: owner.access_token,
      body: { auth: passwordAuth("stranger", PASSWORD, session) },
    });
    assertError(other, 401, "M_FORBIDDEN");
    assert.equal((await request(server.baseUrl, "GET", WHOAMI, { token: doomed })).status, 200);

    const ok = await request(server.baseUrl, "DELETE", url, {
      token: owner.access_token,
      body: { auth: passwordAuth("owner", PASSWORD, session) },
    });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.deepEqual(ok.body, {});
    const who = await request(server.baseUrl, "GET", WHOAMI, { token: doomed });
    assertError(who, 401, "M_UNKNOWN_TOKEN");
    assert.equal(who.body.soft_logout, false);
    assertError(await request(server.baseUrl, "GET", url, { token: owner.access_token }), 404, "M_NOT_FOUND");
    assert.equal((await request(server.baseUrl, "GET", WHOAMI, { token: owner.access_token })).status, 200);
  });

  test("POST /delete_devices deletes several devices after UIA", async () => {
    const [one, two] = [await login("owner", "BULK1"), await login("owner", "BULK2")];
    const body = { devices: ["BULK1", "BULK2"] };
    const session = assertPasswordUia(await request(server.baseUrl, "POST", "/_matrix/client/v3/delete_devices", { token: owner.access_token, body }));
    assertError(
      await request(server.baseUrl, "POST", "/_matrix/client/v3/delete_devices", { token: owner.access_token, body: { auth: {} } }),
      400,
      "M_MISSING_PARAM",
    );
    const ok = await request(server.baseUrl, "POST", "/_matrix/client/v3/delete_devices", {
      token: owner.access_token,
      body: { ...body, auth: passwordAuth("owner", PASSWORD, session) },
    });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    for (const token of [one, two]) assertError(await request(server.baseUrl, "GET", WHOAMI, { token }), 401, "M_UNKNOWN_TOKEN");
    const ids = ((await request(server.baseUrl, "GET", DEVICES, { token: owner.access_token })).body.devices as { device_id: string }[]).map(
      (d) => d.device_id,
    );
    assert.ok(!ids.includes("BULK1") && !ids.includes("BULK2") && ids.includes(owner.device_id));
  });
});

describe("profile", () => {
  const profile = (user: string, field?: string) => `/_matrix/client/v3/profile/${encodeURIComponent(user)}${field ? `/${field}` : ""}`;

  test("a new user's display name is their localpart, and anyone may read it", async () => {
    const res = await request(server.baseUrl, "GET", profile("@stranger:localhost", "displayname"));
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { displayname: "stranger" });
    const full = await request(server.baseUrl, "GET", profile("@stranger:localhost"), { token: owner.access_token });
    assert.deepEqual(full.body, { displayname: "stranger" });
    assertError(await request(server.baseUrl, "GET", profile("@stranger:localhost", "avatar_url")), 404, "M_NOT_FOUND");
  });

  test("PUT and GET displayname and avatar_url", async () => {
    const token = owner.access_token;
    const name = await request(server.baseUrl, "PUT", profile(owner.user_id, "displayname"), { token, body: { displayname: "The Owner" } });
    assert.equal(name.status, 200);
    assert.deepEqual(name.body, {});
    const avatar = await request(server.baseUrl, "PUT", profile(owner.user_id, "avatar_url"), {
      token,
      body: { avatar_url: "mxc://localhost/abcdef" },
    });
    assert.equal(avatar.status, 200);
    assert.deepEqual((await request(server.baseUrl, "GET", profile(owner.user_id, "displayname"))).body, { displayname: "The Owner" });
    assert.deepEqual((await request(server.baseUrl, "GET", profile(owner.user_id, "avatar_url"))).body, {
      avatar_url: "mxc://localhost/abcdef",
    });
    assert.deepEqual((await request(server.baseUrl, "GET", profile(owner.user_id))).body, {
      displayname: "The Owner",
      avatar_url: "mxc://localhost/abcdef",
    });
    assertError(
      await request(server.baseUrl, "PUT", profile(owner.user_id, "displayname"), { token, body: { displayname: "x".repeat(300) } }),
      400,
      "M_TOO_LARGE",
    );
    assertError(
      await request(server.baseUrl, "PUT", profile(owner.user_id, "displayname"), { body: { displayname: "anon" } }),
      401,
      "M_MISSING_TOKEN",
    );
  });

  test("setting another user's profile is 403 M_FORBIDDEN", async () => {
    for (const [field, value] of [
      ["displayname", "Hijacked"],
      ["avatar_url", "mxc://localhost/evil"],
    ] as const) {
      const res = await request(server.baseUrl, "PUT", profile(stranger.user_id, field), { token: owner.access_token, body: { [field]: value } });
      assertError(res, 403, "M_FORBIDDEN");
    }
    assert.deepEqual((await request(server.baseUrl, "GET", profile(stranger.user_id, "displayname"))).body, { displayname: "stranger" });
  });

  test("an unknown user's profile is 404 M_NOT_FOUND", async () => {
    assertError(await request(server.baseUrl, "GET", profile("@ghost:localhost")), 404, "M_NOT_FOUND");
    assertError(await request(server.baseUrl, "GET", profile("@ghost:localhost", "displayname")), 404, "M_NOT_FOUND");
    assertError(await request(server.baseUrl, "GET", profile("@ghost:localhost", "avatar_url"), { token: owner.access_token }), 404, "M_NOT_FOUND");
  });
});
