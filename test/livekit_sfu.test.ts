/**
 * LiveKit's room service as Switchboard calls it, and the delayed-event calls
 * a delegated leave makes to another homeserver. No LiveKit SFU can run on
 * this machine, so a local HTTP server plays LiveKit's Twirp API and records
 * what it is asked; another plays a homeserver's Client-Server API.
 */
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, afterEach, before, describe, test } from "node:test";
import { TokenVerifier } from "livekit-server-sdk";
import { LeaveDelegations } from "../src/services/livekit/delegation.js";
import { remoteLeaveActions, type ActionOutcome, type LeaveAction } from "../src/services/livekit/leave_actions.js";
import { livekitIdentity, livekitRoomAlias } from "../src/services/livekit/naming.js";
import { Outbound } from "../src/services/livekit/outbound.js";
import { eventually, FakeLiveKit, LK_KEY, LK_SECRET, openIdToken, startLiveKitServer } from "./helpers/livekit.js";
import { registerUser, request, type TestServer } from "./helpers/server.js";

const systemClock = { now: () => Date.now() };

describe("room creation through LiveKit's room service", () => {
  let server: TestServer;
  let sfu: FakeLiveKit;
  before(async () => {
    sfu = new FakeLiveKit();
    server = await startLiveKitServer({ livekit: { url: await sfu.start() } });
  });
  after(async () => {
    await server.stop();
    await sfu.stop();
  });

  test("get_token for a full-access user creates the room: CreateRoom with the alias and §7's timeouts", async () => {
    const alice = await registerUser(server.baseUrl, "alice");
    const openid = await openIdToken(server.baseUrl, alice);
    const member = { id: "m1", claimed_user_id: alice.user_id, claimed_device_id: alice.device_id };
    const res = await request(server.baseUrl, "POST", "/livekit/jwt/get_token", {
      body: { room_id: "!call:localhost", slot_id: "m.call#ROOM", openid_token: openid, member },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const creates = sfu.of("CreateRoom");
    assert.equal(creates.length, 1);
    const alias = livekitRoomAlias("!call:localhost", "m.call#ROOM");
    assert.equal(creates[0]!.body.name, alias);
    assert.equal(creates[0]!.body.emptyTimeout, 300);
    assert.equal(creates[0]!.body.departureTimeout, 20);
    // The room service call is authorised with a token of our own, allowed to create rooms.
    const auth = creates[0]!.authorization ?? "";
    assert.match(auth, /^Bearer /);
    const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(auth.slice(7));
    assert.equal((claims.video as Record<string, unknown>).roomCreate, true);
    // The user's own token cannot create rooms.
    const userClaims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(res.body.jwt as string);
    assert.notEqual((userClaims.video as Record<string, unknown>).roomCreate, true);
    assert.equal(userClaims.sub, livekitIdentity(alice.user_id, alice.device_id, "m1"));
  });
});

describe("an unreachable SFU", () => {
  let server: TestServer;
  before(async () => {
    // Nothing listens on port 2, a privileged port no test starts anything on (a port freed a moment
    // ago could be taken again), and unlike port 1 it is not on fetch's list of blocked ports.
    server = await startLiveKitServer({ livekit: { url: "ws://127.0.0.1:2" } });
  });
  after(async () => server?.stop());

  test("get_token answers 500 M_UNKNOWN saying the room could not be created, and why", async () => {
    const alice = await registerUser(server.baseUrl, "alice");
    const openid = await openIdToken(server.baseUrl, alice);
    const res = await request(server.baseUrl, "POST", "/livekit/jwt/get_token", {
      body: {
        room_id: "!call:localhost",
        slot_id: "m.call#ROOM",
        openid_token: openid,
        member: { id: "m1", claimed_user_id: alice.user_id, claimed_device_id: alice.device_id },
      },
    });
    assert.equal(res.status, 500);
    assert.equal(res.body.errcode, "M_UNKNOWN");
    assert.match(res.body.error!, /Unable to create the room on the LiveKit SFU \(127\.0\.0\.1:\d+\): it is unreachable \(ECONNREFUSED\)/);
  });
});

describe("a remote homeserver's delayed-event API, as a delegated leave calls it", () => {
  interface Seen {
    method: string;
    url: string;
    body: string;
    authorization?: string;
  }
  const seen: Seen[] = [];
  let answer: (url: string) => { status: number; headers?: Record<string, string>; body?: string } = () => ({ status: 200 });
  const cs = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      seen.push({ method: req.method!, url: req.url!, body, authorization: req.headers.authorization });
      const a = answer(req.url!);
      res.writeHead(a.status, { "content-type": "application/json", ...a.headers });
      res.end(a.body ?? "{}");
    });
  });
  let base = "";
  before(async () => {
    await new Promise<void>((r) => cs.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(cs.address() as AddressInfo).port}/`;
  });
  after(() => new Promise<void>((r) => cs.close(() => r())));

  const act = (action: LeaveAction, delayId = "syd_abc/..") =>
    remoteLeaveActions(new Outbound({ timeoutMs: 2000 }), base, delayId, systemClock).act(action);

  test("POSTs {} without a token to the unstable delayed_events path; 200 and 204 are success", async () => {
    answer = () => ({ status: 200 });
    assert.deepEqual(await act("restart"), { kind: "done" });
    const last = seen.at(-1)!;
    assert.equal(last.method, "POST");
    // The delay ID is path-escaped: it comes from the client.
    assert.equal(last.url, "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/syd_abc%2F../restart");
    assert.equal(last.body, "{}");
    assert.equal(last.authorization, undefined);
    answer = () => ({ status: 204, body: "" });
    assert.deepEqual(await act("send"), { kind: "done" });
  });

  test("404 on send means sent already; 404 on restart means the event is gone", async () => {
    answer = () => ({ status: 404, body: '{"errcode":"M_NOT_FOUND","error":"x"}' });
    assert.deepEqual(await act("send"), { kind: "done" });
    assert.deepEqual(await act("restart"), { kind: "gone" });
  });

  test("429 honours Retry-After (seconds or date), else retry_after_ms", async () => {
    answer = () => ({ status: 429, headers: { "retry-after": "2" } });
    assert.equal(((await act("restart")) as Extract<ActionOutcome, { kind: "retry" }>).afterMs, 2000);
    answer = () => ({ status: 429, headers: { "retry-after": new Date(Date.now() + 5000).toUTCString() } });
    const dated = (await act("restart")) as Extract<ActionOutcome, { kind: "retry" }>;
    assert.ok(dated.afterMs! > 3000 && dated.afterMs! <= 5000, String(dated.afterMs));
    answer = () => ({ status: 429, body: '{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1500}' });
    assert.equal(((await act("send")) as Extract<ActionOutcome, { kind: "retry" }>).afterMs, 1500);
  });

  test("5xx and an unreachable server are retried", async () => {
    answer = () => ({ status: 502 });
    assert.equal((await act("send")).kind, "retry");
    const closed = remoteLeaveActions(new Outbound({ timeoutMs: 1000 }), "http://127.0.0.1:1/", "syd_x", systemClock);
    assert.equal((await closed.act("restart")).kind, "retry");
  });
});

describe("delegated-leave jobs", () => {
  const quiet = { info() {}, warn() {} };
  const absent = { participantPresent: async () => false };
  // Stopped after each test, failed or not, so that no restart loop outlives its test.
  const made: LeaveDelegations[] = [];
  afterEach(() => made.splice(0).forEach((jobs) => jobs.stop()));
  function delegations(deps: ConstructorParameters<typeof LeaveDelegations>[0]): LeaveDelegations {
    const jobs = new LeaveDelegations(deps);
    made.push(jobs);
    return jobs;
  }

  function recorder(script: (action: LeaveAction, n: number) => ActionOutcome) {
    const calls: LeaveAction[] = [];
    return { calls, actions: { act: async (a: LeaveAction) => script(a, calls.push(a)) } };
  }

  test("joined: restarts at once and then every 80 % of the delay; left: sends once and finishes", async () => {
    const jobs = delegations({ probe: absent, sanityIntervalMs: 0, clock: systemClock, logger: quiet });
    const r = recorder(() => ({ kind: "done" }));
    jobs.add({ room: "R", identity: "I", delayId: "d", delayTimeoutMs: 500, actions: r.actions, userId: "@u:x" });
    jobs.participantEvent("R", "I", "joined");
    await eventually(() => (r.calls.filter((c) => c === "restart").length >= 3 ? true : undefined), 3000, "three restarts");
    jobs.participantEvent("R", "I", "left_intentionally");
    await eventually(() => (jobs.list().length === 0 ? true : undefined), 2000, "the job to finish");
    assert.equal(r.calls.filter((c) => c === "send").length, 1);
    assert.equal(r.calls.at(-1), "send");
  });

  test("a restart answered 404 ends the job without sending", async () => {
    const jobs = delegations({ probe: absent, sanityIntervalMs: 0, clock: systemClock, logger: quiet });
    const r = recorder(() => ({ kind: "gone" }));
    jobs.add({ room: "R", identity: "I", delayId: "d", delayTimeoutMs: 5000, actions: r.actions, userId: "@u:x" });
    jobs.participantEvent("R", "I", "joined");
    await eventually(() => (jobs.list().length === 0 ? true : undefined), 2000, "the job to end");
    assert.deepEqual(r.calls, ["restart"]);
  });

  test("found by polling, then gone from the SFU at a sanity check: the leave is sent", async () => {
    let present = true;
    const probe = { participantPresent: async () => present };
    const jobs = delegations({ probe, sanityIntervalMs: 100, clock: systemClock, logger: quiet });
    const r = recorder(() => ({ kind: "done" }));
    jobs.add({ room: "R", identity: "I", delayId: "d", delayTimeoutMs: 10_000, actions: r.actions, userId: "@u:x" });
    await eventually(() => (jobs.list()[0]?.state === "connected" ? true : undefined), 2000, "connected");
    present = false;
    await eventually(() => (r.calls.includes("send") ? true : undefined), 2000, "the leave");
  });

  test("never seen on the SFU within the delay: the leave is sent", async () => {
    const jobs = delegations({ probe: absent, sanityIntervalMs: 0, clock: systemClock, logger: quiet });
    const r = recorder(() => ({ kind: "done" }));
    jobs.add({ room: "R", identity: "I", delayId: "d", delayTimeoutMs: 300, actions: r.actions, userId: "@u:x" });
    await eventually(() => (r.calls.includes("send") ? true : undefined), 2000, "the leave");
    assert.ok(!r.calls.includes("restart"));
  });

  test("a new job for the same participant replaces the old one; a lost connection before joining aborts", async () => {
    const jobs = delegations({ probe: absent, sanityIntervalMs: 0, clock: systemClock, logger: quiet });
    const first = recorder(() => ({ kind: "done" }));
    const second = recorder(() => ({ kind: "done" }));
    const old = jobs.add({ room: "R", identity: "I", delayId: "d1", delayTimeoutMs: 300, actions: first.actions, userId: "@u:x" });
    jobs.add({ room: "R", identity: "I", delayId: "d2", delayTimeoutMs: 10_000, actions: second.actions, userId: "@u:x" });
    assert.equal(old.state, "replaced");
    jobs.participantEvent("R", "I", "left_aborted");
    await eventually(() => (jobs.list().length === 0 ? true : undefined), 2000, "the job to end");
    await new Promise((r) => setTimeout(r, 400));
    assert.deepEqual(first.calls, [], "the replaced job does nothing more");
    assert.deepEqual(second.calls, [], "an aborted job sends nothing: the client's own timer stands");
  });

  test("a failing restart is retried on a backoff, within the delay", async () => {
    const jobs = delegations({ probe: absent, sanityIntervalMs: 0, clock: systemClock, logger: quiet });
    const r = recorder((_a, n) => (n === 1 ? { kind: "retry", afterMs: 50, reason: "429" } : { kind: "done" }));
    jobs.add({ room: "R", identity: "I", delayId: "d", delayTimeoutMs: 5000, actions: r.actions, userId: "@u:x" });
    jobs.participantEvent("R", "I", "joined");
    await eventually(() => (r.calls.length >= 2 ? true : undefined), 2000, "the retry");
    assert.equal(jobs.list()[0]?.state, "connected");
  });
});
