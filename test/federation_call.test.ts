/**
 * A federated MatrixRTC call (issue #15 §2): a room created on a.test and joined from b.test
 * through a real federated join, with matrix-js-sdk clients syncing on both servers. Messages
 * and state cross both ways as the SDK sees them; a MatrixRTCSession has one member on each
 * server and both see both memberships; the member on b.test gets a LiveKit token for a.test's
 * SFU through the MSC4195 relay (and one for its own server's SFU); a member on b.test that
 * dies mid-call is ended by its delayed leave (MSC4140), sent by b.test on its timer, and
 * a.test's client sees the membership go. LiveKit's API is a stand-in on each server.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { TokenVerifier } from "livekit-server-sdk";
import type { MatrixClient } from "matrix-js-sdk";
import type { MatrixRTCSession } from "matrix-js-sdk/lib/matrixrtc/index.js";
import { livekitIdentity, livekitRoomAlias } from "../src/services/livekit/naming.js";
import { finalised, sleep, statusOf, waitFor } from "./helpers/delayed.js";
import { TestFederation, type FederatedServer } from "./helpers/federation.js";
import { FakeLiveKit, LK_KEY, LK_SECRET } from "./helpers/livekit.js";
import { loadSdk, quietSdkLogs } from "./helpers/matrix-sdk.js";
import { enc, User } from "./helpers/rooms.js";
import { NO_LIMIT, request } from "./helpers/server.js";

type Sdk = Awaited<ReturnType<typeof loadSdk>>;
const MEMBER_TYPE = "org.matrix.msc3401.call.member";
const GET_TOKEN = "/_matrix/client/unstable/io.element.msc4195/rtc/livekit/get_token";
/** The leave delay the clients ask for, and how often a live client restarts it. */
const LEAVE_DELAY_MS = 4000;
const RESTART_MS = 500;
/** Guards against a hung test (federation hops and syncs on a shared machine), not performance assertions. */
const GIVE_UP_MS = 60_000;
const CHILD = fileURLToPath(new URL("./helpers/rtc_member.js", import.meta.url));

/**
 * matrix-js-sdk leaves timers behind after `stopClient()`; they must not hold this test process
 * open once the tests are done (the servers and sockets do that until they are closed).
 */
const realSetTimeout = globalThis.setTimeout;
globalThis.setTimeout = Object.assign((...args: Parameters<typeof setTimeout>) => {
  const timer = realSetTimeout(...args);
  if (new Error().stack?.includes("/node_modules/matrix-js-sdk/")) timer.unref();
  return timer;
}, realSetTimeout);

