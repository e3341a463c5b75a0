/** Delayed events (MSC4140): restart, late actions, exactly-once finalisation under races, and surviving a server restart. */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import {
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
  type Action,
} from "./helpers/delayed.js";
import { openTestDatabase, removeTestData } from "./helpers/database.js";
import { assertError, ok, User } from "./helpers/rooms.js";
import { request, startServer, type Reply, type TestServer } from "./helpers/server.js";

let server: TestServer;
let alice: User;
let bob: User;

before(async () => {
  server = await startServer();
  alice = await User.register(server.baseUrl, "alice");
  bob = await User.register(server.baseUrl, "bob");
});
after(async () => server?.stop());

describe("restart, cancel and send", () => {
  test("restarting keeps pushing the send time back; once restarts stop, the event fires, once", async () => {
    const roomId = await sharedRoom(alice, [bob]);
    // Each restart must land within the delay, however loaded the machine: 200 ms apart leaves plenty.
    const delay = 2500;
    const scheduledAt = Date.now();
    const delayId = delayIdOf(await delayedSend(alice, roomId, { marker: "kept-alive" }, delay));
    // Restart every 200 ms until well past the original due time, as a call client does every ~5 s.
    while (Date.now() - scheduledAt < 2 * delay) {
      await sleep(200);
      assert.deepEqual(ok(await manage(server.baseUrl, delayId, "restart")), {}, "still scheduled, so restartable");
    }
    const status = await statusOf(alice, delayId);
    assert.equal(status.status, "scheduled", "restarted past its first due time and still not sent");
    assert.deepEqual(await withMarker(alice, roomId, "kept-alive"), []);
    const done = await finalised(alice, delayId);
    assert.equal(done.outcome, "send");
    assert.equal(done.reason, "delay");
    const events = await withMarker(bob, roomId, "kept-alive");
    assert.equal(events.length, 1);
    assert.equal(events[0]!.event_id, done.event_id);
  });

  test("after the event fired, a late cancel, restart or send gets 404 M_NOT_FOUND, with or without a token", async () => {
    const roomId = await sharedRoom(alice, [bob]);
    const delayId = delayIdOf(await delayedState(alice, roomId, "org.example.call", "late", { marker: "late" }, 200));
    assert.deepEqual(await stateAppears(alice, roomId, "org.example.call", "late"), { marker: "late" });
    await finalised(alice, delayId);
    for (const action of ["cancel", "restart", "send"]) {
      assertError(await manage(server.baseUrl, delayId, action), 404, "M_NOT_FOUND");
      assertError(await manage(server.baseUrl, delayId, action, alice.token), 404, "M_NOT_FOUND");
      assertError(await manageBody(server.baseUrl, delayId, { action }), 404, "M_NOT_FOUND");
    }
    // Sent by an action, then the same: a delegated-leave caller's second "send" finds nothing.
    const sent = delayIdOf(await delayedSend(alice, roomId, { marker: "sent-once" }, 60_000));
    ok(await manage(server.baseUrl, sent, "send"));
    assertError(await manage(server.baseUrl, sent, "send"), 404, "M_NOT_FOUND");
    assertError(await manage(server.baseUrl, sent, "restart"), 404, "M_NOT_FOUND");
    assert.equal((await withMarker(alice, roomId, "sent-once")).length, 1);
    // Cancelled: never fires, and later actions find nothing.
    const cancelled = delayIdOf(await delayedSend(alice, roomId, { marker: "cancelled" }, 1500));
    ok(await manage(server.baseUrl, cancelled, "cancel"));
    await sleep(2000); // past the delay it was scheduled with
    assertError(await manage(server.baseUrl, cancelled, "send"), 404, "M_NOT_FOUND");
    assert.deepEqual(await withMarker(alice, roomId, "cancelled"), []);
  });
});

