/**
 * Ringing end to end (issue #19): a matrix-js-sdk client starts a MatrixRTC call in a DM with its
 * own MatrixRTC API, as Element Call does (`joinRoomSession` with `notificationType: "ring"`), so
 * that the SDK sends its `org.matrix.msc4075.rtc.notification` (as a sticky event, since the server
 * advertises MSC4354). The callee, a plain HTTP client with an `event_id_only` pusher as Element X
 * sets, gets a `high`-priority push at a recording gateway, fetches the event by its ID, and sees
 * the caller's call membership in the room's state. In an encrypted DM the ring travels as
 * `m.room.encrypted` (the caller's SDK uses its Rust crypto stack) and is pushed through
 * `.m.rule.encrypted_room_one_to_one`.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { MatrixClient } from "matrix-js-sdk";
import type { MatrixRTCSession } from "matrix-js-sdk/lib/matrixrtc/index.js";
import { recent, waitFor } from "./helpers/delayed.js";
import { quietSdkLogs } from "./helpers/matrix-sdk.js";
import { ALLOW_LOOPBACK, Gateway, pusherBody, type Notification } from "./helpers/push_gateway.js";
import { enc, ok, User, type Ev } from "./helpers/rooms.js";
import { SdkClients } from "./helpers/sdk_clients.js";
import { startServer, teardown, type TestServer } from "./helpers/server.js";

const RING_TYPE = "org.matrix.msc4075.rtc.notification";
const MEMBER_TYPE = "org.matrix.msc3401.call.member";
const LIVEKIT = [{ type: "livekit", livekit_service_url: "https://livekit.invalid" }];
/** Bounded polling for what the server does in the background (delivery to the gateway). */
const WAIT_MS = 20_000;

let server: TestServer;
let gateway: Gateway;
let clients: SdkClients;
const sessions: MatrixRTCSession[] = [];
let n = 0;

before(async () => {
  gateway = await new Gateway().start();
  server = await startServer(ALLOW_LOOPBACK);
  clients = await SdkClients.create(server.baseUrl);
  // Errors only: without key backup the Rust crypto stack warns, with a stack, that it found none.
  await quietSdkLogs(["error"]);
});
after(() =>
  teardown(
    // A session's membership manager has timers of its own, which stopping the client leaves running.
    () => Promise.all(sessions.splice(0).map((s) => s.stop())),
    () => clients?.stopAll(),
    () => server?.stop(),
    () => gateway?.stop(),
  ),
);

const login = (u: User) => ({ user_id: u.userId, access_token: u.token, device_id: u.deviceId });

interface Rung {
  alice: User;
  bob: User;
  roomId: string;
  /** The ring's event ID, as the caller's SDK reported it sent. */
  eventId: string;
  /** The call membership event the ring refers to (`m.relates_to`), as the SDK put it in the content. */
  membershipEventId: string;
  /** What reached the callee's gateway for the ring. */
  push: Notification;
}

/**
 * Alice starts a call in a DM with Bob, asking the SDK to ring; resolves once Bob's gateway has
 * the push for the SDK's notification event. Bob's pusher is set after he has joined, so that only
 * what happens in the call can push to it.
 */
async function ringInDm(encrypted: boolean): Promise<Rung> {
  const tag = `${encrypted ? "e" : "p"}${++n}`;
  const alice = await User.register(server.baseUrl, `caller${tag}`);
  const bob = await User.register(server.baseUrl, `callee${tag}`);
  const roomId = await alice.createRoom({
    preset: "trusted_private_chat",
    is_direct: true,
    invite: [bob.userId],
    initial_state: encrypted ? [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }] : [],
  });
  await bob.join(roomId);
  // Bob opens the DM, as a client does on joining: his receipt covers the invite, which notified him.
  const [joined] = await recent(bob, roomId, 1);
  ok(await bob.req("POST", `/rooms/${enc(roomId)}/receipt/m.read/${enc(joined!.event_id)}`, {}));
  const pushkey = `elementx-${tag}`;
  ok(
    await bob.req(
      "POST",
      "/pushers/set",
      pusherBody(gateway.url, { app_id: "io.element.elementx.android", pushkey, data: { url: gateway.url, format: "event_id_only" } }),
    ),
  );

  // matrix-js-sdk 43's default scheduler queues events with a relation (the ring refers to the
  // membership) and sends them without their query parameters, so the ring would lose
  // `org.matrix.msc4354.sticky_duration_ms` and go out as a plain event. A scheduler that queues
  // nothing sends it as `_unstable_sendStickyEvent` asks: as a sticky event.
  const scheduler = new clients.sdk.MatrixScheduler(undefined, () => null);
  const caller: MatrixClient = await clients.start(login(alice), { rustCrypto: encrypted, clientOptions: { scheduler } });
  await clients.until(caller, "Bob in the DM", () => caller.getRoom(roomId)?.getMember(bob.userId)?.membership === "join");
  if (encrypted) await clients.until(caller, "the DM to be encrypted", () => caller.getRoom(roomId)?.hasEncryptionStateEvent() === true);
  const room = caller.getRoom(roomId)!;
  const session = caller.matrixRTC.getRoomSession(room);
  sessions.push(session);
  const { MatrixRTCSessionEvent } = await import("matrix-js-sdk/lib/matrixrtc/index.js");
  const sent = new Promise<{ event_id: string; "m.relates_to"?: { event_id?: string } }>((resolve) =>
    session.once(MatrixRTCSessionEvent.DidSendCallNotification, (notification) => resolve(notification)),
  );
  // As Element Call starts a call in a DM: the first member in the call rings the others.
  session.joinRoomSession(LIVEKIT, undefined, { notificationType: "ring", callIntent: "video", manageMediaKeys: false });
  const notification = await clients.within(caller, "the SDK to send its ring", sent);
  const eventId = notification.event_id;
  const membershipEventId = notification["m.relates_to"]?.event_id;
  assert.ok(membershipEventId, `the ring refers to the membership: ${JSON.stringify(notification)}`);

  const push = await waitFor(
    `a push for ${eventId} at ${pushkey}`,
    async () => gateway.accepted.find((p) => p.event_id === eventId && p.devices.some((d) => d.pushkey === pushkey)),
    WAIT_MS,
  );
  return { alice, bob, roomId, eventId, membershipEventId, push };
}

