/**
 * MSC4195's homeserver flow, at `/_matrix/client/v1/rtc/livekit` and the
 * unstable `io.element.msc4195` prefix matrix-js-sdk calls: the access token
 * stands in for the OpenID token, and only members of the room get a LiveKit
 * token or hand over their leave, with the MSC's refusals.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { TokenVerifier } from "livekit-server-sdk";
import { livekitIdentity, livekitRoomAlias } from "../src/services/livekit/naming.js";
import { eventually, FakeLiveKit, LK_KEY, LK_SECRET, scheduleLeave, startLiveKitServer } from "./helpers/livekit.js";
import { loadSdk } from "./helpers/matrix-sdk.js";
import { User } from "./helpers/rooms.js";
import { removeTestData } from "./helpers/database.js";
import { request, type TestServer } from "./helpers/server.js";

const PREFIX = "/_matrix/client/unstable/io.element.msc4195/rtc/livekit";
const V1 = "/_matrix/client/v1/rtc/livekit";

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

  for (const prefix of [V1, PREFIX]) {
    test(`${prefix}/get_token for a member answers {jwt} with the MSC's grants, having created the room`, async () => {
      const slot = `slot-${prefix.length}`;
      const res = await request(server.baseUrl, "POST", `${prefix}/get_token`, {
        token: alice.token,
        body: { url: sfuUrl, room_id: roomId, slot_id: slot, member_id: "mem-1", server_name: "localhost" },
      });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(Object.keys(res.body), ["jwt"]);
      const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(res.body.jwt as string);
      assert.equal(claims.sub, livekitIdentity(alice.userId, alice.deviceId, "mem-1"));
      const alias = livekitRoomAlias(roomId, slot);
      assert.deepEqual(claims.video, {
        room: alias,
        roomJoin: true,
        roomCreate: false,
        canPublish: true,
        canSubscribe: true,
        canUpdateOwnMetadata: false,
        hidden: false,
      });
      assert.ok(sfu.of("CreateRoom").some((c) => c.body.name === alias));
    });
  }

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

  test("a caller not joined to the room, or a room the server does not know: 403 M_FORBIDDEN, for both endpoints on both prefixes", async () => {
    for (const prefix of [V1, PREFIX]) {
      for (const [path, extra] of [["/get_token", {}], ["/delegate_delayed_leave", { delay_id: "syd_x" }]] as const) {
        const res = await request(server.baseUrl, "POST", prefix + path, { token: outsider.token, body: { room_id: roomId, slot_id: "forbidden-slot", member_id: "m", ...extra } });
        assert.equal(res.status, 403, prefix + path);
        assert.equal(res.body.errcode, "M_FORBIDDEN");
        const unknownRoom = await request(server.baseUrl, "POST", prefix + path, {
          token: outsider.token,
          body: { room_id: "!nowhere:localhost", slot_id: "forbidden-slot", member_id: "m", ...extra },
        });
        assert.equal(unknownRoom.status, 403);
        assert.equal(unknownRoom.body.errcode, "M_FORBIDDEN");
      }
    }
    assert.equal(sfu.of("CreateRoom").filter((c) => c.body.name === livekitRoomAlias(roomId, "forbidden-slot")).length, 0);
  });

  test("a url that is not our SFU: 400 M_INVALID_PARAM", async () => {
    const wrong = await post(alice, "/get_token", { url: "wss://elsewhere.example", room_id: roomId, slot_id: "s", member: { id: "m" } });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body.errcode, "M_INVALID_PARAM");
    const v1 = await request(server.baseUrl, "POST", `${V1}/get_token`, { token: alice.token, body: { url: "wss://elsewhere.example", room_id: roomId, slot_id: "s", member_id: "m" } });
    assert.equal(v1.status, 400);
    assert.equal(v1.body.errcode, "M_INVALID_PARAM");
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

  test("delegate_delayed_leave with an unknown delay ID, another user's, or one of another room: 400 M_INVALID_PARAM", async () => {
    for (const prefix of [V1, PREFIX]) {
      const unknown = await request(server.baseUrl, "POST", `${prefix}/delegate_delayed_leave`, {
        token: alice.token,
        body: { url: sfuUrl, room_id: roomId, slot_id: "s", member_id: "m", delay_id: "syd_unknown" },
      });
      assert.equal(unknown.status, 400, prefix);
      assert.equal(unknown.body.errcode, "M_INVALID_PARAM");
    }
    const theirRoom = await outsider.createRoom({});
    const theirs = await scheduleLeave(server.baseUrl, { user_id: outsider.userId, access_token: outsider.token, device_id: outsider.deviceId }, theirRoom, 45_000);
    const res = await post(alice, "/delegate_delayed_leave", { room_id: roomId, slot_id: "s", member: { id: "m" }, delay_id: theirs });
    assert.equal(res.status, 400);
    assert.equal(res.body.errcode, "M_INVALID_PARAM");
    const aliceOther = await alice.createRoom({});
    const login = { user_id: alice.userId, access_token: alice.token, device_id: alice.deviceId };
    const otherRoomLeave = await scheduleLeave(server.baseUrl, login, aliceOther, 45_000);
    const wrongRoom = await post(alice, "/delegate_delayed_leave", { room_id: roomId, slot_id: "s", member_id: "m", delay_id: otherRoomLeave });
    assert.equal(wrongRoom.status, 400);
    assert.equal(wrongRoom.body.errcode, "M_INVALID_PARAM");
  });

  test("delegate_delayed_leave naming a foreign SFU: 400 M_INVALID_PARAM, nothing taken over", async () => {
    const login = { user_id: alice.userId, access_token: alice.token, device_id: alice.deviceId };
    const delayId = await scheduleLeave(server.baseUrl, login, roomId, 45_000);
    const res = await request(server.baseUrl, "POST", `${V1}/delegate_delayed_leave`, {
      token: alice.token,
      body: { url: "wss://elsewhere.example", room_id: roomId, slot_id: "s", member_id: "foreign", delay_id: delayId },
    });
    assert.equal(res.status, 400);
    assert.equal(res.body.errcode, "M_INVALID_PARAM");
    const identity = livekitIdentity(alice.userId, alice.deviceId, "foreign");
    assert.equal(server.homeserver.services.livekit!.delegations.list().find((j) => j.identity === identity), undefined);
  });

  test("a second delegation for the same room, slot, member and user replaces the first", async () => {
    const login = { user_id: alice.userId, access_token: alice.token, device_id: alice.deviceId };
    const first = await scheduleLeave(server.baseUrl, login, roomId, 45_000);
    const second = await scheduleLeave(server.baseUrl, login, roomId, 45_000);
    for (const delayId of [first, second]) {
      const res = await request(server.baseUrl, "POST", `${V1}/delegate_delayed_leave`, {
        token: alice.token,
        body: { url: sfuUrl, room_id: roomId, slot_id: "once", member_id: "mem-once", delay_id: delayId },
      });
      assert.equal(res.status, 200, JSON.stringify(res.body));
    }
    const identity = livekitIdentity(alice.userId, alice.deviceId, "mem-once");
    const jobs = server.homeserver.services.livekit!.delegations.list().filter((j) => j.identity === identity);
    assert.equal(jobs.length, 1);
    const stored = await server.homeserver.storage.livekitDelegations.all();
    assert.deepEqual(stored.filter((d) => d.identity === identity).map((d) => d.delayId), [second]);
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

describe("MSC4195 with a minimum delay and metadata updates configured", () => {
  test("a delayed leave shorter than delegation_min_delay: 400 M_INVALID_PARAM; tokens may update metadata", async () => {
    const sfu = new FakeLiveKit();
    const sfuUrl = await sfu.start();
    const server = await startLiveKitServer({ livekit: { url: sfuUrl, delegation_min_delay: "1h", can_update_own_metadata: true } });
    try {
      const carol = await User.register(server.baseUrl, "carol");
      const roomId = await carol.createRoom({});
      const login = { user_id: carol.userId, access_token: carol.token, device_id: carol.deviceId };
      const short = await scheduleLeave(server.baseUrl, login, roomId, 45_000);
      const body = { url: sfuUrl, room_id: roomId, slot_id: "s", member_id: "m" };
      const refused = await request(server.baseUrl, "POST", `${V1}/delegate_delayed_leave`, { token: carol.token, body: { ...body, delay_id: short } });
      assert.equal(refused.status, 400);
      assert.equal(refused.body.errcode, "M_INVALID_PARAM");
      assert.match(refused.body.error!, /shorter/);
      const long = await scheduleLeave(server.baseUrl, login, roomId, 3_600_000);
      const ok = await request(server.baseUrl, "POST", `${V1}/delegate_delayed_leave`, { token: carol.token, body: { ...body, delay_id: long } });
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
      const token = await request(server.baseUrl, "POST", `${V1}/get_token`, { token: carol.token, body });
      const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(token.body.jwt as string);
      assert.equal((claims.video as Record<string, unknown>).canUpdateOwnMetadata, true);
    } finally {
      await server.stop();
      await sfu.stop();
    }
  });
});

describe("delegations survive a restart", () => {
  test("a delegation taken before a restart is running again after it", async () => {
    const sfu = new FakeLiveKit();
    const sfuUrl = await sfu.start();
    const dir = mkdtempSync(path.join(tmpdir(), "switchboard-test-"));
    try {
      let server = await startLiveKitServer({ livekit: { url: sfuUrl } }, { dir });
      const dave = await User.register(server.baseUrl, "dave");
      const roomId = await dave.createRoom({});
      const login = { user_id: dave.userId, access_token: dave.token, device_id: dave.deviceId };
      const delayId = await scheduleLeave(server.baseUrl, login, roomId, 3_600_000);
      const res = await request(server.baseUrl, "POST", `${V1}/delegate_delayed_leave`, {
        token: dave.token,
        body: { url: sfuUrl, room_id: roomId, slot_id: "m.call#ROOM", member_id: "mem-r", delay_id: delayId },
      });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const identity = livekitIdentity(dave.userId, dave.deviceId, "mem-r");
      // Written down before the answer's effects are relied on: wait for the row, not a duration.
      await eventually(async () => ((await server.homeserver.storage.livekitDelegations.all()).some((d) => d.identity === identity) ? true : undefined), 5000, "the stored delegation");
      await server.stop();

      server = await startLiveKitServer({ livekit: { url: sfuUrl } }, { dir });
      try {
        const job = await eventually(() => server.homeserver.services.livekit!.delegations.list().find((j) => j.identity === identity), 5000, "the adopted job");
        assert.equal(job.userId, dave.userId);
        assert.equal(job.room, livekitRoomAlias(roomId, "m.call#ROOM"));
        const stored = await server.homeserver.storage.livekitDelegations.all();
        assert.equal(stored.find((d) => d.identity === identity)?.owner, server.homeserver.storage.cluster.workerId);
      } finally {
        await server.stop();
      }
    } finally {
      await removeTestData(dir);
      await sfu.stop();
    }
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