describe("a federated MatrixRTC call between two Switchboards", () => {
  const fed = new TestFederation(["a.test", "b.test"]);
  const sfuA = new FakeLiveKit();
  const sfuB = new FakeLiveKit();
  let urlA: string;
  let urlB: string;
  let sdk: Sdk;
  let a: FederatedServer;
  let b: FederatedServer;
  let alice: User;
  let bob: User;
  let carol: User;
  let roomId: string;
  let aliceClient: MatrixClient;
  let bobClient: MatrixClient;
  const clients: MatrixClient[] = [];
  const sessions: MatrixRTCSession[] = [];
  const children: ChildProcess[] = [];

  const livekit = (url: string) => ({ rc_rtc_transports: NO_LIMIT, livekit: { url, api_key: LK_KEY, api_secret: LK_SECRET } });

  async function joinFromB(user: User): Promise<void> {
    const res = await request(b.server.baseUrl, "POST", `/_matrix/client/v3/join/${enc(roomId)}?via=a.test`, { token: user.token, body: {} });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }

  async function startClient(user: User): Promise<MatrixClient> {
    const client = sdk.createClient({ baseUrl: user.baseUrl, accessToken: user.token, userId: user.userId, deviceId: user.deviceId });
    clients.push(client);
    const prepared = new Promise<void>((resolve, reject) => {
      client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        if (state === "PREPARED") resolve();
        if (state === "ERROR") reject(data?.error ?? new Error("sync error"));
      });
    });
    await client.startClient();
    await prepared;
    return client;
  }

  /** Re-checks `check` (what the client's sync has brought so far) until it holds. */
  const until = (what: string, check: () => boolean) => waitFor(what, async () => (check() ? true : undefined), GIVE_UP_MS);

  const bodies = (client: MatrixClient) =>
    (client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? []).filter((e) => e.getType() === "m.room.message").map((e) => e.getContent().body as string);

  const stateContent = (client: MatrixClient, type: string, stateKey = "") =>
    client.getRoom(roomId)?.currentState.getStateEvents(type, stateKey)?.getContent();

  async function sessionOf(client: MatrixClient): Promise<MatrixRTCSession> {
    const room = await waitFor(`${client.getUserId()} to know the room`, async () => client.getRoom(roomId) ?? undefined, GIVE_UP_MS);
    const session = client.matrixRTC.getRoomSession(room);
    sessions.push(session);
    return session;
  }

  const who = (session: MatrixRTCSession) => session.memberships.map((m) => `${m.sender}|${m.deviceId}`).sort();
  const id = (u: User) => `${u.userId}|${u.deviceId}`;

  async function membersBecome(session: MatrixRTCSession, expected: string[]): Promise<void> {
    const want = JSON.stringify([...expected].sort());
    await waitFor(`members ${want} (now ${JSON.stringify(who(session))})`, async () => (JSON.stringify(who(session)) === want ? true : undefined), GIVE_UP_MS);
  }

  before(async () => {
    sdk = await loadSdk();
    await quietSdkLogs();
    urlA = await sfuA.start();
    urlB = await sfuB.start();
    await fed.frontsUp();
    a = await fed.start("a.test", livekit(urlA));
    b = await fed.start("b.test", livekit(urlB));
    alice = await User.register(a.server.baseUrl, "alice");
    bob = await User.register(b.server.baseUrl, "bob");
    carol = await User.register(b.server.baseUrl, "carol");
    // As Element Call sets a call room up: anyone may send call membership state (and, here, the topic).
    roomId = await alice.createRoom({
      preset: "public_chat",
      name: "Call",
      power_level_content_override: { events: { [MEMBER_TYPE]: 0, "m.room.topic": 0 } },
    });
    await joinFromB(bob);
    aliceClient = await startClient(alice);
    bobClient = await startClient(bob);
  });

  after(async () => {
    // A session's membership manager has timers of its own, which stopping the client leaves running.
    await Promise.all(sessions.splice(0).map((s) => s.stop()));
    for (const c of clients.splice(0)) c.stopClient();
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    await fed.close();
    await sfuA.stop();
    await sfuB.stop();
  });

  test("matrix-js-sdk on each server sees the other's messages and state changes", async () => {
    await until("bob's client to see the room", () => bobClient.getRoom(roomId) !== null);
    assert.equal(bobClient.getRoom(roomId)!.name, "Call");
    await until("alice's client to see bob joined", () => aliceClient.getRoom(roomId)?.getMember(bob.userId)?.membership === "join");

    await aliceClient.sendTextMessage(roomId, "from a.test");
    await until("bob's client to see alice's message", () => bodies(bobClient).includes("from a.test"));
    await bobClient.sendTextMessage(roomId, "from b.test");
    await until("alice's client to see bob's message", () => bodies(aliceClient).includes("from b.test"));

    await bobClient.sendStateEvent(roomId, "m.room.topic" as never, { topic: "set on b.test" } as never, "");
    await until("alice's client to see bob's topic", () => stateContent(aliceClient, "m.room.topic")?.topic === "set on b.test");
    await aliceClient.setRoomName(roomId, "Call, renamed");
    await until("bob's client to see alice's name", () => stateContent(bobClient, "m.room.name")?.name === "Call, renamed");
    // Each message arrived once, in the order sent, on both sides.
    for (const client of [aliceClient, bobClient]) assert.deepEqual(bodies(client), ["from a.test", "from b.test"]);
  });

  test("one member on each server: both sessions see both; b.test's member gets tokens for a.test's SFU (relayed) and its own", async () => {
    const [sa, sb] = await Promise.all([sessionOf(aliceClient), sessionOf(bobClient)]);
    const config = { delayedLeaveEventDelayMs: LEAVE_DELAY_MS, delayedLeaveEventRestartMs: RESTART_MS, manageMediaKeys: false };
    sa.joinRoomSession([{ type: "livekit", livekit_service_url: "https://a.test/livekit/jwt" }], undefined, config);
    sb.joinRoomSession([{ type: "livekit", livekit_service_url: "https://b.test/livekit/jwt" }], undefined, config);
    await Promise.all([membersBecome(sa, [id(alice), id(bob)]), membersBecome(sb, [id(alice), id(bob)])]);

    // Bob chooses the SFU of alice's server (the one her membership publishes to), and asks his own server.
    const bobMember = sb.memberships.find((m) => m.sender === bob.userId)!;
    const aliceMember = sb.memberships.find((m) => m.sender === alice.userId)!;
    assert.equal(aliceMember.transports[0]?.livekit_service_url, "https://a.test/livekit/jwt");
    const body = { room_id: roomId, slot_id: bobMember.slotId, member_id: bobMember.memberId };
    const seen = a.front.requests.length;
    const relayed = await request(b.server.baseUrl, "POST", GET_TOKEN, { token: bob.token, body: { ...body, server_name: "a.test", url: urlA } });
    assert.equal(relayed.status, 200, JSON.stringify(relayed.body));
    assert.ok(a.front.requests.slice(seen).includes("POST /_matrix/federation/v1/rtc/livekit/get_token"), "b.test relayed the request to a.test");
    const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(relayed.body.jwt as string);
    assert.equal(claims.sub, livekitIdentity(bob.userId, bob.deviceId, bobMember.memberId));
    assert.equal(claims.video?.room, livekitRoomAlias(roomId, bobMember.slotId));
    assert.equal(claims.video?.canSubscribe, true);
    assert.equal(claims.video?.canPublish, false, "a remote user subscribes on a.test's SFU and publishes to its own");

    // His own server's SFU, for publishing: a token of b.test's own, no relay.
    const before = a.front.requests.length;
    const own = await request(b.server.baseUrl, "POST", GET_TOKEN, { token: bob.token, body: { ...body, url: urlB } });
    assert.equal(own.status, 200, JSON.stringify(own.body));
    assert.equal(a.front.requests.length, before);
    const ownClaims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(own.body.jwt as string);
    assert.equal(ownClaims.sub, livekitIdentity(bob.userId, bob.deviceId, bobMember.memberId));
    assert.equal(ownClaims.video?.canPublish, true);

    // Bob leaves the call cleanly: alice's session sees it, and then alice's own leave reaches bob.
    assert.equal(await sb.leaveRoomSession(5000), true);
    await membersBecome(sa, [id(alice)]);
    assert.equal(await sa.leaveRoomSession(5000), true);
    await membersBecome(sb, []);
  });

  test("a member on b.test that dies mid-call: b.test sends its delayed leave, and a.test's client sees the membership end", async () => {
    await joinFromB(carol);
    const observer = await sessionOf(aliceClient);
    await membersBecome(observer, []);
    const child = spawn(
      process.execPath,
      [CHILD, b.server.baseUrl, carol.userId, carol.token, carol.deviceId, roomId, String(LEAVE_DELAY_MS), String(RESTART_MS)],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    children.push(child);
    const delayId = await new Promise<string>((resolve, reject) => {
      let out = "";
      let err = "";
      child.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString();
        const match = /JOINED (\S+)/.exec(out);
        if (match) resolve(match[1]!);
      });
      child.stderr!.on("data", (chunk: Buffer) => (err += chunk.toString()));
      child.on("exit", (code) => reject(new Error(`participant exited (${code}) before joining: ${err}`)));
    });
    await membersBecome(observer, [id(carol)]);
    // A live client keeps restarting its leave, so it stays pending on b.test.
    await sleep(3 * RESTART_MS);
    assert.equal((await statusOf(carol, delayId)).status, "scheduled");

    await new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.kill("SIGKILL");
    });
    await membersBecome(observer, []);
    const status = await finalised(carol, delayId, GIVE_UP_MS);
    assert.equal(status.outcome, "send");
    assert.equal(status.reason, "delay", "b.test sent the leave on its timer");
    // a.test holds the leave as current state, as sent by b.test.
    const key = `_${carol.userId}_${carol.deviceId}_m.call`;
    const onA = await alice.getState(roomId, MEMBER_TYPE, key);
    assert.deepEqual(onA, {}, "the membership is the empty leave content on a.test too");
    const leaveOnA = aliceClient.getRoom(roomId)?.currentState.getStateEvents(MEMBER_TYPE, key);
    assert.equal(leaveOnA?.getId(), status.event_id, "the event a.test's client has is the one b.test sent");
  });
});
