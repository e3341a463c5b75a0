/**
 * Delayed events as MSC4140 was accepted: `PUT …/delayed_event/{type}/{txnId}` with `delay`,
 * transaction IDs (there and on the query-parameter form of /send), the unauthenticated,
 * idempotent v1 management, the v1 lookup, `unsigned.delay_id`, guests and discovery.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  capabilities,
  DELAY,
  DELAY_ID_KEY,
  delayedSend,
  delayIdOf,
  lookupV1,
  manageV1,
  sharedRoom,
  U4140,
  waitFor,
  type AcceptedItem,
} from "./helpers/delayed.js";
import { assertError, enc, ok, startWithUsers, User, type Ev } from "./helpers/rooms.js";
import { request, startServer, type Reply, type TestServer } from "./helpers/server.js";

let server: TestServer;
let alice: User;
let bob: User;
let roomId: string;

before(async () => {
  ({ server, users: [alice, bob] } = await startWithUsers("alice", "bob"));
  roomId = await sharedRoom(alice, [bob]);
});
after(async () => server?.stop());

const V3 = "/_matrix/client/v3";
const putDelayed = (user: User, room: string, type: string, txnId: string, body: unknown, prefix = V3): Promise<Reply> =>
  request(user.baseUrl, "PUT", `${prefix}/rooms/${enc(room)}/delayed_event/${enc(type)}/${enc(txnId)}`, { token: user.token, body });

/** The user's scheduled events in a room, through the accepted list. */
async function scheduledIn(user: User, room: string): Promise<string[]> {
  const q = `status=scheduled&since_ts=0&room_id=${enc(room)}`;
  const page = ok(await request(user.baseUrl, "GET", `/_matrix/client/v1/delayed_events?${q}`, { token: user.token }));
  return (page.delayed_events as AcceptedItem[]).map((e) => e.delay_id);
}

const isFinalised = (item: AcceptedItem) => item.origin_server_ts !== undefined;

