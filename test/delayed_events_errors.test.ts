/** Delayed events (MSC4140): every error case of reference §3, with its status and errcode. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  capabilities,
  DELAY,
  delayedSend,
  delayedState,
  delayIdOf,
  finalised,
  manage,
  manageBody,
  manageV1,
  sharedRoom,
  statusOf,
  U4140,
} from "./helpers/delayed.js";
import { assertError, enc, ok, User } from "./helpers/rooms.js";
import { request, startServer, type Reply, type TestServer } from "./helpers/server.js";

let server: TestServer;
let alice: User;
let bob: User;
let roomId: string;

before(async () => {
  server = await startServer({
    max_event_delay_duration: "10s",
    experimental_features: { msc4140_max_delayed_events_per_user: 2 },
  });
  alice = await User.register(server.baseUrl, "alice");
  bob = await User.register(server.baseUrl, "bob");
  roomId = await sharedRoom(alice, [bob]);
});
after(async () => server?.stop());

/** Cancels every scheduled delayed event of `user`, so that the per-user limit does not leak between tests. */
async function cancelAll(user: User): Promise<void> {
  const list = ok(await request(server.baseUrl, "GET", `${U4140}/delayed_events`, { token: user.token })) as {
    delayed_events: { delay_id: string }[];
  };
  for (const e of list.delayed_events) ok(await manage(server.baseUrl, e.delay_id, "cancel", user.token));
}

/** The three scheduling forms deployed clients use. */
function scheduleForms(user: User, delay: string | number): Promise<Reply>[] {
  return [
    delayedSend(user, roomId, { body: "x" }, delay),
    delayedSend(user, roomId, { body: "x" }, delay, { method: "POST" }),
    delayedState(user, roomId, "org.example.call", "k", {}, delay),
  ];
}