describe("exactly-once finalisation", () => {
  /** Many cancel, send and restart calls at once on one delay ID, at about its due time. */
  async function race(roomId: string, marker: string, delay: number, waitBefore: number, round: number): Promise<void> {
    const delayId = delayIdOf(await delayedSend(alice, roomId, { marker }, delay));
    await sleep(waitBefore);
    // Which action leads changes from round to round, so that each gets to be first.
    const order: Action[] = ["cancel", "send", "restart"];
    const lead = order.slice(round % 3).concat(order.slice(0, round % 3));
    const actions: Action[] = [];
    for (let i = 0; i < 8; i++) actions.push(...lead);
    const replies: [Action, Reply, number][] = await Promise.all(
      actions.map(async (a, i): Promise<[Action, Reply, number]> => {
        const sentAt = Date.now();
        return [a, await manage(server.baseUrl, delayId, a, i % 2 === 0 ? alice.token : undefined), sentAt];
      }),
    );
    for (const [action, res] of replies) {
      assert.ok(res.status === 200 || res.status === 404, `${action}: ${res.status} ${JSON.stringify(res.body)}`);
      if (res.status === 200) assert.deepEqual(res.body, {});
      else assert.equal(res.body.errcode, "M_NOT_FOUND");
    }
    const won = (a: Action) => replies.filter(([action, res]) => action === a && res.status === 200).length;
    assert.ok(won("cancel") + won("send") <= 1, `one finalising action at most: cancel ${won("cancel")}, send ${won("send")}`);
    const status = await finalised(alice, delayId);
    const events = await withMarker(alice, roomId, marker);
    if (status.outcome === "send") {
      assert.equal(events.length, 1, `${marker}: sent exactly once`);
      assert.equal(events[0]!.event_id, status.event_id);
      assert.equal(won("cancel"), 0);
      assert.equal(status.reason, won("send") === 1 ? "action" : "delay");
      if (status.reason === "delay") {
        // A restart that succeeded was applied, so the timer cannot have fired before a full delay after it.
        const restarts = replies.filter(([a, res]) => a === "restart" && res.status === 200).map(([, , sentAt]) => sentAt);
        if (restarts.length > 0) assert.ok(status.finalised_ts! >= Math.max(...restarts) + delay, "fired despite a later restart");
      }
    } else {
      assert.equal(status.outcome, "cancel");
      assert.equal(events.length, 0, `${marker}: cancelled, never sent`);
      assert.equal(won("cancel"), 1);
      assert.equal(won("send"), 0);
    }
  }

  test("concurrent cancel, send and restart around the due time: one event or none, every reply 200 or 404", async () => {
    const roomId = await sharedRoom(alice, [bob]);
    // Waits on both sides of the due time, so that some races meet the timer.
    const rounds = [150, 220, 280, 320, 350, 380, 0, 420].map((wait, i) => race(roomId, `race-${i}`, 400, wait, i));
    await Promise.all(rounds);
    // Nothing was left behind in a half-sent state.
    const list = ok(await request(server.baseUrl, "GET", `${U4140}/delayed_events?status=scheduled`, { token: alice.token })) as {
      scheduled: unknown[];
    };
    assert.deepEqual(list.scheduled, []);
  });
});

