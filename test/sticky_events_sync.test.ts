/**
 * MSC4354 sticky events in `/sync`: the `msc4354_sticky` section of a joined
 * room carries the live sticky events the client has not been sent, whatever
 * the timeline limit, never those the same response's timeline holds; each
 * event carries its stickiness and the time it has left; expired and
 * redacted events are no longer sticky. Then matrix-js-sdk's MatrixRTCSession
 * in sticky mode (Element Call's Matrix 2.0 mode) between two clients.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { MatrixClient } from "matrix-js-sdk";
import type { MatrixRTCSession } from "matrix-js-sdk/lib/matrixrtc/index.js";
import { waitFor } from "./helpers/delayed.js";
import { quietSdkLogs } from "./helpers/matrix-sdk.js";
import { enc, ok, User } from "./helpers/rooms.js";
import { SdkClients } from "./helpers/sdk_clients.js";
import { request, startServer, type TestServer } from "./helpers/server.js";

const STICKY = "org.matrix.msc4354.sticky_duration_ms";
const TTL = "msc4354_sticky_duration_ttl_ms";

interface Ev {
  event_id: string;
  type: string;
  content: Record<string, unknown>;
  msc4354_sticky?: { duration_ms: number };
  unsigned?: Record<string, unknown>;
}
interface RoomEntry {
  timeline: { events: Ev[]; limited: boolean };
  msc4354_sticky?: { events: Ev[] };
}
interface SyncBody {
  next_batch: string;
  rooms: { join: Record<string, RoomEntry> };
}

/** The server's clock runs `offset` ms ahead of the real one, so a test can let an hour pass at once. */
let offset = 0;
const clock = { now: () => Date.now() + offset };
let server: TestServer;
let n = 0;

before(async () => {
  server = await startServer({}, { clock });
});
after(async () => server?.stop());

const user = () => User.register(server.baseUrl, `sticky${++n}`);

async function sync(u: User, query: { since?: string; limit?: number } = {}): Promise<SyncBody> {
  const qs = new URLSearchParams();
  if (query.since) qs.set("since", query.since);
  if (query.limit !== undefined) qs.set("filter", JSON.stringify({ room: { timeline: { limit: query.limit } } }));
  return ok(await request(server.baseUrl, "GET", `/_matrix/client/v3/sync?${qs}`, { token: u.token })) as unknown as SyncBody;
}

let txn = 0;
async function sendSticky(u: User, roomId: string, content: Record<string, unknown>, durationMs: number, type = "org.example.sticky"): Promise<string> {
  const res = await u.req("PUT", `/rooms/${enc(roomId)}/send/${enc(type)}/s${++txn}?${STICKY}=${durationMs}`, content);
  return ok(res).event_id as string;
}

const ids = (events: Ev[] | undefined) => (events ?? []).map((e) => e.event_id);