describe("scheduling errors", () => {
  test("a delay above max_event_delay_duration: 403 M_FORBIDDEN, 'exceeds the allowed maximum'", async () => {
    for (const res of await Promise.all(scheduleForms(alice, 10_001))) {
      const error = assertError(res, 403, "M_FORBIDDEN");
      assert.match(error, /exceeds the allowed maximum/);
      // The older form matrix-js-sdk understands, to lower its delay.
      assert.equal(res.body["org.matrix.msc4140.errcode"], "M_MAX_DELAY_EXCEEDED");
      assert.equal(res.body["org.matrix.msc4140.max_delay"], 10_000);
    }
    // The accepted endpoint answers as the accepted MSC says: 400 M_MAX_DELAY_EXCEEDED with `max_delay`.
    for (const body of [{ delay: 10_001 }, { delay_ms: 10_001 }]) {
      const v3 = await alice.req("PUT", `/rooms/${enc(roomId)}/delayed_event/m.room.message/big-${Object.keys(body)[0]}`, { ...body, content: {} });
      assertError(v3, 400, "M_MAX_DELAY_EXCEEDED");
      assert.equal(v3.body.max_delay, 10_000);
    }
    // Exactly the maximum is allowed.
    delayIdOf(await delayedSend(alice, roomId, { body: "max" }, 10_000));
    await cancelAll(alice);
  });

  test("a negative, fractional or non-numeric delay: 400 M_INVALID_PARAM", async () => {
    for (const delay of ["-1", "1.5", "abc", "", "1e3", " 5"]) {
      for (const res of await Promise.all(scheduleForms(alice, delay))) assertError(res, 400, "M_INVALID_PARAM");
    }
    for (const delay_ms of [-1, 1.5, "300", null]) {
      const res = await alice.req("PUT", `/rooms/${enc(roomId)}/delayed_event/m.room.message/bad-${String(delay_ms)}`, {
        delay_ms,
        content: {},
      });
      assertError(res, 400, "M_INVALID_PARAM");
    }
    assertError(await alice.req("PUT", `/rooms/${enc(roomId)}/delayed_event/m.room.message/none`, { content: {} }), 400, "M_MISSING_PARAM");
    // Nothing was scheduled by any of these.
    const list = ok(await request(server.baseUrl, "GET", `${U4140}/delayed_events`, { token: alice.token }));
    assert.deepEqual(list.delayed_events, []);
  });

  test("the per-user limit: 429 M_LIMIT_EXCEEDED with Retry-After; others are unaffected; room frees up on cancel", async () => {
    const first = delayIdOf(await delayedSend(alice, roomId, { n: 1 }, 5000));
    delayIdOf(await delayedState(alice, roomId, "org.example.call", "limit", {}, 5000));
    for (const res of await Promise.all(scheduleForms(alice, 5000))) {
      assertError(res, 429, "M_LIMIT_EXCEEDED");
      const retryAfter = res.headers.get("retry-after");
      assert.ok(retryAfter !== null && /^[0-9]+$/.test(retryAfter) && Number(retryAfter) > 0, `Retry-After: ${retryAfter}`);
      assert.equal(typeof res.body.retry_after_ms, "number");
    }
    // Bob has his own allowance.
    const bobs = delayIdOf(await delayedSend(bob, roomId, { n: "bob" }, 5000));
    ok(await manage(server.baseUrl, bobs, "cancel"));
    // A finalised event no longer counts.
    ok(await manage(server.baseUrl, first, "cancel"));
    delayIdOf(await delayedSend(alice, roomId, { n: 3 }, 5000));
    await cancelAll(alice);
  });

  test("scheduling in a room you are not joined to: 403 M_FORBIDDEN", async () => {
    const outsider = await User.register(server.baseUrl, "outsider");
    for (const res of await Promise.all(scheduleForms(outsider, 1000))) assertError(res, 403, "M_FORBIDDEN");
    const v3 = await outsider.req("PUT", `/rooms/${enc(roomId)}/delayed_event/m.room.message/out`, { delay_ms: 1000, content: {} });
    assertError(v3, 403, "M_FORBIDDEN");
    // Having left counts as not joined too; so does an unknown room.
    const left = await alice.createRoom({});
    ok(await alice.leave(left));
    assertError(await delayedSend(alice, left, {}, 1000), 403, "M_FORBIDDEN");
    assertError(await delayedSend(alice, "!nowhere:localhost", {}, 1000), 403, "M_FORBIDDEN");
    const anonymous = await request(server.baseUrl, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/t?${DELAY}=5`, {
      body: {},
    });
    assertError(anonymous, 401, "M_MISSING_TOKEN");
  });
});

describe("management errors", () => {
  test("an unknown delay ID: 404 M_NOT_FOUND in every form", async () => {
    for (const action of ["cancel", "restart", "send"]) {
      assertError(await manage(server.baseUrl, "syd_unknown", action), 404, "M_NOT_FOUND");
      assertError(await manage(server.baseUrl, "syd_unknown", action, alice.token), 404, "M_NOT_FOUND");
      assertError(await manageBody(server.baseUrl, "syd_unknown", { action }), 404, "M_NOT_FOUND");
      assertError(await manageV1(alice, "syd_unknown", action), 404, "M_NOT_FOUND");
    }
    assertError(await request(server.baseUrl, "GET", `${U4140}/delayed_events/syd_unknown`, { token: alice.token }), 404, "M_NOT_FOUND");
    assertError(await request(server.baseUrl, "GET", "/_matrix/client/v1/delayed_events/syd_unknown", { token: alice.token }), 404, "M_NOT_FOUND");
  });

  test("the body form: no body 400 M_NOT_JSON, no action 400 M_MISSING_PARAM, a bad action 400 M_INVALID_PARAM", async () => {
    const delayId = delayIdOf(await delayedSend(alice, roomId, {}, 5000));
    const url = `${U4140}/delayed_events/${enc(delayId)}`;
    assertError(await request(server.baseUrl, "POST", url), 400, "M_NOT_JSON");
    assertError(await request(server.baseUrl, "POST", url, { body: "{not json" }), 400, "M_NOT_JSON");
    assertError(await manageBody(server.baseUrl, delayId, {}), 400, "M_MISSING_PARAM");
    for (const action of ["explode", "CANCEL", 5, null]) {
      assertError(await manageBody(server.baseUrl, delayId, { action }), 400, "M_INVALID_PARAM");
    }
    // None of these touched the event.
    assert.equal((await statusOf(alice, delayId)).status, "scheduled");
    await cancelAll(alice);
  });

  test("an unknown action in the path: 404 M_UNRECOGNIZED (matrix-js-sdk then falls back to the body form)", async () => {
    const delayId = delayIdOf(await delayedSend(alice, roomId, {}, 5000));
    assertError(await manage(server.baseUrl, delayId, "explode"), 404, "M_UNRECOGNIZED");
    assertError(await manage(server.baseUrl, delayId, "explode", alice.token), 404, "M_UNRECOGNIZED");
    assert.equal((await statusOf(alice, delayId)).status, "scheduled");
    await cancelAll(alice);
  });

  test("v1: repeating an action gives 200, a conflicting one 409", async () => {
    const cancelled = delayIdOf(await delayedSend(alice, roomId, { n: "c" }, 5000));
    assert.deepEqual(ok(await manageV1(alice, cancelled, "cancel")), {});
    assert.deepEqual(ok(await manageV1(alice, cancelled, "cancel")), {});
    assertError(await manageV1(alice, cancelled, "send"), 409, "M_UNKNOWN");
    assertError(await manageV1(alice, cancelled, "restart"), 409, "M_UNKNOWN");

    const sent = delayIdOf(await delayedSend(alice, roomId, { n: "s" }, 5000));
    ok(await manageV1(alice, sent, "restart"));
    ok(await manageV1(alice, sent, "restart"));
    ok(await manageV1(alice, sent, "send"));
    ok(await manageV1(alice, sent, "send"));
    assertError(await manageV1(alice, sent, "cancel"), 409, "M_UNKNOWN");
    assertError(await manageV1(alice, sent, "restart"), 409, "M_UNKNOWN");
    const status = await statusOf(alice, sent);
    assert.equal(status.status, "finalised");
    assert.equal(status.outcome, "send");
    assert.equal(status.reason, "action");
    assert.equal(typeof status.event_id, "string");
    assert.equal(typeof status.finalised_ts, "number");
    // Sent by its timer: a v1 "send" is a repeat (the event is out), a "cancel" conflicts.
    const timed = delayIdOf(await delayedSend(alice, roomId, { n: "t" }, 100));
    assert.equal((await finalised(alice, timed)).reason, "delay");
    assert.deepEqual(ok(await manageV1(alice, timed, "send")), {});
    assertError(await manageV1(alice, timed, "cancel"), 409, "M_UNKNOWN");
    // The unstable form is not idempotent: a finalised event is gone for it.
    assertError(await manage(server.baseUrl, sent, "send"), 404, "M_NOT_FOUND");
    assertError(await manage(server.baseUrl, cancelled, "cancel"), 404, "M_NOT_FOUND");
    // v1 needs no token: the delay ID is the capability, whoever holds it (with a token or not).
    const mine = delayIdOf(await delayedSend(alice, roomId, {}, 5000));
    ok(await manageV1(bob, mine, "restart", bob.token));
    ok(await manageV1(bob, mine, "cancel"));
    assert.equal((await statusOf(alice, mine)).outcome, "cancel");
    await cancelAll(alice);
  });

  test("a send action refused by the auth rules answers their error and records the failure", async () => {
    const room = await sharedRoom(alice, [bob]);
    const delayId = delayIdOf(await delayedState(bob, room, "org.example.guarded", "", { n: 1 }, 5000));
    // Bob (power 0) may not send this state event (state_default 50); that is found when it is sent.
    assertError(await manage(server.baseUrl, delayId, "send"), 403, "M_FORBIDDEN");
    const status = await statusOf(bob, delayId);
    assert.equal(status.status, "finalised");
    assert.equal(status.outcome, "send");
    assert.equal(status.reason, "error");
    assert.equal(status.error?.errcode, "M_FORBIDDEN");
    assertError(await manage(server.baseUrl, delayId, "send"), 404, "M_NOT_FOUND");
    // A failed send counts as cancelled by an error: v1 send conflicts, cancel is a repeat.
    assertError(await manageV1(bob, delayId, "send"), 409, "M_UNKNOWN");
    assert.deepEqual(ok(await manageV1(bob, delayId, "cancel")), {});
  });
});

describe("management rate limit (rc_delayed_event_mgmt)", () => {
  test("per IP without a token, per user with one: 429 M_LIMIT_EXCEEDED with Retry-After", async () => {
    const limited = await startServer({ rc_delayed_event_mgmt: { per_second: 0.01, burst_count: 3 } });
    try {
      const u1 = await User.register(limited.baseUrl, "u1");
      const u2 = await User.register(limited.baseUrl, "u2");
      const room = await sharedRoom(u1, [u2]);
      const delayId = delayIdOf(await delayedSend(u1, room, {}, 60_000));
      const statuses = async (n: number, token?: string) => {
        const out: Reply[] = [];
        for (let i = 0; i < n; i++) out.push(await manage(limited.baseUrl, delayId, "restart", token));
        return out;
      };
      // Without a token: the client IP's bucket.
      const anon = await statuses(4);
      for (const r of anon.slice(0, 3)) ok(r);
      assertError(anon[3]!, 429, "M_LIMIT_EXCEEDED");
      assert.match(anon[3]!.headers.get("retry-after") ?? "", /^[0-9]+$/);
      assertError(await manageBody(limited.baseUrl, delayId, { action: "restart" }), 429, "M_LIMIT_EXCEEDED");
      // With a token: the user's own bucket, untouched by the IP's.
      const owner = await statuses(4, u1.token);
      for (const r of owner.slice(0, 3)) ok(r);
      assertError(owner[3]!, 429, "M_LIMIT_EXCEEDED");
      assert.match(owner[3]!.headers.get("retry-after") ?? "", /^[0-9]+$/);
      // Another user's bucket is separate again (their calls find nothing, but are counted).
      const other = await statuses(4, u2.token);
      for (const r of other.slice(0, 3)) assertError(r, 404, "M_NOT_FOUND");
      assertError(other[3]!, 429, "M_LIMIT_EXCEEDED");
      // v1 shares the user's bucket.
      assertError(await manageV1(u1, delayId, "restart", u1.token), 429, "M_LIMIT_EXCEEDED");
      // The event itself is unharmed.
      assert.equal((await statusOf(u1, delayId)).status, "scheduled");
    } finally {
      await limited.stop();
    }
  });

  test("the default is at least 1/s with burst 20, as Element Call asks: 20 restarts in a row pass", async () => {
    const defaults = await startServer({ rc_delayed_event_mgmt: undefined });
    try {
      const rate = defaults.homeserver.services.config.rateLimits.delayedEventMgmt;
      assert.ok(rate.per_second >= 1 && rate.burst_count >= 20, JSON.stringify(rate));
      const u = await User.register(defaults.baseUrl, "ec");
      const room = await u.createRoom({});
      const delayId = delayIdOf(await delayedSend(u, room, {}, 60_000));
      for (let i = 0; i < 20; i++) ok(await manage(defaults.baseUrl, delayId, "restart"));
    } finally {
      await defaults.stop();
    }
  });
});

describe("feature off (experimental_features.msc4140_enabled: false)", () => {
  test("scheduling answers 403 M_FORBIDDEN, never sends at once; nothing is advertised", async () => {
    const off = await startServer({ experimental_features: { msc4140_enabled: false } });
    try {
      const u = await User.register(off.baseUrl, "offuser");
      const room = await u.createRoom({});
      const forms = [
        u.req("PUT", `/rooms/${enc(room)}/send/m.room.message/t1?${DELAY}=1000`, { body: "leave" }),
        u.req("POST", `/rooms/${enc(room)}/send/m.room.message?${DELAY}=1000`, { body: "leave" }),
        u.req("PUT", `/rooms/${enc(room)}/state/org.example.call/k?${DELAY}=1000`, { body: "leave" }),
        u.req("PUT", `/rooms/${enc(room)}/state/org.example.call?${DELAY}=1000`, { body: "leave" }),
        u.req("PUT", `/rooms/${enc(room)}/send/m.room.message/t2?org.matrix.msc4140.parent_delay_id=x`, { body: "leave" }),
      ];
      for (const res of await Promise.all(forms)) assertError(res, 403, "M_FORBIDDEN");
      // The parameter was not ignored: nothing was sent.
      const chunk = ok(await u.messages(room, { dir: "b", limit: 50 })).chunk as { content: { body?: string } }[];
      assert.equal(chunk.filter((e) => e.content.body === "leave").length, 0);
      assert.equal((await u.getStateRaw(room, "org.example.call", "k")).status, 404);
      const versions = ok(await request(off.baseUrl, "GET", "/_matrix/client/versions"));
      assert.equal((versions.unstable_features as Record<string, unknown>)["org.matrix.msc4140"], false);
      const caps = await capabilities(u);
      assert.equal(caps["org.matrix.msc4140.delayed_events"], undefined);
      assert.equal(caps["m.delayed_events"], undefined);
    } finally {
      await off.stop();
    }
  });
});
