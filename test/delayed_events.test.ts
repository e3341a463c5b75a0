/** Delayed events (MSC4140): scheduling, firing, management without a token, listing, capabilities, matrix-js-sdk. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  capabilities,
  DELAY_ID_KEY,
  delayedSend,
  delayedState,
  delayIdOf,
  finalised,
  manage,
  manageBody,
  sharedRoom,
  sleep,
  stateAppears,
  statusOf,
  U4140,
  waitFor,
  withMarker,
} from "./helpers/delayed.js";
import { loadSdk } from "./helpers/matrix-sdk.js";
import { assertError, enc, ok, startWithUsers, User, type Ev } from "./helpers/rooms.js";
import { request, type TestServer } from "./helpers/server.js";

let server: TestServer;
let alice: User;
let bob: User;
let carol: User;

before(async () => {
  ({ server, users: [alice, bob, carol] } = await startWithUsers("alice", "bob", "carol"));
});
after(async () => server?.stop());

/** A room where members may send the test state types. */
const callRoom = () =>
  sharedRoom(alice, [bob], { power_level_content_override: { events: { "org.example.call": 0, "org.example.solo": 0 } } });

/** Waits until the event with `marker` lands, and checks who sees its delay ID. */
async function landsWithDelayId(roomId: string, marker: string, delayId: string): Promise<Ev> {
  const [event] = await waitFor(`event ${marker}`, async () => {
    const found = await withMarker(alice, roomId, marker);
    return found.length > 0 ? found : undefined;
  });
  assert.ok(event);
  assert.equal((await withMarker(alice, roomId, marker)).length, 1, "sent exactly once");
  assert.equal(event.sender, alice.userId);
  assert.equal(event.unsigned?.[DELAY_ID_KEY], delayId, "the sender sees the delay ID in /messages");
  assert.equal(event.unsigned?.transaction_id, undefined);
  const viaEvent = ok(await alice.event(roomId, event.event_id)) as unknown as Ev;
  assert.equal(viaEvent.unsigned?.[DELAY_ID_KEY], delayId, "the sender sees the delay ID in /event");
  // Other members never see it.
  const [bobsView] = await withMarker(bob, roomId, marker);
  assert.ok(bobsView);
  assert.equal(bobsView.unsigned?.[DELAY_ID_KEY], undefined);
  assert.equal((ok(await bob.event(roomId, event.event_id)) as unknown as Ev).unsigned?.[DELAY_ID_KEY], undefined);
  const status = await finalised(alice, delayId);
  assert.equal(status.outcome, "send");
  assert.equal(status.reason, "delay");
  assert.equal(status.event_id, event.event_id);
  return event;
}