/** What the callee sees afterwards: the event by its ID, the actions that notified, and the call membership. */
async function calleeSees(r: Rung): Promise<{ event: Ev; actions: unknown[]; membership: Ev }> {
  const event = ok(await r.bob.req("GET", `/rooms/${enc(r.roomId)}/event/${enc(r.eventId)}`)) as unknown as Ev;
  assert.equal(event.event_id, r.eventId);
  assert.equal(event.sender, r.alice.userId);
  assert.equal(event.room_id, r.roomId);

  const listed = ok(await r.bob.req("GET", "/notifications")).notifications as { event: Ev; actions: unknown[]; room_id: string; read: boolean }[];
  const entry = listed.find((x) => x.event.event_id === r.eventId);
  assert.ok(entry, `the ring is among the callee's notifications: ${JSON.stringify(listed.map((x) => x.event.type))}`);
  assert.equal(entry.room_id, r.roomId);
  assert.equal(entry.read, false);

  // The caller's device is in the call: its membership is in the room's state, and it is the event the ring refers to.
  const state = ok(await r.bob.req("GET", `/rooms/${enc(r.roomId)}/state`)) as unknown as Ev[];
  const memberships = state.filter((e) => e.type === MEMBER_TYPE && e.sender === r.alice.userId && Object.keys(e.content).length > 0);
  assert.equal(memberships.length, 1, JSON.stringify(state.filter((e) => e.type === MEMBER_TYPE)));
  const membership = memberships[0]!;
  assert.equal(membership.event_id, r.membershipEventId);
  assert.ok(membership.state_key?.includes(r.alice.userId) && membership.state_key.includes(r.alice.deviceId), membership.state_key);
  assert.equal(membership.content.device_id, r.alice.deviceId);
  assert.equal(membership.content.application, "m.call");
  assert.equal(membership.content["m.call.intent"], "video");
  return { event, actions: entry.actions, membership };
}

/** The push as an `event_id_only` pusher gets it: IDs, priority and counts, and the pusher's data without its URL. */
function assertIdOnlyHighPush(r: Rung): void {
  const device = r.push.devices[0]!;
  assert.deepEqual(r.push, {
    event_id: r.eventId,
    room_id: r.roomId,
    prio: "high",
    counts: { unread: 1 },
    devices: [{ app_id: "io.element.elementx.android", pushkey: device.pushkey, pushkey_ts: device.pushkey_ts, data: { format: "event_id_only" } }],
  });
}

describe("MatrixRTC ringing reaches the callee's phone (MSC4075)", () => {
  test("a DM: the SDK's sticky ring is pushed at high priority through .org.matrix.msc4075.rule.rtc.invite_for_room", async () => {
    const r = await ringInDm(false);
    assertIdOnlyHighPush(r);
    const { event, actions, membership } = await calleeSees(r);
    assert.equal(event.type, RING_TYPE);
    assert.equal(event.content.notification_type, "ring");
    assert.deepEqual(event.content["m.mentions"], { user_ids: [], room: true });
    assert.deepEqual(event.content["m.relates_to"], { event_id: membership.event_id, rel_type: "m.reference" });
    assert.equal(event.content["m.call.intent"], "video");
    // Sent as a sticky event, since the server advertises MSC4354: sticky for the ring's lifetime and a little more.
    const sticky = (event as unknown as { msc4354_sticky?: { duration_ms: number } }).msc4354_sticky;
    assert.ok(sticky && sticky.duration_ms >= (event.content.lifetime as number), JSON.stringify(event));
    // The rule that fired rings: sound `ring` (an `event_id_only` push carries no tweaks, the list does).
    assert.deepEqual(actions, ["notify", { set_tweak: "sound", value: "ring" }]);
  });

  test("an encrypted DM: the ring travels as m.room.encrypted and is pushed at high priority through .m.rule.encrypted_room_one_to_one", async () => {
    const r = await ringInDm(true);
    assertIdOnlyHighPush(r);
    const { event, actions } = await calleeSees(r);
    // The server never sees the ring's type: the SDK encrypted it.
    assert.equal(event.type, "m.room.encrypted");
    assert.equal(event.content.algorithm, "m.megolm.v1.aes-sha2");
    assert.equal(typeof event.content.ciphertext, "string");
    assert.equal("notification_type" in event.content, false);
    const sticky = (event as unknown as { msc4354_sticky?: { duration_ms: number } }).msc4354_sticky;
    assert.ok(sticky && sticky.duration_ms > 0, JSON.stringify(event));
    // `.m.rule.encrypted_room_one_to_one`: the client decides to ring once it has decrypted the event.
    assert.deepEqual(actions, ["notify", { set_tweak: "sound", value: "default" }]);
  });
});