describe("sticky events in /sync", () => {
  test("/versions advertises org.matrix.msc4354", async () => {
    const res = ok(await request(server.baseUrl, "GET", "/_matrix/client/versions"));
    assert.equal((res.unstable_features as Record<string, boolean>)["org.matrix.msc4354"], true);
  });

  test("in the timeline: the event carries msc4354_sticky and the time left, and is not repeated in the sticky section", async () => {
    const alice = await user();
    const roomId = await alice.createRoom();
    const first = await sync(alice);
    const eventId = await sendSticky(alice, roomId, { msc4354_sticky_key: "k1" }, 60_000);
    const room = (await sync(alice, { since: first.next_batch })).rooms.join[roomId]!;
    const event = room.timeline.events.find((e) => e.event_id === eventId)!;
    assert.deepEqual(event.msc4354_sticky, { duration_ms: 60_000 });
    const ttl = event.unsigned?.[TTL] as number;
    assert.ok(ttl > 0 && ttl <= 60_000, `ttl ${ttl}`);
    assert.equal(room.msc4354_sticky, undefined, "no duplicate of a timeline event");
  });

  test("beyond the timeline limit: the sticky section carries it, once", async () => {
    const alice = await user();
    const roomId = await alice.createRoom();
    const first = await sync(alice);
    const eventId = await sendSticky(alice, roomId, { msc4354_sticky_key: "k2" }, 60_000);
    for (let i = 0; i < 5; i++) await alice.send(roomId, `after ${i}`);
    const second = await sync(alice, { since: first.next_batch, limit: 2 });
    const room = second.rooms.join[roomId]!;
    assert.equal(room.timeline.limited, true);
    assert.ok(!ids(room.timeline.events).includes(eventId));
    assert.deepEqual(ids(room.msc4354_sticky?.events), [eventId]);
    const sticky = room.msc4354_sticky!.events[0]!;
    assert.deepEqual(sticky.content, { msc4354_sticky_key: "k2" });
    assert.ok((sticky.unsigned?.[TTL] as number) > 0);
    // Stream-like: the next sync does not send it again.
    await alice.send(roomId, "more");
    const third = await sync(alice, { since: second.next_batch, limit: 2 });
    assert.equal(third.rooms.join[roomId]!.msc4354_sticky, undefined);
  });

  test("a member who joins later gets the live sticky events, whatever history visibility says", async () => {
    const alice = await user();
    const bob = await user();
    const roomId = await alice.createRoom({
      preset: "public_chat",
      initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: "joined" } }],
    });
    const live = await sendSticky(alice, roomId, { msc4354_sticky_key: "k3" }, 60_000);
    const expired = await sendSticky(alice, roomId, { msc4354_sticky_key: "k4" }, 1);
    for (let i = 0; i < 3; i++) await alice.send(roomId, `filler ${i}`);
    const before = await sync(bob);
    await bob.join(roomId);
    const room = (await sync(bob, { since: before.next_batch, limit: 1 })).rooms.join[roomId]!;
    assert.deepEqual(ids(room.msc4354_sticky?.events), [live], "live ones only, not the expired one");
    assert.ok(!ids(room.msc4354_sticky?.events).includes(expired));
    // An initial sync too.
    assert.deepEqual(ids((await sync(bob, { limit: 1 })).rooms.join[roomId]!.msc4354_sticky?.events), [live]);
  });

  test("a redacted sticky event is no longer sticky", async () => {
    const alice = await user();
    const roomId = await alice.createRoom();
    const eventId = await sendSticky(alice, roomId, { msc4354_sticky_key: "k5" }, 60_000);
    for (let i = 0; i < 3; i++) await alice.send(roomId, `filler ${i}`);
    assert.deepEqual(ids((await sync(alice, { limit: 1 })).rooms.join[roomId]!.msc4354_sticky?.events), [eventId]);
    ok(await alice.req("PUT", `/rooms/${enc(roomId)}/redact/${enc(eventId)}/r1`, {}));
    assert.equal((await sync(alice, { limit: 1 })).rooms.join[roomId]!.msc4354_sticky, undefined);
    const redacted = ok(await alice.event(roomId, eventId)) as unknown as Ev;
    assert.equal(redacted.msc4354_sticky, undefined);
  });

  test("sticky events expire: after their duration (an hour at most) they leave the section and lose the time left", async () => {
    const alice = await user();
    const roomId = await alice.createRoom();
    // Asking for more than an hour is refused; an hour is the most.
    assert.equal((await alice.req("PUT", `/rooms/${enc(roomId)}/send/org.example.sticky/long?${STICKY}=3600001`, {})).status, 400);
    const eventId = await sendSticky(alice, roomId, { msc4354_sticky_key: "k6" }, 3_600_000);
    for (let i = 0; i < 3; i++) await alice.send(roomId, `filler ${i}`);
    assert.deepEqual(ids((await sync(alice, { limit: 1 })).rooms.join[roomId]!.msc4354_sticky?.events), [eventId]);
    offset += 3_600_000 + 1000;
    try {
      assert.equal((await sync(alice, { limit: 1 })).rooms.join[roomId]!.msc4354_sticky, undefined);
      const event = ok(await alice.event(roomId, eventId)) as unknown as Ev;
      assert.deepEqual(event.msc4354_sticky, { duration_ms: 3_600_000 }, "still marked, as sent");
      assert.equal(event.unsigned?.[TTL], undefined, "but no time left");
    } finally {
      offset -= 3_600_000 + 1000;
    }
  });

  test("a delayed sticky event is sticky once it is sent", async () => {
    const alice = await user();
    const roomId = await alice.createRoom();
    const res = ok(
      await alice.req("PUT", `/rooms/${enc(roomId)}/send/org.example.sticky/d1?org.matrix.msc4140.delay=100&${STICKY}=60000`, {
        msc4354_sticky_key: "k7",
      }),
    );
    assert.equal(typeof res.delay_id, "string");
    const eventId = await waitFor("the delayed sticky event", async () => {
      const room = (await sync(alice)).rooms.join[roomId]!;
      return room.timeline.events.find((e) => e.type === "org.example.sticky")?.event_id;
    });
    for (let i = 0; i < 3; i++) await alice.send(roomId, `filler ${i}`);
    const sticky = (await sync(alice, { limit: 1 })).rooms.join[roomId]!.msc4354_sticky?.events ?? [];
    assert.deepEqual(ids(sticky), [eventId]);
    assert.deepEqual(sticky[0]!.msc4354_sticky, { duration_ms: 60_000 });
  });
});