describe("surviving a server restart", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "switchboard-delayed-"));
  });
  after(() => removeTestData(dir));

  /** The same login on a server at a new address. */
  const on = (s: TestServer, u: User) => new User(s.baseUrl, u.userId, u.token, u.deviceId);

  test("due while down: sent at start; not yet due: fires later; restart works across the restart", async () => {
    const first = await startServer({}, { dir });
    const owner = await User.register(first.baseUrl, "persist");
    const member = await User.register(first.baseUrl, "member");
    const roomId = await sharedRoom(owner, [member], { power_level_content_override: { events: { "org.example.call": 0 } } });
    const missed = delayIdOf(await delayedState(owner, roomId, "org.example.call", "missed", { marker: "missed" }, 300));
    const later = delayIdOf(await delayedState(owner, roomId, "org.example.call", "later", { marker: "later" }, 8000));
    const kept = delayIdOf(await delayedState(owner, roomId, "org.example.call", "kept", { marker: "kept" }, 8000));
    const keptBefore = await statusOf(owner, kept);
    await first.homeserver.stop();
    await sleep(600);

    const second = await startServer({}, { dir });
    try {
      const o = on(second, owner);
      // The missed one fires at start, with no action from anyone.
      assert.deepEqual(await stateAppears(o, roomId, "org.example.call", "missed"), { marker: "missed" });
      const m = await finalised(o, missed);
      assert.equal(m.outcome, "send");
      assert.equal(m.reason, "delay");
      // The others are still scheduled; one is restarted by ID alone on the new server.
      assert.equal((await statusOf(o, later)).status, "scheduled");
      assert.deepEqual(ok(await manage(second.baseUrl, kept, "restart")), {});
      const keptAfter = await statusOf(o, kept);
      assert.equal(keptAfter.status, "scheduled");
      assert.ok(keptAfter.scheduled_at > keptBefore.scheduled_at, "the restart moved the send time");
      // Both fire on the new server's timer.
      for (const [id, key] of [
        [later, "later"],
        [kept, "kept"],
      ] as const) {
        const s = await finalised(o, id, 20_000);
        assert.equal(s.outcome, "send");
        assert.equal(s.reason, "delay");
        assert.deepEqual(ok(await on(second, member).getStateRaw(roomId, "org.example.call", key)), { marker: key });
      }
    } finally {
      await second.homeserver.stop();
    }
  });

  test("an event the previous process left mid-send is sent once at start, never twice", async () => {
    const first = await startServer({}, { dir });
    const owner = await User.register(first.baseUrl, "midsend");
    const roomId = await owner.createRoom({});
    // One whose event was written before the crash, one whose event was not.
    const written = delayIdOf(await delayedSend(owner, roomId, { marker: "written" }, 60_000));
    ok(await manage(first.baseUrl, written, "send"));
    const writtenEventId = (await statusOf(owner, written)).event_id;
    const unwritten = delayIdOf(await delayedSend(owner, roomId, { marker: "unwritten" }, 60_000));
    await first.homeserver.stop();

    // What a crash between the claim and the record leaves behind.
    const db = await openTestDatabase(dir);
    await db.run(
      "UPDATE delayed_events SET status = 'sending', outcome = NULL, reason = NULL, finalised_ts = NULL, event_id = NULL WHERE delay_id IN (?, ?)",
      [written, unwritten],
    );
    await db.close();

    const second = await startServer({}, { dir });
    try {
      const o = on(second, owner);
      const w = await finalised(o, written);
      assert.equal(w.outcome, "send");
      assert.equal(w.event_id, writtenEventId, "the event already written is recognised by its delay ID");
      const u = await finalised(o, unwritten);
      assert.equal(u.outcome, "send");
      assert.equal(typeof u.event_id, "string");
      assert.equal((await withMarker(o, roomId, "written")).length, 1);
      assert.equal((await withMarker(o, roomId, "unwritten")).length, 1);
      assertError(await manage(second.baseUrl, unwritten, "send"), 404, "M_NOT_FOUND");
    } finally {
      await second.homeserver.stop();
    }
  });

  test("stopping while events are firing: each is sent exactly once, before the stop or after the next start", async () => {
    const first = await startServer({}, { dir });
    const owner = await User.register(first.baseUrl, "burst");
    const roomId = await owner.createRoom({});
    const ids: string[] = [];
    for (let n = 0; n < 60; n++) ids.push(delayIdOf(await delayedSend(owner, roomId, { marker: `burst-${n}` }, 400)));
    // Stop at about the time they fall due, so that the stop meets the scheduler mid-batch.
    await sleep(380);
    await first.homeserver.stop();
    // A clean stop waits for the event being written: none is left half-sent.
    const db = await openTestDatabase(dir, { readonly: true });
    const states = await db.all("SELECT status, COUNT(*) AS n FROM delayed_events WHERE user_id = ? GROUP BY status", [owner.userId]);
    await db.close();
    assert.deepEqual(states.filter((r) => (r as { status: string }).status === "sending"), []);
    const second = await startServer({}, { dir });
    try {
      const o = on(second, owner);
      const chunk = await waitFor("every burst event", async () => {
        const events = (ok(await o.messages(roomId, { dir: "b", limit: 200 })).chunk as { content: { marker?: string } }[]).filter((e) =>
          e.content.marker?.startsWith("burst-"),
        );
        return events.length >= ids.length ? events : undefined;
      });
      assert.deepEqual(chunk.map((e) => e.content.marker).sort(), ids.map((_, n) => `burst-${n}`).sort(), "each exactly once");
      for (const id of ids) {
        const s = await finalised(o, id);
        assert.equal(s.outcome, "send");
        assert.equal(s.reason, "delay");
      }
    } finally {
      await second.homeserver.stop();
    }
  });

  test("stopping while nothing is due leaves every pending event scheduled", async () => {
    const first = await startServer({}, { dir });
    const owner = await User.register(first.baseUrl, "stopper");
    const roomId = await owner.createRoom({});
    const ids = await Promise.all([1, 2, 3].map((n) => delayedSend(owner, roomId, { n }, 60_000).then(delayIdOf)));
    await first.homeserver.stop();
    const second = await startServer({}, { dir });
    try {
      const o = on(second, owner);
      for (const id of ids) assert.equal((await statusOf(o, id)).status, "scheduled");
      const listed = ok(await request(second.baseUrl, "GET", `${U4140}/delayed_events`, { token: o.token }));
      const pending = listed.delayed_events as { delay_id: string }[];
      assert.deepEqual(pending.map((e) => e.delay_id).sort(), [...ids].sort());
      for (const id of ids) ok(await manage(second.baseUrl, id, "cancel"));
    } finally {
      await second.homeserver.stop();
    }
  });
});
