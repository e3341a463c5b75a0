/**
 * matrix-js-sdk's MatrixRTCSession against Switchboard, in compatibility mode
 * (call membership as state events, with a delayed leave): joining, leaving,
 * and a participant that dies mid-call, with and without a server restart.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import type { MatrixClient } from "matrix-js-sdk";
import type { MatrixRTCSession } from "matrix-js-sdk/lib/matrixrtc/index.js";
import { removeTestData } from "./helpers/database.js";
import { finalised, sleep, statusOf, waitFor } from "./helpers/delayed.js";
import { loadSdk } from "./helpers/matrix-sdk.js";
import { User } from "./helpers/rooms.js";
import { startServer, type TestServer } from "./helpers/server.js";

type Sdk = Awaited<ReturnType<typeof loadSdk>>;
const MEMBER_TYPE = "org.matrix.msc3401.call.member";
const LIVEKIT = [{ type: "livekit", livekit_service_url: "https://livekit.invalid" }];
/** The leave delay the clients ask for, and how often they restart it. */
const LEAVE_DELAY_MS = 4000;
const RESTART_MS = 500;
/** For the sync round trip and process scheduling on a busy machine. */
const MARGIN_MS = 5000;
const CHILD = fileURLToPath(new URL("./helpers/rtc_member.js", import.meta.url));

/**
 * matrix-js-sdk leaves timers behind after `stopClient()` (every request's timeout signal, up to
 * 110 s for a sync; the capability poller's 6 h refresh). They must not hold this test process open
 * once the tests are done, so the SDK's timers do not count for that; the servers and sockets do.
 */
const realSetTimeout = globalThis.setTimeout;
globalThis.setTimeout = Object.assign((...args: Parameters<typeof setTimeout>) => {
  const timer = realSetTimeout(...args);
  if (new Error().stack?.includes("/node_modules/matrix-js-sdk/")) timer.unref();
  return timer;
}, realSetTimeout);

/** MatrixRTC's loggers are children made at DEBUG level; they inherit the root's method factory, so filter there. */
function quietRtcLogs(mod: { logger: unknown }): void {
  type Factory = (method: string, level: unknown, name: unknown) => (...args: unknown[]) => void;
  const root = mod.logger as { methodFactory: Factory; rebuild(): void };
  const base = root.methodFactory;
  root.methodFactory = (method, level, name) => (method === "warn" || method === "error" ? base(method, level, name) : () => {});
  root.rebuild();
}

let sdk: Sdk;
let dir: string;
let server: TestServer;
const clients: MatrixClient[] = [];
const sessions: MatrixRTCSession[] = [];
const children: ChildProcess[] = [];

before(async () => {
  sdk = await loadSdk();
  quietRtcLogs(await import("matrix-js-sdk/lib/logger.js"));
  dir = mkdtempSync(path.join(tmpdir(), "switchboard-rtc-"));
  server = await startServer({}, { dir });
});
after(async () => {
  // A session's membership manager has timers of its own, which stopping the client leaves running.
  await Promise.all(sessions.splice(0).map((s) => s.stop()));
  for (const c of clients.splice(0)) c.stopClient();
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  await server.stop();
  await removeTestData(dir);
});

/** A room where members may send call membership state, as Element Call sets up. */
async function callRoom(owner: User, others: User[]): Promise<string> {
  const roomId = await owner.createRoom({
    invite: others.map((u) => u.userId),
    power_level_content_override: { events: { [MEMBER_TYPE]: 0 } },
  });
  for (const u of others) await u.join(roomId);
  return roomId;
}

async function startClient(s: TestServer, u: User): Promise<MatrixClient> {
  const client = sdk.createClient({ baseUrl: s.baseUrl, accessToken: u.token, userId: u.userId, deviceId: u.deviceId });
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

function stopClient(client: MatrixClient): void {
  client.stopClient();
  clients.splice(clients.indexOf(client), 1);
}

async function sessionOf(client: MatrixClient, roomId: string): Promise<MatrixRTCSession> {
  const room = await waitFor(`${client.getUserId()} to know ${roomId}`, async () => client.getRoom(roomId) ?? undefined);
  const session = client.matrixRTC.getRoomSession(room);
  sessions.push(session);
  return session;
}

const who = (session: MatrixRTCSession) => session.memberships.map((m) => `${m.sender}|${m.deviceId}`).sort();

/** Waits until the session's members are exactly `expected` (`user|device` strings). */
async function membersBecome(session: MatrixRTCSession, expected: string[], timeoutMs = 15_000): Promise<void> {
  const want = [...expected].sort();
  await waitFor(
    `members ${JSON.stringify(want)} (now ${JSON.stringify(who(session))})`,
    async () => (JSON.stringify(who(session)) === JSON.stringify(want) ? true : undefined),
    timeoutMs,
  );
}

const id = (u: User) => `${u.userId}|${u.deviceId}`;
const joinConfig = { delayedLeaveEventDelayMs: LEAVE_DELAY_MS, delayedLeaveEventRestartMs: RESTART_MS, manageMediaKeys: false };

/** Starts a participant process and resolves with its delayed leave's ID once it has joined. */
function spawnMember(s: TestServer, u: User, roomId: string): Promise<{ child: ChildProcess; delayId: string }> {
  const child = spawn(
    process.execPath,
    [CHILD, s.baseUrl, u.userId, u.token, u.deviceId, roomId, String(LEAVE_DELAY_MS), String(RESTART_MS)],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const match = /JOINED (\S+)/.exec(out);
      if (match) resolve({ child, delayId: match[1]! });
    });
    child.stderr!.on("data", (chunk: Buffer) => (err += chunk.toString()));
    child.on("exit", (code) => reject(new Error(`participant exited (${code}) before joining: ${err}`)));
  });
}