describe("scheduling", () => {
  test("PUT /send with a delay answers {delay_id} and the event arrives after the delay", async () => {
    const roomId = await callRoom();
    const delayId = delayIdOf(await delayedSend(alice, roomId, { msgtype: "m.text", body: "later", marker: "put-send" }, 400));
    const event = await landsWithDelayId(roomId, "put-send", delayId);
    assert.equal(event.type, "m.room.message");
    assert.equal(event.content.body, "later");
  });

  test("POST /send with a delay", async () => {
    const roomId = await callRoom();
    const res = await delayedSend(alice, roomId, { msgtype: "m.text", body: "posted", marker: "post-send" }, 300, { method: "POST" });
    const delayId = delayIdOf(res);
    await landsWithDelayId(roomId, "post-send", delayId);
  });

  test("PUT /state with a state key, and without one (both path forms)", async () => {
    const roomId = await callRoom();
    const keyed = delayIdOf(await delayedState(alice, roomId, "org.example.call", "_@alice:localhost_DEV", { marker: "keyed" }, 300));
    const bare = delayIdOf(await delayedState(alice, roomId, "org.example.solo", null, { marker: "bare" }, 300));
    const slash = delayIdOf(
      await alice.req("PUT", `/rooms/${enc(roomId)}/state/org.example.slash/?org.matrix.msc4140.delay=300`, { marker: "slash" }),
    );
    assert.deepEqual(await stateAppears(alice, roomId, "org.example.call", "_@alice:localhost_DEV"), { marker: "keyed" });
    assert.deepEqual(await stateAppears(alice, roomId, "org.example.solo", ""), { marker: "bare" });
    for (const [id, marker] of [
      [keyed, "keyed"],
      [bare, "bare"],
    ] as const) {
      const event = await landsWithDelayId(roomId, marker, id);
      assert.equal(typeof event.state_key, "string");
    }
    // Alice created the room (power 100), so the type needs no override.
    assert.deepEqual(await stateAppears(alice, roomId, "org.example.slash", ""), { marker: "slash" });
    assert.equal((await finalised(alice, slash)).outcome, "send");
  });

  test("the delay combines with the sticky parameter", async () => {
    const roomId = await callRoom();
    const res = await alice.req(
      "PUT",
      `/rooms/${enc(roomId)}/send/org.example.rtc/t-sticky?org.matrix.msc4140.delay=200&org.matrix.msc4354.sticky_duration_ms=60000`,
      { marker: "sticky", msc4354_sticky_key: "k" },
    );
    const delayId = delayIdOf(res);
    const event = await landsWithDelayId(roomId, "sticky", delayId);
    // How sticky events reach clients is /sync's business; the stored event must carry the mark.
    const stored = await server.homeserver.storage.rooms.getEvent(event.event_id);
    assert.deepEqual((JSON.parse(stored!.json) as { msc4354_sticky?: unknown }).msc4354_sticky, { duration_ms: 60000 });
  });

  test("the latest draft's PUT /v3/rooms/{r}/delayed_event/{type}/{txn}, for a message and for state", async () => {
    const roomId = await callRoom();
    const path = (type: string, txn: string) => `/rooms/${enc(roomId)}/delayed_event/${enc(type)}/${txn}`;
    const msg = delayIdOf(await alice.req("PUT", path("m.room.message", "d1"), { delay_ms: 200, content: { body: "v3", marker: "v3-msg" } }));
    const st = delayIdOf(
      await alice.req("PUT", path("org.example.call", "d2"), { delay_ms: 200, state_key: "v3key", content: { marker: "v3-state" } }),
    );
    await landsWithDelayId(roomId, "v3-msg", msg);
    assert.deepEqual(await stateAppears(alice, roomId, "org.example.call", "v3key"), { marker: "v3-state" });
    assert.equal((await finalised(alice, st)).outcome, "send");
  });
});

describe("management without an access token: the delay ID is the capability", () => {
  test("cancel: 200 {}, and the event never arrives", async () => {
    const roomId = await callRoom();
    const delayId = delayIdOf(await delayedSend(alice, roomId, { body: "never", marker: "cancelled" }, 1500));
    assert.deepEqual(ok(await manage(server.baseUrl, delayId, "cancel")), {});
    const status = await statusOf(alice, delayId);
    assert.equal(status.status, "finalised");
    assert.equal(status.outcome, "cancel");
    assert.equal(status.reason, "action");
    await sleep(2000); // past the delay it was scheduled with
    assert.deepEqual(await withMarker(alice, roomId, "cancelled"), []);
  });

  test("send: 200 {}, and the event is in the room when the reply comes", async () => {
    const roomId = await callRoom();
    const delayId = delayIdOf(await delayedState(alice, roomId, "org.example.call", "now", { marker: "sent-now" }, 60_000));
    assert.equal((await alice.getStateRaw(roomId, "org.example.call", "now")).status, 404);
    assert.deepEqual(ok(await manage(server.baseUrl, delayId, "send")), {});
    assert.deepEqual(ok(await alice.getStateRaw(roomId, "org.example.call", "now")), { marker: "sent-now" });
    const status = await statusOf(alice, delayId);
    assert.equal(status.outcome, "send");
    assert.equal(status.reason, "action");
    assert.equal(typeof status.event_id, "string");
  });

  test("restart: 200 {}, and the timer starts again from now", async () => {
    const roomId = await callRoom();
    const delayId = delayIdOf(await delayedSend(alice, roomId, { marker: "restarted" }, 60_000));
    const before = await statusOf(alice, delayId);
    await sleep(20);
    assert.deepEqual(ok(await manage(server.baseUrl, delayId, "restart")), {});
    const afterRestart = await statusOf(alice, delayId);
    assert.equal(afterRestart.status, "scheduled");
    assert.ok(afterRestart.scheduled_at > before.scheduled_at, "the send time moved later");
    assert.deepEqual(ok(await manage(server.baseUrl, delayId, "cancel")), {});
  });

  test("the body form without a token", async () => {
    const roomId = await callRoom();
    const delayId = delayIdOf(await delayedState(alice, roomId, "org.example.call", "body-form", { marker: "body" }, 60_000));
    assert.deepEqual(ok(await manageBody(server.baseUrl, delayId, { action: "restart" })), {});
    assert.deepEqual(ok(await manageBody(server.baseUrl, delayId, { action: "send" })), {});
    assert.deepEqual(ok(await alice.getStateRaw(roomId, "org.example.call", "body-form")), { marker: "body" });
  });

  test("the owner's token works; another user's token finds nothing (404 M_NOT_FOUND)", async () => {
    const roomId = await callRoom();
    const delayId = delayIdOf(await delayedSend(alice, roomId, { marker: "owned" }, 60_000));
    for (const action of ["restart", "cancel", "send"]) {
      assertError(await manage(server.baseUrl, delayId, action, bob.token), 404, "M_NOT_FOUND");
      assertError(await manageBody(server.baseUrl, delayId, { action }, bob.token), 404, "M_NOT_FOUND");
    }
    assertError(await request(server.baseUrl, "GET", `${U4140}/delayed_events/${enc(delayId)}`, { token: bob.token }), 404, "M_NOT_FOUND");
    assertError(await request(server.baseUrl, "GET", `/_matrix/client/v1/delayed_events/${enc(delayId)}`, { token: bob.token }), 404, "M_NOT_FOUND");
    assert.equal((await statusOf(alice, delayId)).status, "scheduled", "another user's attempts changed nothing");
    assert.deepEqual(ok(await manage(server.baseUrl, delayId, "restart", alice.token)), {});
    assert.deepEqual(ok(await manage(server.baseUrl, delayId, "cancel", alice.token)), {});
  });
});

