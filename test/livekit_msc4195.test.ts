/**
 * MSC4195 in the homeserver (`io.element.msc4195`), as matrix-js-sdk calls
 * it: the access token stands in for the OpenID token, and only members of
 * the room get a LiveKit token or hand over their leave.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { TokenVerifier } from "livekit-server-sdk";
import { livekitIdentity, livekitRoomAlias } from "../src/services/livekit/naming.js";
import { FakeLiveKit, LK_KEY, LK_SECRET, scheduleLeave, startLiveKitServer } from "./helpers/livekit.js";
import { loadSdk } from "./helpers/matrix-sdk.js";
import { User } from "./helpers/rooms.js";
import { request, type TestServer } from "./helpers/server.js";

const PREFIX = "/_matrix/client/unstable/io.element.msc4195/rtc/livekit";

describe("MSC4195 in the homeserver", () => {
  let server: TestServer;
  let sfu: FakeLiveKit;
  let sfuUrl: string;
  let alice: User;
  let outsider: User;
  let roomId: string;

  const post = (user: User | undefined, path: string, body: unknown) =>
    request(server.baseUrl, "POST", PREFIX + path, { token: user?.token, body });

  before(async () => {
    sfu = new FakeLiveKit();
    sfuUrl = await sfu.start();
    server = await startLiveKitServer({ livekit: { url: sfuUrl } });
    alice = await User.register(server.baseUrl, "alice");
    outsider = await User.register(server.baseUrl, "outsider");
    roomId = await alice.createRoom({});
  });
  after(async () => {
    await server.stop();
    await sfu.stop();
  });

  test("get_token for a member answers {jwt, url}, with the member's identity, and creates the room", async () => {
    const res = await post(alice, "/get_token", { url: sfuUrl, room_id: roomId, slot_id: "m.call#ROOM", member: { id: "mem-1" } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.url, sfuUrl);
    const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(res.body.jwt as string);
    assert.equal(claims.sub, livekitIdentity(alice.userId, alice.deviceId, "mem-1"));
    const alias = livekitRoomAlias(roomId, "m.call#ROOM");
    assert.equal((claims.video as Record<string, unknown>).room, alias);
    assert.ok(sfu.of("CreateRoom").some((c) => c.body.name === alias));
  });

  test("a claimed device ID is used for the identity, as the membership event names it", async () => {
    const res = await post(alice, "/get_token", { room_id: roomId, slot_id: "s", member: { id: "mem-2", claimed_device_id: "OTHERDEV" } });
    assert.equal(res.status, 200);
    const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(res.body.jwt as string);
    assert.equal(claims.sub, livekitIdentity(alice.userId, "OTHERDEV", "mem-2"));
  });

  test("the member ID may also come as `member_id`, as MSC4195's newest text sends it", async () => {
    const res = await post(alice, "/get_token", { room_id: roomId, slot_id: "s", member_id: "mem-9" });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(res.body.jwt as string);
    assert.equal(claims.sub, livekitIdentity(alice.userId, alice.deviceId, "mem-9"));
  });

  test("without an access token: 401 M_MISSING_TOKEN", async () => {
    const res = await post(undefined, "/get_token", { room_id: roomId, slot_id: "s", member: { id: "m" } });
    assert.equal(res.status, 401);
    assert.equal(res.body.errcode, "M_MISSING_TOKEN");
  });

  test("a caller not joined to the room: 401 M_UNAUTHORIZED, for both endpoints", async () => {
    for (const [path, extra] of [["/get_token", {}], ["/delegate_delayed_leave", { delay_id: "syd_x" }]] as const) {
      const res = await post(outsider, path, { room_id: roomId, slot_id: "s", member: { id: "m" }, ...extra });
      assert.equal(res.status, 401, path);
      assert.equal(res.body.errcode, "M_UNAUTHORIZED");
      const unknownRoom = await post(outsider, path, { room_id: "!nowhere:localhost", slot_id: "s", member: { id: "m" }, ...extra });
      assert.equal(unknownRoom.status, 401);
    }
  });

  test("a url that is not our SFU, or another server's SFU: 400 M_INVALID_PARAM", async () => {
    const wrong = await post(alice, "/get_token", { url: "wss://elsewhere.example", room_id: roomId, slot_id: "s", member: { id: "m" } });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body.errcode, "M_INVALID_PARAM");
    const remote = await post(alice, "/get_token", { server_name: "other.example", room_id: roomId, slot_id: "s", member: { id: "m" } });
    assert.equal(remote.status, 400);
    assert.equal(remote.body.errcode, "M_INVALID_PARAM");
    const slash = await post(alice, "/get_token", { url: `${sfuUrl}/`, room_id: roomId, slot_id: "s", member: { id: "m" } });
    assert.equal(slash.status, 200);
  });

  test("a body without room_id or member is refused by the usual body validation", async () => {
    const res = await post(alice, "/get_token", { slot_id: "s", member: { id: "m" } });
    assert.equal(res.status, 400);
    const noMember = await post(alice, "/get_token", { room_id: roomId, slot_id: "s" });
    assert.equal(noMember.status, 400);
    assert.equal(noMember.body.errcode, "M_MISSING_PARAM");
  });

  test("delegate_delayed_leave takes over the caller's delayed leave, with that event's delay", async () => {
    const login = { user_id: alice.userId, access_token: alice.token, device_id: alice.deviceId };
    const delayId = await scheduleLeave(server.baseUrl, login, roomId, 45_000);
    const res = await post(alice, "/delegate_delayed_leave", { url: sfuUrl, room_id: roomId, slot_id: "m.call#ROOM", member: { id: "mem-3" }, delay_id: delayId });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, {});
    const identity = livekitIdentity(alice.userId, alice.deviceId, "mem-3");
    const job = server.homeserver.services.livekit!.delegations.list().find((j) => j.identity === identity);
    assert.equal(job?.state, "waiting");
    assert.equal(job?.userId, alice.userId);
  });

  test("delegate_delayed_leave with an unknown delay ID, or another user's: 404 M_NOT_FOUND", async () => {
    const unknown = await post(alice, "/delegate_delayed_leave", { room_id: roomId, slot_id: "s", member: { id: "m" }, delay_id: "syd_unknown" });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.errcode, "M_NOT_FOUND");
    await outsider.join(roomId).catch(() => undefined);
    const theirRoom = await outsider.createRoom({});
    const theirs = await scheduleLeave(server.baseUrl, { user_id: outsider.userId, access_token: outsider.token, device_id: outsider.deviceId }, theirRoom, 45_000);
    const res = await post(alice, "/delegate_delayed_leave", { room_id: roomId, slot_id: "s", member: { id: "m" }, delay_id: theirs });
    assert.equal(res.status, 404);
  });

  test("matrix-js-sdk's _unstable_getLivekitToken and _unstable_delegateDelayedLeave work against it", async () => {
    const sdk = await loadSdk();
    const client = sdk.createClient({ baseUrl: server.baseUrl, accessToken: alice.token, userId: alice.userId, deviceId: alice.deviceId });
    const token = await client._unstable_getLivekitToken({ url: sfuUrl, room_id: roomId, slot_id: "m.call#ROOM", member: { id: "sdk-mem" } });
    const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(token.jwt);
    assert.equal(claims.sub, livekitIdentity(alice.userId, alice.deviceId, "sdk-mem"));
    const login = { user_id: alice.userId, access_token: alice.token, device_id: alice.deviceId };
    const delayId = await scheduleLeave(server.baseUrl, login, roomId, 45_000);
    const res = await client._unstable_delegateDelayedLeave({ url: sfuUrl, room_id: roomId, slot_id: "m.call#ROOM", member: { id: "sdk-mem" }, delay_id: delayId });
    assert.deepEqual(res, {});
    client.stopClient();
  });
});

describe("MSC4195 with a restricted own server", () => {
  test("no room is created and delegation is 403 when this server is not on the full-access list", async () => {
    const sfu = new FakeLiveKit();
    const server = await startLiveKitServer({ livekit: { url: await sfu.start(), full_access_homeservers: ["other.example"] } });
    try {
      const bob = await User.register(server.baseUrl, "bob");
      const roomId = await bob.createRoom({});
      const res = await request(server.baseUrl, "POST", `${PREFIX}/get_token`, { token: bob.token, body: { room_id: roomId, slot_id: "s", member: { id: "m" } } });
      assert.equal(res.status, 200);
      assert.equal(sfu.of("CreateRoom").length, 0);
      const login = { user_id: bob.userId, access_token: bob.token, device_id: bob.deviceId };
      const delayId = await scheduleLeave(server.baseUrl, login, roomId, 45_000);
      const del = await request(server.baseUrl, "POST", `${PREFIX}/delegate_delayed_leave`, {
        token: bob.token,
        body: { room_id: roomId, slot_id: "s", member: { id: "m" }, delay_id: delayId },
      });
      assert.equal(del.status, 403);
      assert.equal(del.body.errcode, "M_FORBIDDEN");
    } finally {
      await server.stop();
      await sfu.stop();
    }
  });
});
