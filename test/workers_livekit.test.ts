/**
 * Delegated leaves (the bundled LiveKit service) with two processes on one PostgreSQL database:
 * a webhook that reaches the process without the job still drives it, and when the process
 * running a job stops, the other takes the job over and keeps the participant's leave from
 * firing while LiveKit still lists them. Two homeservers in this process stand for the two
 * processes; needs SWITCHBOARD_TEST_POSTGRES.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { livekitIdentity, livekitRoomAlias } from "../src/services/livekit/naming.js";
import type { DelayedEventRecord } from "../src/storage/delayed_events.js";
import { removeTestData, TEST_POSTGRES } from "./helpers/database.js";
import { eventually, FakeLiveKit, openIdToken, postWebhook, scheduleLeave, startLiveKitServer } from "./helpers/livekit.js";
import { User } from "./helpers/rooms.js";
import { request, teardown, type TestServer } from "./helpers/server.js";

const skip = TEST_POSTGRES ? false : "needs PostgreSQL (SWITCHBOARD_TEST_POSTGRES)";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let a: TestServer | undefined;
let b: TestServer | undefined;
let sfu: FakeLiveKit | undefined;
const dir = mkdtempSync(path.join(tmpdir(), "switchboard-workers-lk-"));
after(() =>
  teardown(
    () => a?.stop(),
    () => b?.stop(),
    () => sfu?.stop(),
    () => removeTestData(dir),
  ),
);

test("a delegated leave follows webhooks sent to either process, and survives the stop of the process that ran it", { skip, timeout: 60_000 }, async () => {
  sfu = new FakeLiveKit();
  const livekit = { url: await sfu.start(), sanity_check_interval: "200ms" };
  a = await startLiveKitServer({ livekit }, { dir });
  // The second process: the same config on the same database.
  b = await startLiveKitServer({ livekit }, { dir });
  const alice = await User.register(a.baseUrl, "alice");
  const login = { user_id: alice.userId, access_token: alice.token, device_id: alice.deviceId };
  const roomId = await alice.createRoom({});
  const record = (delayId: string) => b!.homeserver.storage.delayedEvents.get(delayId) as Promise<DelayedEventRecord>;
  const jobsOn = (s: TestServer) => s.homeserver.services.livekit!.delegations.list().map((j) => j.state);

  const delayId = await scheduleLeave(a.baseUrl, login, roomId, 4000);
  const res = await request(a.baseUrl, "POST", "/livekit/jwt/get_token", {
    body: {
      room_id: roomId,
      slot_id: "m.call#ROOM",
      openid_token: await openIdToken(a.baseUrl, login),
      member: { id: "m1", claimed_user_id: alice.userId, claimed_device_id: alice.deviceId },
      delay_id: delayId,
      delay_timeout: 4000,
    },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const room = livekitRoomAlias(roomId, "m.call#ROOM");
  const identity = livekitIdentity(alice.userId, alice.deviceId, "m1");
  assert.deepEqual(jobsOn(a), ["waiting"]);
  assert.deepEqual(jobsOn(b), []);

  // LiveKit's webhook reaches the other process; the job on the first one hears it.
  sfu.present.add(`${room}\n${identity}`);
  assert.equal(await postWebhook(b.baseUrl, { event: "participant_joined", room: { name: room }, participant: { identity } }), 200);
  await eventually(async () => (jobsOn(a!)[0] === "connected" ? true : undefined), 5000, "the job to hear of the join");

  // The process running the job stops; the other takes the job over and keeps restarting the leave.
  await a.stop();
  a = undefined;
  await eventually(async () => (jobsOn(b!).length === 1 ? true : undefined), 5000, "the job to move");
  const movedAt = (await record(delayId)).runningSince;
  await sleep(5000); // past the delay: only restarts keep it from firing
  const held = await record(delayId);
  assert.equal(held.status, "scheduled", "the participant is still connected, so the leave waits");
  assert.ok(held.runningSince > movedAt, "the new process restarts it");

  // The participant leaves: the job, now on the second process, sends the leave at once.
  sfu.present.delete(`${room}\n${identity}`);
  await postWebhook(b.baseUrl, { event: "participant_left", room: { name: room }, participant: { identity, disconnectReason: "CLIENT_INITIATED" } });
  const done = await eventually(async () => {
    const r = await record(delayId);
    return r.status === "finalised" ? r : undefined;
  }, 5000, "the leave to be sent");
  assert.equal(done.outcome, "send");
});