describe("listing and looking up", () => {
  test("GET delayed_events with the status and delay_id filters; GET by id in both API versions", async () => {
    const user = await User.register(server.baseUrl, "lister");
    const other = await User.register(server.baseUrl, "lister2");
    const roomId = await sharedRoom(user, [other]);
    const a = delayIdOf(await delayedState(user, roomId, "org.example.call", "ka", { n: 1 }, 60_000));
    const b = delayIdOf(await delayedSend(user, roomId, { n: 2 }, 60_000));
    const c = delayIdOf(await delayedSend(user, roomId, { n: 3 }, 60_000));
    ok(await manage(server.baseUrl, c, "cancel"));
    const list = (query = "") => request(server.baseUrl, "GET", `${U4140}/delayed_events${query}`, { token: user.token });
    type Item = { delay_id: string; room_id: string; type: string; state_key?: string; delay: number; running_since: number; content: unknown };
    type Final = { delayed_event: Item; outcome: string; reason: string };

    const all = ok(await list()) as { delayed_events: Item[]; scheduled: Item[]; finalised: Final[] };
    assert.deepEqual(all.delayed_events.map((i) => i.delay_id).sort(), [a, b].sort());
    const itemA = all.delayed_events.find((i) => i.delay_id === a)!;
    assert.equal(itemA.room_id, roomId);
    assert.equal(itemA.type, "org.example.call");
    assert.equal(itemA.state_key, "ka");
    assert.equal(itemA.delay, 60_000);
    assert.equal(typeof itemA.running_since, "number");
    assert.deepEqual(itemA.content, { n: 1 });
    const itemB = all.delayed_events.find((i) => i.delay_id === b)!;
    assert.equal(itemB.state_key, undefined, "a timeline event has no state_key");
    assert.deepEqual(all.finalised.map((f) => [f.delayed_event.delay_id, f.outcome, f.reason]), [[c, "cancel", "action"]]);

    const scheduled = ok(await list("?status=scheduled")) as { scheduled: Item[]; finalised?: Final[] };
    assert.deepEqual(scheduled.scheduled.map((i) => i.delay_id).sort(), [a, b].sort());
    assert.deepEqual(scheduled.finalised ?? [], []);
    const fin = ok(await list("?status=finalised")) as { scheduled?: Item[]; finalised: Final[] };
    assert.deepEqual(fin.scheduled ?? [], []);
    assert.deepEqual(fin.finalised.map((f) => f.delayed_event.delay_id), [c]);
    const byId = ok(await list(`?delay_id=${enc(b)}`)) as { scheduled: Item[]; finalised: Final[] };
    assert.deepEqual(byId.scheduled.map((i) => i.delay_id), [b]);
    assert.deepEqual(byId.finalised, []);
    const two = ok(await list(`?delay_id=${enc(b)}&delay_id=${enc(c)}`)) as { scheduled: Item[]; finalised: Final[] };
    assert.deepEqual(two.scheduled.map((i) => i.delay_id), [b]);
    assert.deepEqual(two.finalised.map((f) => f.delayed_event.delay_id), [c]);
    const both = ok(await list("?status=scheduled&status=finalised")) as { scheduled: Item[]; finalised: Final[] };
    assert.equal(both.scheduled.length, 2);
    assert.equal(both.finalised.length, 1);
    // Another user's list holds none of these.
    const theirs = ok(await request(server.baseUrl, "GET", `${U4140}/delayed_events`, { token: other.token })) as { delayed_events: Item[] };
    assert.deepEqual(theirs.delayed_events, []);
    assertError(await request(server.baseUrl, "GET", `${U4140}/delayed_events`), 401, "M_MISSING_TOKEN");

    // GET by id, unstable: the scheduled item.
    const one = ok(await request(server.baseUrl, "GET", `${U4140}/delayed_events/${enc(a)}`, { token: user.token }));
    assert.equal(one.delay_id, a);
    assert.equal(one.state_key, "ka");
    assert.deepEqual(one.content, { n: 1 });
    // v1 status: scheduled, then finalised with the outcome and the event ID.
    const s1 = await statusOf(user, a);
    assert.equal(s1.status, "scheduled");
    assert.equal(s1.delay_ms, 60_000);
    assert.equal(typeof s1.scheduled_at, "number");
    ok(await manage(server.baseUrl, a, "send"));
    const s2 = await statusOf(user, a);
    assert.equal(s2.status, "finalised");
    assert.equal(s2.outcome, "send");
    assert.equal(s2.reason, "action");
    assert.equal(typeof s2.finalised_ts, "number");
    const stateEvent = (await user.fullState(roomId)).find((e) => e.type === "org.example.call" && e.state_key === "ka");
    assert.equal(s2.event_id, stateEvent?.event_id);
    const oneFinal = ok(await request(server.baseUrl, "GET", `${U4140}/delayed_events/${enc(a)}`, { token: user.token }));
    assert.equal(oneFinal.delay_id, a);
    assert.equal((oneFinal.finalised as { event_id?: string } | undefined)?.event_id, s2.event_id);
    ok(await manage(server.baseUrl, b, "cancel"));
  });
});

