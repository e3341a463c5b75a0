/**
 * Delegated leave for this server's own users, end to end: the client
 * schedules its delayed leave, hands it to the LiveKit service, and the
 * service restarts it in process while LiveKit reports the participant
 * connected, then sends it when LiveKit reports them gone. LiveKit's webhooks
 * are signed here as the SFU signs them; its room service is a stand-in.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { legacyIdentity, livekitIdentity, livekitRoomAlias } from "../src/services/livekit/naming.js";
import type { DelayedEventRecord } from "../src/storage/delayed_events.js";
import { eventually, FakeLiveKit, openIdToken, postWebhook, scheduleLeave, startLiveKitServer } from "./helpers/livekit.js";
import { User } from "./helpers/rooms.js";
import { request, teardown, type TestServer } from "./helpers/server.js";

const CALL_MEMBER = "org.matrix.msc3401.call.member";

describe("delegated leave, local users", () => {
  let server: TestServer;
  let sfu: FakeLiveKit;
  let alice: User;
  let login: { user_id: string; access_token: string; device_id: string };
  let roomId: string;

  const record = (delayId: string) => server.homeserver.storage.delayedEvents.get(delayId) as Promise<DelayedEventRecord>;
  const jobs = () => server.homeserver.services.livekit!.delegations.list();

  before(async () => {
    sfu = new FakeLiveKit();
    server = await startLiveKitServer({ livekit: { url: await sfu.start(), sanity_check_interval: "200ms" } });
    alice = await User.register(server.baseUrl, "alice");
    login = { user_id: alice.userId, access_token: alice.token, device_id: alice.deviceId };
    roomId = await alice.createRoom({});
  });
  after(() =>
    teardown(
      () => server?.stop(),
      () => sfu?.stop(),
    ),
  );

  async function getToken(memberId: string, delayId: string, delayTimeout: number) {
    const openid = await openIdToken(server.baseUrl, login);
    const res = await request(server.baseUrl, "POST", "/livekit/jwt/get_token", {
      body: {
        room_id: roomId,
        slot_id: "m.call#ROOM",
        openid_token: openid,
        member: { id: memberId, claimed_user_id: alice.userId, claimed_device_id: alice.deviceId },
        delay_id: delayId,
        delay_timeout: delayTimeout,
      },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }

  test("webhooks: joined keeps the leave from firing; left sends it at once", async () => {
    // Restarts go out at 80 % of the delay: 4 s leaves each one 800 ms, however loaded the machine.
    const delayId = await scheduleLeave(server.baseUrl, login, roomId, 4000);
    await getToken("member-1", delayId, 4000);
    const room = livekitRoomAlias(roomId, "m.call#ROOM");
    const identity = livekitIdentity(alice.userId, alice.deviceId, "member-1");
    assert.deepEqual(jobs().map((j) => j.state), ["waiting"]);

    const scheduledAt = (await record(delayId)).runningSince;
    // A real SFU would now also list the participant, which the sanity check asks about.
    sfu.present.add(`${room}\n${identity}`);
    assert.equal(await postWebhook(server.baseUrl, { event: "participant_joined", room: { name: room }, participant: { identity } }), 200);
    await eventually(async () => ((await record(delayId)).runningSince > scheduledAt ? true : undefined), 2000, "a restart");
    // Past the delay, the event would have fired on its own; the restarts hold it back.
    await new Promise((r) => setTimeout(r, 5000));
    assert.equal((await record(delayId)).status, "scheduled");

    await postWebhook(server.baseUrl, {
      event: "participant_left",
      room: { name: room },
      participant: { identity, disconnectReason: "CLIENT_INITIATED" },
    });
    sfu.present.delete(`${room}\n${identity}`);
    const done = await eventually(async () => {
      const r = await record(delayId);
      return r.status === "finalised" ? r : undefined;
    }, 2000, "the leave");
    assert.equal(done.outcome, "send");
    assert.equal(done.reason, "action", "sent by the service, not by its own timer");
    const state = await alice.getStateRaw(roomId, CALL_MEMBER, `_${alice.userId}_${alice.deviceId}_m.call`);
    assert.equal(state.status, 200);
    assert.deepEqual(state.body, {});
    assert.equal(jobs().length, 0);
  });

  test("a webhook that is not signed with our secret changes nothing", async () => {
    const delayId = await scheduleLeave(server.baseUrl, login, roomId, 60_000);
    await getToken("member-2", delayId, 60_000);
    const room = livekitRoomAlias(roomId, "m.call#ROOM");
    const identity = livekitIdentity(alice.userId, alice.deviceId, "member-2");
    const status = await postWebhook(
      server.baseUrl,
      { event: "participant_joined", room: { name: room }, participant: { identity } },
      "not-the-secret-but-long-enough-to-sign",
    );
    assert.equal(status, 200, "answered like lk-jwt-service: the sender learns nothing");
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(jobs().find((j) => j.identity === identity)?.state, "waiting");
    const unsigned = await fetch(`${server.baseUrl}/livekit/jwt/sfu_webhook`, {
      method: "POST",
      body: JSON.stringify({ event: "participant_joined", room: { name: room }, participant: { identity } }),
    });
    assert.equal(unsigned.status, 200);
    assert.equal(jobs().find((j) => j.identity === identity)?.state, "waiting");
  });

  test("delegate_delayed_leave: found on the SFU by polling, gone at a sanity check, leave sent", async () => {
    const delayId = await scheduleLeave(server.baseUrl, login, roomId, 60_000);
    const room = livekitRoomAlias(roomId, "m.call#ROOM");
    const identity = livekitIdentity(alice.userId, alice.deviceId, "member-3");
    sfu.present.add(`${room}\n${identity}`);
    const openid = await openIdToken(server.baseUrl, login);
    const res = await request(server.baseUrl, "POST", "/livekit/jwt/delegate_delayed_leave", {
      body: {
        room_id: roomId,
        slot_id: "m.call#ROOM",
        openid_token: openid,
        member: { id: "member-3", claimed_user_id: alice.userId, claimed_device_id: alice.deviceId },
        delay_id: delayId,
        delay_timeout: 60_000,
      },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, {});
    await eventually(() => (jobs().find((j) => j.identity === identity)?.state === "connected" ? true : undefined), 3000, "connected");
    assert.ok(sfu.of("GetParticipant").some((c) => c.body.room === room && c.body.identity === identity));
    sfu.present.delete(`${room}\n${identity}`);
    const done = await eventually(async () => {
      const r = await record(delayId);
      return r.status === "finalised" ? r : undefined;
    }, 3000, "the leave");
    assert.equal(done.outcome, "send");
  });

  test("/sfu/get with delay fields: the job follows the legacy identity", async () => {
    const delayId = await scheduleLeave(server.baseUrl, login, roomId, 60_000);
    const openid = await openIdToken(server.baseUrl, login);
    const res = await request(server.baseUrl, "POST", "/livekit/jwt/sfu/get", {
      body: { room: roomId, openid_token: openid, device_id: alice.deviceId, delay_id: delayId, delay_timeout: 60_000, delay_cs_api_url: "ignored" },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const room = livekitRoomAlias(roomId, "m.call#ROOM");
    const identity = legacyIdentity(alice.userId, alice.deviceId);
    await postWebhook(server.baseUrl, { event: "participant_joined", room: { name: room }, participant: { identity } });
    await eventually(() => (jobs().find((j) => j.identity === identity)?.state === "connected" ? true : undefined), 2000, "connected");
    await postWebhook(server.baseUrl, { event: "participant_connection_aborted", room: { name: room }, participant: { identity } });
    await eventually(async () => ((await record(delayId)).status === "finalised" ? true : undefined), 2000, "the leave");
  });

  test("a delay ID that is not the user's: the job stops at its first restart, nothing is sent", async () => {
    const bob = await User.register(server.baseUrl, "bob");
    await bob.join(roomId).catch(() => undefined);
    const bobLogin = { user_id: bob.userId, access_token: bob.token, device_id: bob.deviceId };
    const bobsRoom = await bob.createRoom({});
    const bobsDelay = await scheduleLeave(server.baseUrl, bobLogin, bobsRoom, 60_000);
    await getToken("member-4", bobsDelay, 60_000);
    const identity = livekitIdentity(alice.userId, alice.deviceId, "member-4");
    await postWebhook(server.baseUrl, { event: "participant_joined", room: { name: livekitRoomAlias(roomId, "m.call#ROOM") }, participant: { identity } });
    await eventually(() => (jobs().some((j) => j.identity === identity) ? undefined : true), 2000, "the job to stop");
    assert.equal((await record(bobsDelay)).status, "scheduled");
  });
});