function kill(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGKILL");
  });
}

describe("MatrixRTCSession, compatibility mode (state events and a delayed leave)", () => {
  test("two clients join and each sees two memberships; one leaves cleanly and the other then sees one", async () => {
    const alice = await User.register(server.baseUrl, "alice");
    const bob = await User.register(server.baseUrl, "bob");
    const roomId = await callRoom(alice, [bob]);
    const [ca, cb] = await Promise.all([startClient(server, alice), startClient(server, bob)]);
    const [sa, sb] = await Promise.all([sessionOf(ca, roomId), sessionOf(cb, roomId)]);
    sa.joinRoomSession(LIVEKIT, undefined, joinConfig);
    sb.joinRoomSession(LIVEKIT, undefined, joinConfig);
    await Promise.all([membersBecome(sa, [id(alice), id(bob)]), membersBecome(sb, [id(alice), id(bob)])]);
    // Each has its delayed leave scheduled on the server.
    const aliceLeave = await waitFor("alice's delayed leave", async () => sa.delayId);
    assert.equal((await statusOf(alice, aliceLeave)).status, "scheduled");

    assert.equal(await sa.leaveRoomSession(5000), true);
    await membersBecome(sb, [id(bob)]);
    await membersBecome(sa, [id(bob)]);
    // A clean leave sends the scheduled leave itself, so nothing is left behind to fire later.
    const leave = await finalised(alice, aliceLeave);
    assert.equal(leave.outcome, "send");
    assert.equal(leave.reason, "action");
    assert.equal(await sb.leaveRoomSession(5000), true);
    await membersBecome(sa, []);
    stopClient(ca);
    stopClient(cb);
  });

  test("a participant killed with SIGKILL disappears for the others within the leave delay, plus a margin", async () => {
    const carol = await User.register(server.baseUrl, "carol");
    const dave = await User.register(server.baseUrl, "dave");
    const roomId = await callRoom(carol, [dave]);
    const observer = await startClient(server, carol);
    const session = await sessionOf(observer, roomId);
    const { child, delayId } = await spawnMember(server, dave, roomId);
    await membersBecome(session, [id(dave)]);
    // Let it restart its leave a few times, as a live client does.
    await sleep(3 * RESTART_MS);
    assert.equal((await statusOf(dave, delayId)).status, "scheduled", "the live client keeps its leave pending");
    await kill(child);
    await membersBecome(session, [], LEAVE_DELAY_MS + MARGIN_MS);
    const status = await finalised(dave, delayId);
    assert.equal(status.outcome, "send");
    assert.equal(status.reason, "delay", "the server sent the leave, on its timer");
    const state = await carol.getState(roomId, MEMBER_TYPE, `_${dave.userId}_${dave.deviceId}_m.call`);
    assert.deepEqual(state, {}, "the membership is the empty leave content");
    stopClient(observer);
  });

  test("the same, with the server restarted in the middle of the delay", async () => {
    const erin = await User.register(server.baseUrl, "erin");
    const frank = await User.register(server.baseUrl, "frank");
    const roomId = await callRoom(erin, [frank]);
    const observer = await startClient(server, erin);
    const session = await sessionOf(observer, roomId);
    const { child, delayId } = await spawnMember(server, frank, roomId);
    await membersBecome(session, [id(frank)]);
    await kill(child);
    stopClient(observer);
    const killedAt = Date.now();
    await server.homeserver.stop();
    await sleep(LEAVE_DELAY_MS / 4);
    server = await startServer({}, { dir });

    const erin2 = new User(server.baseUrl, erin.userId, erin.token, erin.deviceId);
    const frank2 = new User(server.baseUrl, frank.userId, frank.token, frank.deviceId);
    const observer2 = await startClient(server, erin2);
    const session2 = await sessionOf(observer2, roomId);
    await membersBecome(session2, [], Math.max(0, killedAt + LEAVE_DELAY_MS + MARGIN_MS - Date.now()));
    const status = await finalised(frank2, delayId);
    assert.equal(status.outcome, "send");
    assert.equal(status.reason, "delay");
    stopClient(observer2);
  });
});