describe("discovery", () => {
  test("/capabilities has the unstable and the stable delayed-events capability; /versions the flag", async () => {
    const caps = await capabilities(alice);
    assert.deepEqual(caps["org.matrix.msc4140.delayed_events"], { max_delay_ms: 86_400_000, max_scheduled: 100 });
    assert.deepEqual(caps["m.delayed_events"], { max_delay_ms: 86_400_000, max_scheduled: 100 });
    const versions = ok(await request(server.baseUrl, "GET", "/_matrix/client/versions"));
    assert.equal((versions.unstable_features as Record<string, unknown>)["org.matrix.msc4140"], true);
  });
});

describe("state writes by others", () => {
  test("another user's write of the same state cancels the pending delayed state event", async () => {
    const roomId = await callRoom();
    const key = "shared-key";
    const scheduledAt = Date.now();
    const delayId = delayIdOf(await delayedState(alice, roomId, "org.example.call", key, { who: "alice-leave" }, 2000));
    const other = delayIdOf(await delayedState(alice, roomId, "org.example.call", "other-key", { who: "alice-other" }, 400));
    await bob.putState(roomId, "org.example.call", key, { who: "bob" });
    const status = await statusOf(alice, delayId);
    assert.equal(status.status, "finalised");
    assert.equal(status.outcome, "cancel");
    assert.equal(status.event_id, undefined);
    // Another state key is untouched and fires.
    assert.equal((await finalised(alice, other)).outcome, "send");
    await sleep(Math.max(0, scheduledAt + 2500 - Date.now())); // past the cancelled one's due time
    assert.deepEqual(ok(await alice.getStateRaw(roomId, "org.example.call", key)), { who: "bob" }, "the cancelled write never landed");
  });

  test("the same user's write does not cancel it", async () => {
    const roomId = await callRoom();
    const delayId = delayIdOf(await delayedState(alice, roomId, "org.example.call", "mine", { state: "left" }, 1500));
    await alice.putState(roomId, "org.example.call", "mine", { state: "joined" });
    assert.equal((await statusOf(alice, delayId)).status, "scheduled");
    const status = await finalised(alice, delayId);
    assert.equal(status.outcome, "send");
    assert.equal(status.reason, "delay");
    assert.deepEqual(ok(await alice.getStateRaw(roomId, "org.example.call", "mine")), { state: "left" });
  });
});