describe("PUT /rooms/{roomId}/delayed_event/{eventType}/{txnId}", () => {
  test("`delay` (and the drafts' `delay_ms`), on v3 and the unstable prefix; the sent event has unsigned.delay_id for its sender only", async () => {
    const room = await sharedRoom(alice, [bob]);
    const id = delayIdOf(await putDelayed(alice, room, "m.room.message", "t-delay", { delay: 1, content: { body: "accepted", marker: "acc" } }));
    delayIdOf(await putDelayed(alice, room, "m.room.message", "t-delay-ms", { delay_ms: 60_000, content: {} }));
    delayIdOf(await putDelayed(alice, room, "org.example.s", "t-unstable", { delay: 60_000, state_key: "k", content: {} }, U4140));
    const item = await waitFor("the event to be sent", async () => {
      const it = await lookupV1(alice, id);
      return isFinalised(it) ? it : undefined;
    });
    assert.equal(typeof item.event_id, "string");
    const mine = ok(await alice.event(room, item.event_id!)) as unknown as Ev;
    assert.equal(mine.content.marker, "acc");
    assert.equal(mine.unsigned?.delay_id, id);
    assert.equal(mine.unsigned?.[DELAY_ID_KEY], id);
    const theirs = ok(await bob.event(room, item.event_id!)) as unknown as Ev;
    assert.equal(theirs.unsigned?.delay_id, undefined);
    assert.equal(theirs.unsigned?.[DELAY_ID_KEY], undefined);
  });

  test("a retried PUT (same device, same txnId) answers the same delay_id and schedules nothing new", async () => {
    const room = await sharedRoom(alice, [bob]);
    const body = { delay: 60_000, content: { n: 1 } };
    const first = delayIdOf(await putDelayed(alice, room, "m.room.message", "retry", body));
    assert.equal(delayIdOf(await putDelayed(alice, room, "m.room.message", "retry", body)), first);
    assert.equal(delayIdOf(await putDelayed(alice, room, "m.room.message", "retry", body, U4140)), first, "both prefixes are one endpoint");
    // Retries racing each other still schedule one.
    const racing = await Promise.all([1, 2, 3].map(() => putDelayed(alice, room, "m.room.message", "race", body)));
    const raced = new Set(racing.map(delayIdOf));
    assert.equal(raced.size, 1);
    assert.deepEqual((await scheduledIn(alice, room)).sort(), [first, ...raced].sort());
    // Another device, another type or room: another transaction.
    const other = await alice.newDevice();
    assert.notEqual(delayIdOf(await putDelayed(other, room, "m.room.message", "retry", body)), first);
    assert.notEqual(delayIdOf(await putDelayed(alice, room, "org.example.other", "retry", body)), first);
    // Once finalised, a retry still answers the same ID and schedules nothing.
    ok(await manageV1(alice, first, "cancel"));
    const count = (await scheduledIn(alice, room)).length;
    assert.equal(delayIdOf(await putDelayed(alice, room, "m.room.message", "retry", body)), first);
    assert.equal((await scheduledIn(alice, room)).length, count);
  });

  test("the query-parameter form on PUT /send is idempotent on its txnId too; POST /send has none", async () => {
    const room = await sharedRoom(alice, [bob]);
    const url = `/rooms/${enc(room)}/send/m.room.message/q-txn?${DELAY}=60000`;
    const racing = await Promise.all([1, 2, 3].map(() => alice.req("PUT", url, { body: "leave" })));
    const ids = new Set(racing.map(delayIdOf));
    assert.equal(ids.size, 1, "one delay ID for every retry");
    assert.equal(delayIdOf(await alice.req("PUT", url, { body: "leave" })), [...ids][0]);
    assert.equal((await scheduledIn(alice, room)).length, 1, "scheduled once");
    const a = delayIdOf(await delayedSend(alice, room, {}, 60_000, { method: "POST" }));
    const b = delayIdOf(await delayedSend(alice, room, {}, 60_000, { method: "POST" }));
    assert.notEqual(a, b);
  });

  test("bad delays: 400 M_INVALID_PARAM; no delay or content: 400 M_MISSING_PARAM; content not an object: 400 M_BAD_JSON; no token: 401", async () => {
    for (const delay of [0, -5, 1.5, "1000", null, true]) {
      assertError(await putDelayed(alice, roomId, "m.room.message", `bad-${String(delay)}`, { delay, content: {} }), 400, "M_INVALID_PARAM");
    }
    assertError(await putDelayed(alice, roomId, "m.room.message", "none", { content: {} }), 400, "M_MISSING_PARAM");
    assertError(await putDelayed(alice, roomId, "m.room.message", "no-content", { delay: 1000 }), 400, "M_MISSING_PARAM");
    assertError(await putDelayed(alice, roomId, "m.room.message", "list", { delay: 1000, content: ["x"] }), 400, "M_BAD_JSON");
    const anonymous = await request(server.baseUrl, "PUT", `${V3}/rooms/${enc(roomId)}/delayed_event/m.room.message/anon`, {
      body: { delay: 1000, content: {} },
    });
    assertError(anonymous, 401, "M_MISSING_TOKEN");
    const outsider = await User.register(server.baseUrl, "outsider");
    assertError(await putDelayed(outsider, roomId, "m.room.message", "out", { delay: 1000, content: {} }), 403, "M_FORBIDDEN");
  });

  test("too long: 400 M_MAX_DELAY_EXCEEDED with max_delay; too many: 429 M_LIMIT_EXCEEDED, Retry-After until the next is due", async () => {
    const small = await startServer({ max_event_delay_duration: "100s", experimental_features: { msc4140_max_delayed_events_per_user: 2 } });
    try {
      const u = await User.register(small.baseUrl, "limited");
      const room = await u.createRoom({});
      const tooLong = await putDelayed(u, room, "m.room.message", "long", { delay: 100_001, content: {} });
      assertError(tooLong, 400, "M_MAX_DELAY_EXCEEDED");
      assert.equal(tooLong.body.max_delay, 100_000);
      delayIdOf(await putDelayed(u, room, "m.room.message", "n1", { delay: 100_000, content: {} }));
      delayIdOf(await putDelayed(u, room, "m.room.message", "n2", { delay: 50_000, content: {} }));
      for (const res of [
        await putDelayed(u, room, "m.room.message", "n3", { delay: 1000, content: {} }),
        await u.req("PUT", `/rooms/${enc(room)}/send/m.room.message/n4?${DELAY}=1000`, {}),
      ]) {
        assertError(res, 429, "M_LIMIT_EXCEEDED");
        const seconds = Number(res.headers.get("retry-after"));
        // The soonest of the two is due within 50 s of scheduling, rounded up.
        assert.ok(Number.isInteger(seconds) && seconds >= 1 && seconds <= 50, `Retry-After: ${res.headers.get("retry-after")}`);
      }
      // A retry of a scheduled request is not a new one, so the limit does not refuse it.
      delayIdOf(await putDelayed(u, room, "m.room.message", "n1", { delay: 100_000, content: {} }));
    } finally {
      await small.stop();
    }
  });
});

