/**
 * Switchboard against a real LiveKit SFU (livekit-server 1.11 on loopback) and LiveKit's own
 * browser SDK in headless Chromium: MSC4195's homeserver flow creates the room on the SFU, its
 * token lets the client connect and publish, and a delegated leave is sent when the
 * participant leaves (the SFU's webhook reaching Switchboard).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { TrackType } from "livekit-server-sdk";
import type { Browser } from "playwright-core";
import { livekitIdentity, livekitRoomAlias } from "../../src/services/livekit/naming.js";
import { chromiumMissing, launchChromium, type StaticApp } from "../helpers/element_call.js";
import { freePort } from "../helpers/ports.js";
import { eventually, NO_LIMIT, scheduleLeave } from "../helpers/livekit.js";
import { connectLiveKit, disconnectLiveKit, serveLiveKitPage } from "../helpers/livekit_page.js";
import { sfuMissing, startLiveKitSfu, type LiveKitSfu } from "../helpers/livekit_sfu.js";
import { User } from "../helpers/rooms.js";
import { request, startServer, teardown, type TestServer } from "../helpers/server.js";

const V1 = "/_matrix/client/v1/rtc/livekit";
const SLOT = "m.call#ROOM";
/** Guards against a hung test; no assertion depends on how long anything takes. */
const GIVE_UP_MS = 60_000;

const skip = sfuMissing() || chromiumMissing();

describe("a real LiveKit SFU", { skip, timeout: 240_000 }, () => {
  let sfu: LiveKitSfu;
  let server: TestServer;
  let browser: Browser;
  let page: StaticApp;

  before(async () => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    sfu = await startLiveKitSfu({ webhookUrl: `${base}/livekit/jwt/sfu_webhook` });
    server = await startServer({
      public_baseurl: `${base}/`,
      listeners: [{ port, bind_addresses: ["127.0.0.1"] }],
      livekit: { url: sfu.url, api_key: sfu.apiKey, api_secret: sfu.apiSecret },
      rc_rtc_transports: NO_LIMIT,
    });
    page = await serveLiveKitPage();
    browser = await launchChromium(["--allow-loopback-in-peer-connection"]);
  });
  after(() =>
    teardown(
      () => browser?.close(),
      () => page?.close(),
      () => server?.stop(),
      () => sfu?.stop(),
    ),
  );

  async function getToken(user: User, roomId: string, memberId: string): Promise<string> {
    const res = await request(server.baseUrl, "POST", `${V1}/get_token`, {
      token: user.token,
      body: { url: sfu.url, room_id: roomId, slot_id: SLOT, member_id: memberId },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.jwt as string;
  }

  const publishedKinds = async (room: string, identity: string) => {
    const participants = await sfu.rooms.listParticipants(room).catch(() => []);
    const p = participants.find((x) => x.identity === identity);
    return p ? new Set(p.tracks.map((t) => t.type)) : undefined;
  };

  test("get_token creates the room on the SFU, and its token lets LiveKit's client connect and publish audio and video", async () => {
    const alice = await User.register(server.baseUrl, "sfu_alice");
    const roomId = await alice.createRoom({});
    const alias = livekitRoomAlias(roomId, SLOT);
    const jwt = await getToken(alice, roomId, "m1");
    // The room is there before any client connects (the SFU does not create rooms on join here).
    assert.deepEqual((await sfu.rooms.listRooms([alias])).map((r) => r.name), [alias]);

    const tab = await connectLiveKit(browser, page.origin, sfu.url, jwt);
    try {
      const identity = livekitIdentity(alice.userId, alice.deviceId, "m1");
      const kinds = await eventually(
        async () => {
          const k = await publishedKinds(alias, identity);
          return k?.has(TrackType.AUDIO) && k.has(TrackType.VIDEO) ? k : undefined;
        },
        GIVE_UP_MS,
        "the participant's audio and video on the SFU",
      );
      assert.ok(kinds.has(TrackType.AUDIO) && kinds.has(TrackType.VIDEO));
    } finally {
      await tab.context().close();
    }
  });

  test("a delegated leave is sent when the participant leaves the SFU", async () => {
    const bob = await User.register(server.baseUrl, "sfu_bob");
    const roomId = await bob.createRoom({});
    const alias = livekitRoomAlias(roomId, SLOT);
    // Long enough that only the delegation can send it within the test.
    const delayId = await scheduleLeave(server.baseUrl, { user_id: bob.userId, access_token: bob.token, device_id: bob.deviceId }, roomId, 3_600_000);
    const jwt = await getToken(bob, roomId, "m2");
    const tab = await connectLiveKit(browser, page.origin, sfu.url, jwt);
    try {
      const res = await request(server.baseUrl, "POST", `${V1}/delegate_delayed_leave`, {
        token: bob.token,
        body: { url: sfu.url, room_id: roomId, slot_id: SLOT, member_id: "m2", delay_id: delayId },
      });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const identity = livekitIdentity(bob.userId, bob.deviceId, "m2");
      const jobs = server.homeserver.services.livekit!.delegations;
      await eventually(() => (jobs.list().find((j) => j.identity === identity)?.state === "connected" ? true : undefined), GIVE_UP_MS, "the job to see the participant");
      const before = await server.homeserver.storage.delayedEvents.get(delayId);
      assert.equal(before?.status, "scheduled");

      await disconnectLiveKit(tab);
      const sent = await eventually(
        async () => {
          const record = await server.homeserver.storage.delayedEvents.get(delayId);
          return record?.status === "finalised" ? record : undefined;
        },
        GIVE_UP_MS,
        "the delegated leave to be sent",
      );
      assert.equal(sent.outcome, "send");
      assert.equal(await publishedKinds(alias, identity), undefined);
    } finally {
      await tab.context().close();
    }
  });
});