describe("firing goes through the auth rules of that moment", () => {
  async function assertFailedForbidden(user: User, delayId: string): Promise<void> {
    const status = await finalised(user, delayId);
    assert.equal(status.outcome, "send");
    assert.equal(status.reason, "error");
    assert.equal(status.error?.errcode, "M_FORBIDDEN");
    assert.equal(status.event_id, undefined);
    // Not retried: the record stays as it is.
    await sleep(300);
    assert.deepEqual(await statusOf(user, delayId), status);
  }

  test("a user kicked before the delay ends: recorded as failed with M_FORBIDDEN, not retried", async () => {
    const roomId = await callRoom();
    const delayId = delayIdOf(await delayedSend(bob, roomId, { marker: "kicked" }, 1500));
    ok(await alice.act("kick", roomId, bob.userId));
    await assertFailedForbidden(bob, delayId);
    assert.deepEqual(await withMarker(alice, roomId, "kicked"), []);
  });

  test("power levels raised before the delay ends: recorded as failed", async () => {
    const roomId = await callRoom();
    const delayId = delayIdOf(await delayedState(bob, roomId, "org.example.call", "bobs", { marker: "pl" }, 1500));
    const pl = await alice.getState(roomId, "m.room.power_levels");
    await alice.putState(roomId, "m.room.power_levels", "", { ...pl, events: { ...(pl.events as object), "org.example.call": 100 } });
    await assertFailedForbidden(bob, delayId);
    assert.equal((await alice.getStateRaw(roomId, "org.example.call", "bobs")).status, 404);
  });
});

describe("matrix-js-sdk", () => {
  test("schedules, lists, restarts, cancels and sends delayed events", async () => {
    const sdk = await loadSdk();
    const client = sdk.createClient({ baseUrl: server.baseUrl, accessToken: carol.token, userId: carol.userId, deviceId: carol.deviceId });
    const roomId = await carol.createRoom({});
    const type = "org.matrix.msc3401.call.member";
    const stateKey = `_${carol.userId}_${carol.deviceId}_m.call`;
    const leave = await client._unstable_sendDelayedStateEvent(roomId, { delay: 60_000 }, type as never, {} as never, stateKey);
    assert.equal(typeof leave.delay_id, "string");
    const listed = await client._unstable_getDelayedEvents();
    assert.deepEqual(listed.scheduled?.map((e) => e.delay_id), [leave.delay_id]);
    assert.equal((listed.scheduled?.[0] as { delay?: number } | undefined)?.delay, 60_000);
    await client._unstable_restartScheduledDelayedEvent(leave.delay_id);
    const scheduledOnly = await client._unstable_getDelayedEvents("scheduled", leave.delay_id);
    assert.equal(scheduledOnly.scheduled?.length, 1);
    const one = await client._unstable_getDelayedEvent(leave.delay_id);
    assert.equal(one.delay_id, leave.delay_id);
    assert.equal(one.room_id, roomId);
    assert.equal(one.delay_ms, 60_000);
    await client._unstable_cancelScheduledDelayedEvent(leave.delay_id);
    const afterCancel = await client._unstable_getDelayedEvents("finalised");
    assert.deepEqual(afterCancel.finalised?.map((f) => [f.delayed_event.delay_id, f.outcome]), [[leave.delay_id, "cancel"]]);

    const msg = await client._unstable_sendDelayedEvent(roomId, { delay: 60_000 }, null, "m.room.message" as never, {
      msgtype: "m.text",
      body: "sdk",
    } as never);
    assert.equal(typeof msg.delay_id, "string");
    await client._unstable_sendScheduledDelayedEvent(msg.delay_id);
    const status = await statusOf(carol, msg.delay_id);
    assert.equal(status.outcome, "send");
    const sent = ok(await carol.event(roomId, status.event_id!)) as unknown as Ev;
    assert.equal(sent.content.body, "sdk");
    assert.equal(sent.unsigned?.[DELAY_ID_KEY], msg.delay_id);
    await assert.rejects(client._unstable_cancelScheduledDelayedEvent(msg.delay_id), (err: { errcode?: string; httpStatus?: number }) => {
      assert.equal(err.httpStatus, 404);
      assert.equal(err.errcode, "M_NOT_FOUND");
      return true;
    });
    client.stopClient();
  });
});