describe("POST /v1/delayed_events/{delay_id}/{action}", () => {
  test("unauthenticated; unknown: 404 M_NOT_FOUND; the same outcome again: 200; a conflicting one: 409 M_UNKNOWN", async () => {
    for (const action of ["send", "cancel", "restart"]) {
      assertError(await manageV1(alice, "syd_nope", action), 404, "M_NOT_FOUND");
    }
    const cancelled = delayIdOf(await putDelayed(alice, roomId, "m.room.message", "m-c", { delay: 60_000, content: {} }));
    assert.deepEqual(ok(await manageV1(alice, cancelled, "restart")), {});
    assert.deepEqual(ok(await manageV1(alice, cancelled, "cancel")), {});
    assert.deepEqual(ok(await manageV1(alice, cancelled, "cancel")), {});
    assertError(await manageV1(alice, cancelled, "send"), 409, "M_UNKNOWN");
    assertError(await manageV1(alice, cancelled, "restart"), 409, "M_UNKNOWN");
    const sent = delayIdOf(await putDelayed(alice, roomId, "m.room.message", "m-s", { delay: 60_000, content: { body: "now" } }));
    assert.deepEqual(ok(await manageV1(alice, sent, "send")), {});
    assert.deepEqual(ok(await manageV1(alice, sent, "send")), {});
    assertError(await manageV1(alice, sent, "cancel"), 409, "M_UNKNOWN");
    assert.equal(typeof (await lookupV1(alice, sent)).event_id, "string");
    // The unstable split paths keep their answer for a finalised event.
    assertError(await request(server.baseUrl, "POST", `${U4140}/delayed_events/${enc(sent)}/send`, { body: {} }), 404, "M_NOT_FOUND");
  });

  test("a send refused by the power levels answers 403 M_FORBIDDEN and the event stays scheduled; it can be sent later", async () => {
    const room = await sharedRoom(alice, [bob]);
    const id = delayIdOf(await putDelayed(bob, room, "org.example.guarded", "pl", { delay: 60_000, state_key: "", content: { n: 1 } }));
    assertError(await manageV1(bob, id, "send"), 403, "M_FORBIDDEN");
    const item = await lookupV1(bob, id);
    assert.equal(item.origin_server_ts, undefined, "still scheduled");
    assert.equal(item.error, undefined);
    assert.deepEqual(await scheduledIn(bob, room), [id]);
    const pl = await alice.getState(room, "m.room.power_levels");
    await alice.putState(room, "m.room.power_levels", "", { ...pl, users: { ...(pl.users as object), [bob.userId]: 50 } });
    assert.deepEqual(ok(await manageV1(bob, id, "send")), {});
    assert.deepEqual(await alice.getState(room, "org.example.guarded"), { n: 1 });
  });
});

