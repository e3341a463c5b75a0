/**
 * Users of other homeservers: their OpenID tokens are checked at their own
 * server, found by server discovery and reached over verified TLS, and their
 * delegated leaves go through that server's Client-Server API. The other
 * server is a second Switchboard on another port, behind an HTTPS front with
 * a certificate from a CA made here; the service under test is handed that
 * CA and a resolver that maps the made-up names to the front.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { TokenVerifier } from "livekit-server-sdk";
import { livekitIdentity, livekitRoomAlias } from "../src/services/livekit/naming.js";
import type { OutboundOptions } from "../src/services/livekit/outbound.js";
import type { DelayedEventRecord } from "../src/storage/delayed_events.js";
import {
  eventually,
  FakeLiveKit,
  LK_KEY,
  LK_SECRET,
  makeTestCa,
  openIdToken,
  postWebhook,
  scheduleLeave,
  startLiveKitServer,
  testDialer,
  tlsFront,
  type TlsFront,
} from "./helpers/livekit.js";
import { User } from "./helpers/rooms.js";
import { request, teardown, type TestServer } from "./helpers/server.js";

const USERINFO = "GET /_matrix/federation/v1/openid/userinfo";

describe("remote users", () => {
  const pki = makeTestCa(["remote.test", "alias.test"]);
  let front: TlsFront;
  let remote: TestServer;
  let sfu: FakeLiveKit;
  let sfuUrl: string;
  let bob: User;
  let bobLogin: { user_id: string; access_token: string; device_id: string };
  const started: TestServer[] = [];

  /** A Switchboard with the LiveKit service whose outbound calls use `outbound`. */
  async function service(outbound: OutboundOptions | undefined, fullAccess = ["localhost", "remote.test"]) {
    const server = await startLiveKitServer({ livekit: { url: sfuUrl, full_access_homeservers: fullAccess } }, { outbound });
    started.push(server);
    return server;
  }
  const trusted = (dialer: ReturnType<typeof testDialer>): OutboundOptions => ({ ca: [pki.ca], dialer, timeoutMs: 3000 });
  const toFront = () => ({ address: "127.0.0.1", port: front.port });

  async function getToken(server: TestServer, openid: Record<string, unknown>, extra: Record<string, unknown> = {}) {
    return request(server.baseUrl, "POST", "/livekit/jwt/get_token", {
      body: {
        room_id: "!call:remote.test",
        slot_id: "m.call#ROOM",
        openid_token: openid,
        member: { id: "bob-member", claimed_user_id: bob.userId, claimed_device_id: bob.deviceId },
        ...extra,
      },
    });
  }

  before(async () => {
    sfu = new FakeLiveKit();
    sfuUrl = await sfu.start();
    front = await tlsFront(pki);
    // The remote homeserver: its well-known files point at the HTTPS front, i.e. at itself.
    remote = await startLiveKitServer({
      server_name: "remote.test",
      public_baseurl: `https://remote.test:${front.port}/`,
      serve_server_wellknown: true,
      livekit: null,
    });
    front.target = remote.baseUrl;
    bob = await User.register(remote.baseUrl, "bob");
    bobLogin = { user_id: bob.userId, access_token: bob.token, device_id: bob.deviceId };
  });
  after(() =>
    teardown(
      ...started.map((s) => () => s.stop()),
      () => remote?.stop(),
      () => front?.close(),
      () => sfu?.stop(),
    ),
  );

  describe("discovery through .well-known/matrix/server", () => {
    let local: TestServer;
    before(async () => {
      // https://remote.test/ (port 443) is the front too, as a reverse proxy on the server name would be.
      local = await service(trusted(testDialer({ "remote.test:443": toFront(), "remote.test": { address: "127.0.0.1" } })));
    });

    test("a remote user's token is checked at their server; the JWT carries their identity", async () => {
      const seen = front.requests.length;
      const openid = await openIdToken(remote.baseUrl, bobLogin);
      assert.equal(openid.matrix_server_name, "remote.test");
      const res = await getToken(local, openid);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(res.body.jwt as string);
      assert.equal(claims.sub, livekitIdentity(bob.userId, bob.deviceId, "bob-member"));
      const asked = front.requests.slice(seen);
      assert.deepEqual(asked, ["GET /.well-known/matrix/server", USERINFO]);
      // A full-access remote user gets the room created too.
      assert.ok(sfu.of("CreateRoom").some((c) => c.body.name === livekitRoomAlias("!call:remote.test", "m.call#ROOM")));
    });

    test("the answer is cached briefly: a repeat asks nobody", async () => {
      const openid = await openIdToken(remote.baseUrl, bobLogin);
      assert.equal((await getToken(local, openid)).status, 200);
      const seen = front.requests.length;
      assert.equal((await getToken(local, openid)).status, 200);
      assert.equal(front.requests.length, seen);
    });

    test("a forged token, or a claimed user that is not the token's, is 401 M_UNAUTHORIZED", async () => {
      const openid = await openIdToken(remote.baseUrl, bobLogin);
      const forged = await getToken(local, { ...openid, access_token: "forged" });
      assert.equal(forged.status, 401);
      assert.equal(forged.body.errcode, "M_UNAUTHORIZED");
      const mismatch = await getToken(local, openid, { member: { id: "m", claimed_user_id: "@alice:remote.test", claimed_device_id: "D" } });
      assert.equal(mismatch.status, 401);
      assert.equal(mismatch.body.errcode, "M_UNAUTHORIZED");
    });

    test("a restricted remote user gets a token, but no room and no delegation", async () => {
      const restricted = await service(trusted(testDialer({ "remote.test:443": toFront(), "remote.test": { address: "127.0.0.1" } })), ["localhost"]);
      const openid = await openIdToken(remote.baseUrl, bobLogin);
      const creates = sfu.of("CreateRoom").length;
      assert.equal((await getToken(restricted, openid)).status, 200);
      assert.equal(sfu.of("CreateRoom").length, creates);
      assert.equal((await getToken(restricted, openid, { delay_id: "syd_x", delay_timeout: 5000 })).status, 400);
    });
  });

  describe("TLS is verified", () => {
    test("without the test CA the remote server is not trusted: 401", async () => {
      // Every place discovery may lead to is the front, so only trust can fail.
      const local = await service({ dialer: testDialer({ "remote.test": toFront() }), timeoutMs: 3000 });
      const openid = await openIdToken(remote.baseUrl, bobLogin);
      const seen = front.requests.length;
      const res = await getToken(local, openid);
      assert.deepEqual(front.requests.slice(seen), [], "no request got past the TLS handshake");
      assert.equal(res.status, 401);
      assert.equal(res.body.errcode, "M_UNAUTHORIZED");
    });

    test("a certificate for another name is not accepted", async () => {
      // impostor.test resolves to the same front, whose certificate does not name it.
      const local = await service(trusted(testDialer({ "impostor.test": toFront() })));
      const openid = await openIdToken(remote.baseUrl, bobLogin);
      const seen = front.requests.length;
      const res = await getToken(local, { ...openid, matrix_server_name: "impostor.test" });
      assert.equal(res.status, 401);
      assert.equal(res.body.errcode, "M_UNAUTHORIZED");
      assert.deepEqual(front.requests.slice(seen), [], "the TLS handshake failed before any request");
    });
  });

  describe("discovery without .well-known", () => {
    test("SRV _matrix-fed._tcp names the target; the certificate is checked for the server name", async () => {
      const dialer = testDialer(
        { "fed-target.test": toFront() },
        { "_matrix-fed._tcp.remote.test": [{ name: "fed-target.test", port: front.port, priority: 10, weight: 5 }] },
      );
      const local = await service(trusted(dialer));
      const seen = front.requests.length;
      const res = await getToken(local, await openIdToken(remote.baseUrl, bobLogin));
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(front.requests.slice(seen), [USERINFO]);
    });

    test("no well-known and no SRV: port 8448", async () => {
      const local = await service(trusted(testDialer({ "remote.test:8448": toFront() })));
      const res = await getToken(local, await openIdToken(remote.baseUrl, bobLogin));
      assert.equal(res.status, 200, JSON.stringify(res.body));
    });

    test("a server that answers for another server's users is refused: the sub domain must match", async () => {
      // alias.test leads (by SRV) to remote.test's front, whose certificate also names alias.test.
      const dialer = testDialer({ "fed-target.test": toFront() }, { "_matrix-fed._tcp.alias.test": [{ name: "fed-target.test", port: front.port, priority: 0, weight: 0 }] });
      const local = await service(trusted(dialer), ["*"]);
      const openid = await openIdToken(remote.baseUrl, bobLogin);
      const seen = front.requests.length;
      const res = await getToken(local, { ...openid, matrix_server_name: "alias.test" });
      assert.deepEqual(front.requests.slice(seen), [USERINFO], "the userinfo answer came");
      assert.equal(res.status, 401);
      assert.equal(res.body.errcode, "M_UNAUTHORIZED");
    });
  });

  describe("delegated leave through the remote Client-Server API", () => {
    test("restarted while connected, sent when gone, without a token; found by .well-known/matrix/client", async () => {
      const local = await service(trusted(testDialer({ "remote.test:443": toFront(), "remote.test": { address: "127.0.0.1" } })));
      const roomId = await bob.createRoom({});
      // Long enough that discovery and the webhook come first on any machine; the test never waits it out.
      const delayId = await scheduleLeave(remote.baseUrl, bobLogin, roomId, 10_000);
      const record = () => remote.homeserver.storage.delayedEvents.get(delayId) as Promise<DelayedEventRecord>;
      const openid = await openIdToken(remote.baseUrl, bobLogin);
      const seen = front.requests.length;
      const res = await getToken(local, openid, { room_id: roomId, delay_id: delayId, delay_timeout: 10_000 });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.ok(front.requests.slice(seen).includes("GET /.well-known/matrix/client"));

      const room = livekitRoomAlias(roomId, "m.call#ROOM");
      const identity = livekitIdentity(bob.userId, bob.deviceId, "bob-member");
      const before = (await record()).runningSince;
      await postWebhook(local.baseUrl, { event: "participant_joined", room: { name: room }, participant: { identity } });
      await eventually(async () => ((await record()).runningSince > before ? true : undefined), 3000, "a remote restart");
      assert.ok(front.requests.includes(`POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/${delayId}/restart`));

      await postWebhook(local.baseUrl, { event: "participant_left", room: { name: room }, participant: { identity } });
      const done = await eventually(async () => {
        const r = await record();
        return r.status === "finalised" ? r : undefined;
      }, 3000, "the remote leave");
      assert.equal(done.outcome, "send");
      assert.equal(done.reason, "action");
      assert.ok(front.requests.includes(`POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/${delayId}/send`));
    });

    test("a server whose Client-Server API cannot be found: delegation is 400 M_BAD_JSON", async () => {
      // Only the federation port is reachable: no well-known, so no Client-Server API to call.
      const local = await service(trusted(testDialer({ "remote.test:8448": toFront() })));
      const openid = await openIdToken(remote.baseUrl, bobLogin);
      const res = await request(local.baseUrl, "POST", "/livekit/jwt/delegate_delayed_leave", {
        body: {
          room_id: "!r:remote.test",
          slot_id: "m.call#ROOM",
          openid_token: openid,
          member: { id: "m", claimed_user_id: bob.userId, claimed_device_id: bob.deviceId },
          delay_id: "syd_x",
          delay_timeout: 5000,
        },
      });
      assert.equal(res.status, 400);
      assert.equal(res.body.errcode, "M_BAD_JSON");
    });
  });
});
