/**
 * The bundled LiveKit service speaking lk-jwt-service's contract (reference
 * matrixrtc.md §7): tokens checked against the API secret with
 * livekit-server-sdk, the naming test vectors, and every validation answer.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { TokenVerifier } from "livekit-server-sdk";
import { legacyIdentity, livekitIdentity, livekitRoomAlias } from "../src/services/livekit/naming.js";
import { FakeLiveKit, LK_KEY, LK_SECRET, openIdToken, startLiveKitServer } from "./helpers/livekit.js";
import { request, type TestServer } from "./helpers/server.js";

const JWT = "/livekit/jwt";

interface Login {
  user_id: string;
  access_token: string;
  device_id: string;
}

async function register(baseUrl: string, username: string, deviceId?: string): Promise<Login> {
  const res = await request(baseUrl, "POST", "/_matrix/client/v3/register", {
    body: { username, password: "correct horse battery staple", device_id: deviceId, auth: { type: "m.login.dummy" } },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body as unknown as Login;
}

function tokenBody(openid: Record<string, unknown>, user: Login, extra: Record<string, unknown> = {}) {
  return {
    room_id: "!roomid:example.com",
    slot_id: "slot1234",
    openid_token: openid,
    member: { id: "memberABC", claimed_user_id: user.user_id, claimed_device_id: user.device_id },
    ...extra,
  };
}

describe("naming", () => {
  test("the LiveKit room alias matches the test vector", () => {
    assert.equal(livekitRoomAlias("!roomid:example.com", "slot1234"), "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc");
  });
  test("the LiveKit identity matches the test vector", () => {
    assert.equal(livekitIdentity("@alice:example.com", "DEVICE123", "memberABC"), "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU");
  });
  test("the legacy identity is user:device, unhashed", () => {
    assert.equal(legacyIdentity("@alice:example.com", "DEV"), "@alice:example.com:DEV");
  });
});

describe("lk-jwt-service contract, full-access user", () => {
  let server: TestServer;
  let sfu: FakeLiveKit;
  let sfuUrl: string;
  let alice: Login;
  before(async () => {
    sfu = new FakeLiveKit();
    sfuUrl = await sfu.start();
    server = await startLiveKitServer({ server_name: "example.com", livekit: { url: sfuUrl } });
    alice = await register(server.baseUrl, "alice", "DEVICE123");
  });
  after(async () => {
    await server.stop();
    await sfu.stop();
  });

  test("POST /get_token answers {url, jwt}; the JWT verifies against the secret and carries §7's claims", async () => {
    const openid = await openIdToken(server.baseUrl, alice);
    const res = await request(server.baseUrl, "POST", `${JWT}/get_token`, { body: tokenBody(openid, alice) });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(Object.keys(res.body).sort(), ["jwt", "url"]);
    assert.equal(res.body.url, sfuUrl);
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(res.body.jwt as string);
    assert.equal(claims.iss, LK_KEY);
    assert.equal(claims.sub, "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU");
    assert.equal(claims.exp! - claims.nbf!, 3600);
    const video = claims.video as Record<string, unknown>;
    assert.equal(video.room, "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc");
    assert.equal(video.roomJoin, true);
    assert.equal(video.canPublish, true);
    assert.equal(video.canSubscribe, true);
    assert.equal(video.canUpdateOwnMetadata, true);
    assert.notEqual(video.roomCreate, true);
    await assert.rejects(new TokenVerifier(LK_KEY, "another-secret-of-sufficient-length").verify(res.body.jwt as string));
  });

  test("POST /sfu/get (legacy) uses user:device as identity and the m.call#ROOM slot", async () => {
    const openid = await openIdToken(server.baseUrl, alice);
    const res = await request(server.baseUrl, "POST", `${JWT}/sfu/get`, {
      body: { room: "!roomid:example.com", openid_token: openid, device_id: "DEVICE123" },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(res.body.jwt as string);
    assert.equal(claims.sub, "@alice:example.com:DEVICE123");
    assert.equal((claims.video as Record<string, unknown>).room, livekitRoomAlias("!roomid:example.com", "m.call#ROOM"));
  });

  test("a claimed user that is not the token's user is 401 M_UNAUTHORIZED", async () => {
    const openid = await openIdToken(server.baseUrl, alice);
    const body = tokenBody(openid, alice);
    body.member.claimed_user_id = "@mallory:example.com";
    const res = await request(server.baseUrl, "POST", `${JWT}/get_token`, { body });
    assert.equal(res.status, 401);
    assert.equal(res.body.errcode, "M_UNAUTHORIZED");
  });

  test("a forged OpenID token is 401 M_UNAUTHORIZED", async () => {
    const forged = { access_token: "forged", token_type: "Bearer", matrix_server_name: "example.com", expires_in: 3600 };
    for (const path of ["/get_token", "/delegate_delayed_leave"]) {
      const res = await request(server.baseUrl, "POST", JWT + path, { body: tokenBody(forged, alice, { delay_id: "d", delay_timeout: 5000 }) });
      assert.equal(res.status, 401, path);
      assert.equal(res.body.errcode, "M_UNAUTHORIZED");
    }
    const legacy = await request(server.baseUrl, "POST", `${JWT}/sfu/get`, { body: { room: "!r:x", openid_token: forged, device_id: "D" } });
    assert.equal(legacy.status, 401);
    assert.equal(legacy.body.errcode, "M_UNAUTHORIZED");
  });

  test("a body that is not JSON, or not a request object, is 400 M_NOT_JSON", async () => {
    for (const path of ["/get_token", "/sfu/get", "/delegate_delayed_leave"]) {
      for (const body of ["{not json", "", "[1,2]", '"text"', "42"]) {
        const res = await request(server.baseUrl, "POST", JWT + path, { body: body === "" ? undefined : body });
        assert.equal(res.status, 400, `${path} ${JSON.stringify(body)}`);
        assert.equal(res.body.errcode, "M_NOT_JSON", `${path} ${JSON.stringify(body)}`);
      }
    }
  });

  test("an unknown field, at the top or nested, or a field of the wrong type, is 400 M_NOT_JSON", async () => {
    const openid = await openIdToken(server.baseUrl, alice);
    const cases = [
      tokenBody(openid, alice, { surprise: true }),
      { ...tokenBody(openid, alice), member: { id: "m", claimed_user_id: alice.user_id, claimed_device_id: "D", extra: 1 } },
      { ...tokenBody(openid, alice), openid_token: { ...openid, extra: "x" } },
      tokenBody(openid, alice, { delay_timeout: "5000" }),
      tokenBody(openid, alice, { delay_timeout: 1.5 }),
      { ...tokenBody(openid, alice), room_id: 7 },
    ];
    for (const body of cases) {
      const res = await request(server.baseUrl, "POST", `${JWT}/get_token`, { body });
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.body.errcode, "M_NOT_JSON", JSON.stringify(body));
    }
  });

  test("field names match case-insensitively and null means absent, as in Go", async () => {
    const openid = await openIdToken(server.baseUrl, alice);
    const body: Record<string, unknown> = tokenBody(openid, alice, { delay_cs_api_url: null });
    body.Room_ID = body.room_id;
    delete body.room_id;
    const res = await request(server.baseUrl, "POST", `${JWT}/get_token`, { body });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  });

  test("missing fields are 400 M_BAD_JSON", async () => {
    const openid = await openIdToken(server.baseUrl, alice);
    const full = tokenBody(openid, alice);
    const cases: [string, unknown][] = [
      ["/get_token", { ...full, room_id: undefined }],
      ["/get_token", { ...full, slot_id: "" }],
      ["/get_token", { ...full, member: { id: "m", claimed_user_id: alice.user_id } }],
      ["/get_token", { ...full, openid_token: { access_token: "x" } }],
      ["/get_token", null],
      ["/sfu/get", { openid_token: openid, device_id: "D" }],
      ["/sfu/get", { room: "!r:x", device_id: "D" }],
      ["/delegate_delayed_leave", full],
    ];
    for (const [path, body] of cases) {
      const res = await request(server.baseUrl, "POST", JWT + path, { body: JSON.stringify(body) });
      assert.equal(res.status, 400, `${path} ${JSON.stringify(body)}`);
      assert.equal(res.body.errcode, "M_BAD_JSON", `${path} ${JSON.stringify(body)}: ${JSON.stringify(res.body)}`);
    }
  });

  test("only one of delay_id and delay_timeout is 400 M_BAD_JSON", async () => {
    const openid = await openIdToken(server.baseUrl, alice);
    for (const extra of [{ delay_id: "syd_x" }, { delay_timeout: 5000 }, { delay_id: "syd_x", delay_timeout: 0 }]) {
      for (const [path, body] of [
        ["/get_token", tokenBody(openid, alice, extra)],
        ["/sfu/get", { room: "!r:x", openid_token: openid, device_id: "D", ...extra }],
      ] as const) {
        const res = await request(server.baseUrl, "POST", JWT + path, { body });
        assert.equal(res.status, 400, `${path} ${JSON.stringify(extra)}`);
        assert.equal(res.body.errcode, "M_BAD_JSON");
      }
    }
  });

  test("other methods are 405 with an empty body", async () => {
    for (const path of ["/get_token", "/sfu/get", "/delegate_delayed_leave"]) {
      for (const method of ["GET", "PUT", "DELETE", "PATCH"]) {
        const res = await fetch(server.baseUrl + JWT + path, { method });
        assert.equal(res.status, 405, `${method} ${path}`);
        assert.equal(await res.text(), "");
        assert.equal(res.headers.get("access-control-allow-origin"), "*");
      }
    }
  });

  test("OPTIONS is 200 with lk-jwt-service's CORS headers and no body", async () => {
    for (const path of ["/get_token", "/sfu/get", "/delegate_delayed_leave"]) {
      const res = await fetch(server.baseUrl + JWT + path, {
        method: "OPTIONS",
        headers: { origin: "https://call.example.com", "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
      });
      assert.equal(res.status, 200);
      assert.equal(await res.text(), "");
      assert.equal(res.headers.get("access-control-allow-origin"), "*");
      assert.equal(res.headers.get("access-control-allow-methods"), "POST");
      assert.equal(res.headers.get("access-control-allow-headers"), "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token");
    }
  });

  test("OPTIONS on an unknown path under the service is 404, without the homeserver's CORS headers", async () => {
    const res = await request(server.baseUrl, "OPTIONS", `${JWT}/no_such_endpoint`);
    assert.equal(res.status, 404);
    assert.equal(res.body.errcode, "M_UNRECOGNIZED");
    assert.equal(res.headers.get("access-control-allow-methods"), null);
  });

  test("GET and HEAD /healthz are 200; POST is 405", async () => {
    assert.equal((await fetch(`${server.baseUrl}${JWT}/healthz`)).status, 200);
    assert.equal((await fetch(`${server.baseUrl}${JWT}/healthz`, { method: "HEAD" })).status, 200);
    assert.equal((await fetch(`${server.baseUrl}${JWT}/healthz`, { method: "POST" })).status, 405);
  });

  test("a token is refused, not issued, when the request is a different user's", async () => {
    const bob = await register(server.baseUrl, "bob");
    const openid = await openIdToken(server.baseUrl, bob);
    const res = await request(server.baseUrl, "POST", `${JWT}/get_token`, { body: tokenBody(openid, alice) });
    assert.equal(res.status, 401);
    assert.equal(res.body.errcode, "M_UNAUTHORIZED");
  });
});

describe("lk-jwt-service contract, restricted user", () => {
  let server: TestServer;
  let sfu: FakeLiveKit;
  let carol: Login;
  before(async () => {
    sfu = new FakeLiveKit();
    const url = await sfu.start();
    // This server's own users are not on the full-access list, so they are restricted.
    server = await startLiveKitServer({ livekit: { url, full_access_homeservers: ["other.example"] } });
    carol = await register(server.baseUrl, "carol");
  });
  after(async () => {
    await server.stop();
    await sfu.stop();
  });

  test("a restricted user gets a token but no room is created", async () => {
    const openid = await openIdToken(server.baseUrl, carol);
    const res = await request(server.baseUrl, "POST", `${JWT}/get_token`, { body: tokenBody(openid, carol) });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(sfu.of("CreateRoom").length, 0);
  });

  test("a restricted user sending delay fields is 400", async () => {
    const openid = await openIdToken(server.baseUrl, carol);
    const res = await request(server.baseUrl, "POST", `${JWT}/get_token`, {
      body: tokenBody(openid, carol, { delay_id: "syd_x", delay_timeout: 5000 }),
    });
    assert.equal(res.status, 400);
    assert.equal(res.body.errcode, "M_BAD_JSON");
    const legacy = await request(server.baseUrl, "POST", `${JWT}/sfu/get`, {
      body: { room: "!r:x", openid_token: openid, device_id: "D", delay_id: "syd_x", delay_timeout: 5000 },
    });
    assert.equal(legacy.status, 400);
  });

  test("delegate_delayed_leave from a restricted user is 403 M_FORBIDDEN", async () => {
    const openid = await openIdToken(server.baseUrl, carol);
    const res = await request(server.baseUrl, "POST", `${JWT}/delegate_delayed_leave`, {
      body: tokenBody(openid, carol, { delay_id: "syd_x", delay_timeout: 5000 }),
    });
    assert.equal(res.status, 403);
    assert.equal(res.body.errcode, "M_FORBIDDEN");
  });
});