describe("GET /v1/delayed_events/{delay_id}", () => {
  test("the accepted fields, scheduled and finalised; another user's or none: 404 M_NOT_FOUND; no token: 401", async () => {
    const id = delayIdOf(await putDelayed(alice, roomId, "org.example.s", "look", { delay: 60_000, state_key: "sk", content: { a: 1 } }));
    const scheduled = await lookupV1(alice, id);
    assert.deepEqual(Object.keys(scheduled).sort(), ["content", "delay", "delay_id", "room_id", "running_since", "state_key", "type"]);
    assert.deepEqual(
      { ...scheduled, running_since: 0 },
      { delay_id: id, room_id: roomId, type: "org.example.s", state_key: "sk", delay: 60_000, running_since: 0, content: { a: 1 } },
    );
    ok(await manageV1(alice, id, "cancel"));
    const cancelled = await lookupV1(alice, id);
    assert.equal(typeof cancelled.origin_server_ts, "number");
    assert.equal(cancelled.event_id, undefined);
    const msg = delayIdOf(await putDelayed(alice, roomId, "m.room.message", "look-m", { delay: 60_000, content: {} }));
    assert.equal((await lookupV1(alice, msg)).state_key, undefined);
    assertError(await request(server.baseUrl, "GET", `/_matrix/client/v1/delayed_events/${enc(id)}`, { token: bob.token }), 404, "M_NOT_FOUND");
    assertError(await request(server.baseUrl, "GET", `/_matrix/client/v1/delayed_events/syd_nope`, { token: alice.token }), 404, "M_NOT_FOUND");
    assertError(await request(server.baseUrl, "GET", `/_matrix/client/v1/delayed_events/${enc(id)}`), 401, "M_MISSING_TOKEN");
    ok(await manageV1(alice, msg, "cancel"));
  });
});

describe("guests and discovery", () => {
  test("guests may use every delayed-event endpoint", async () => {
    const guestServer = await startServer({ allow_guest_access: true });
    try {
      const reg = ok(await request(guestServer.baseUrl, "POST", `${V3}/register?kind=guest`, { body: {} })) as { access_token: string };
      const token = reg.access_token;
      const owner = await User.register(guestServer.baseUrl, "owner");
      const room = await owner.createRoom({});
      // Not M_GUEST_ACCESS_FORBIDDEN: the endpoint is theirs; they are just not in this room.
      const put = await request(guestServer.baseUrl, "PUT", `${V3}/rooms/${enc(room)}/delayed_event/m.room.message/g`, {
        token,
        body: { delay: 1000, content: {} },
      });
      assertError(put, 403, "M_FORBIDDEN");
      assert.deepEqual(ok(await request(guestServer.baseUrl, "GET", "/_matrix/client/v1/delayed_events", { token })), { delayed_events: [] });
      assertError(await request(guestServer.baseUrl, "GET", "/_matrix/client/v1/delayed_events/syd_x", { token }), 404, "M_NOT_FOUND");
      const ownersEvent = delayIdOf(await putDelayed(owner, room, "m.room.message", "o", { delay: 60_000, content: {} }));
      const cancel = await request(guestServer.baseUrl, "POST", `/_matrix/client/v1/delayed_events/${enc(ownersEvent)}/cancel`, { token, body: {} });
      assert.deepEqual(ok(cancel), {});
    } finally {
      await guestServer.stop();
    }
  });

  test("/capabilities has org.matrix.msc4140.delayed_events; /versions org.matrix.msc4140 and org.matrix.msc4140.stable", async () => {
    const caps = await capabilities(alice);
    assert.deepEqual(caps["org.matrix.msc4140.delayed_events"], { max_delay_ms: 86_400_000, max_scheduled: 100 });
    const versions = ok(await request(server.baseUrl, "GET", "/_matrix/client/versions"));
    const flags = versions.unstable_features as Record<string, unknown>;
    assert.equal(flags["org.matrix.msc4140"], true);
    assert.equal(flags["org.matrix.msc4140.stable"], true);
  });
});