describe("MatrixRTCSession in sticky mode (Element Call's matrix_2_0), two matrix-js-sdk clients", () => {
  let clients: SdkClients | undefined;
  const sessions: MatrixRTCSession[] = [];
  after(async () => {
    await Promise.all(sessions.splice(0).map((s) => s.stop()));
    clients?.stopAll();
  });

  test("both join and each sees two memberships; one leaves and the other then sees one", async () => {
    clients = await SdkClients.create(server.baseUrl);
    await quietSdkLogs();
    const alice = await user();
    const bob = await user();
    const roomId = await alice.createRoom({ invite: [bob.userId] });
    await bob.join(roomId);
    const login = (u: User) => ({ user_id: u.userId, access_token: u.token, device_id: u.deviceId });
    const ca: MatrixClient = await clients.start(login(alice));
    const cb: MatrixClient = await clients.start(login(bob));
    await clients.until(ca, "the room", () => ca.getRoom(roomId) !== null);
    await clients.until(cb, "the room", () => cb.getRoom(roomId) !== null);
    const sa = ca.matrixRTC.getRoomSession(ca.getRoom(roomId)!);
    const sb = cb.matrixRTC.getRoomSession(cb.getRoom(roomId)!);
    sessions.push(sa, sb);

    const transport = { type: "livekit", livekit_service_url: "https://livekit.invalid" };
    const config = { delayedLeaveEventDelayMs: 3000, delayedLeaveEventRestartMs: 1000, unstableSendStickyEvents: true, manageMediaKeys: false };
    sa.joinRoomSession([transport], transport, config);
    sb.joinRoomSession([transport], transport, config);
    const who = (s: MatrixRTCSession) => s.memberships.map((m) => `${m.sender}|${m.deviceId}`).sort();
    const both = [`${alice.userId}|${alice.deviceId}`, `${bob.userId}|${bob.deviceId}`].sort();
    const becomes = (s: MatrixRTCSession, want: string[], what: string) =>
      waitFor(what, async () => (JSON.stringify(who(s)) === JSON.stringify(want) ? true : undefined), 20_000);
    await becomes(sa, both, "Alice to see both");
    await becomes(sb, both, "Bob to see both");

    assert.equal(await sa.leaveRoomSession(20_000), true);
    await becomes(sb, [`${bob.userId}|${bob.deviceId}`], "Bob to see only himself");
    await becomes(sa, [`${bob.userId}|${bob.deviceId}`], "Alice to see only Bob");
  });
});
