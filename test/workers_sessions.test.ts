/**
 * Several processes on one PostgreSQL database (docs/workers.md): what one process revokes or
 * moves must hold on every other at once. Tokens ended through one process (logout, device
 * deletion, password change) are refused by another that had them cached; a delayed event
 * restarted or cancelled through one process is not sent on its old schedule by another. Real
 * processes, started separately with `--worker-id`; needs SWITCHBOARD_TEST_POSTGRES.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { delayedSend, delayIdOf, finalised, manage, sleep, statusOf, withMarker } from "./helpers/delayed.js";
import { assertError, enc, ok, User } from "./helpers/rooms.js";
import { on, skipWithoutPostgres, startWorkers } from "./helpers/workers.js";

const PASSWORD = "correct horse battery staple";

const passwordAuth = (u: User, session: string) => ({ type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: PASSWORD, session });

/** The whoami of a token through one process: 200 naming the user. */
async function acceptedBy(u: User): Promise<void> {
  assert.equal(ok(await u.req("GET", "/account/whoami")).user_id, u.userId);
}

describe("sessions and delayed events across processes", { skip: skipWithoutPostgres }, () => {
  test("logout through one process: the token is refused at once by another that had it cached", async () => {
    const [a, b] = await startWorkers(2);
    const dave = await User.register(a!.url, "dave");
    await acceptedBy(on(dave, b!));
    ok(await dave.req("POST", "/logout", {}));
    assertError(await on(dave, b!).req("GET", "/account/whoami"), 401, "M_UNKNOWN_TOKEN");
  });

  test("device deletion and password change through one process: the tokens they end are refused at once by another", async () => {
    const [a, b] = await startWorkers(2);
    const dave = await User.register(a!.url, "dave");
    const phone = await dave.newDevice();
    const laptop = await dave.newDevice();
    // The other process has every token cached.
    for (const u of [dave, phone, laptop]) await acceptedBy(on(u, b!));

    // Deleting the phone through A (UIA: the first request opens the session).
    const path = `/devices/${enc(phone.deviceId)}`;
    const opened = await dave.req("DELETE", path, {});
    assert.equal(opened.status, 401, JSON.stringify(opened.body));
    ok(await dave.req("DELETE", path, { auth: passwordAuth(dave, opened.body.session as string) }));
    assertError(await on(phone, b!).req("GET", "/account/whoami"), 401, "M_UNKNOWN_TOKEN");
    await acceptedBy(on(laptop, b!));

    // Changing the password through A logs out every other device (logout_devices defaults to true).
    const started = await dave.req("POST", "/account/password", { new_password: "a new password" });
    assert.equal(started.status, 401, JSON.stringify(started.body));
    ok(await dave.req("POST", "/account/password", { new_password: "a new password", auth: passwordAuth(dave, started.body.session as string) }));
    assertError(await on(laptop, b!).req("GET", "/account/whoami"), 401, "M_UNKNOWN_TOKEN");
    // The device that changed it stays logged in, on both.
    await acceptedBy(on(dave, b!));
    await acceptedBy(dave);
  });

  test("a delayed event restarted through one process is not sent on its old schedule by another; one cancelled is never sent", { timeout: 60_000 }, async () => {
    const [a, b] = await startWorkers(2);
    const erin = await User.register(a!.url, "erin");
    const roomId = await erin.createRoom({});
    const DELAY = 5000;
    // All three scheduled through A, which keeps a timer for each.
    const restarted = delayIdOf(await delayedSend(erin, roomId, { body: "restarted", marker: "restarted" }, DELAY));
    const cancelled = delayIdOf(await delayedSend(erin, roomId, { body: "cancelled", marker: "cancelled" }, DELAY));
    const untouched = delayIdOf(await delayedSend(erin, roomId, { body: "untouched", marker: "untouched" }, DELAY));
    const originallyDue = (await statusOf(erin, restarted)).scheduled_at;
    // Some way into the delay (the restart must land after the schedule, not before its end).
    await sleep(1000);
    const restartedAt = Date.now();
    assert.deepEqual(ok(await manage(b!.url, restarted, "restart", erin.token)), {});
    assert.deepEqual(ok(await manage(b!.url, cancelled, "cancel", erin.token)), {});
    // A sees the new schedule.
    const moved = await statusOf(erin, restarted);
    assert.equal(moved.status, "scheduled");
    assert.ok(moved.scheduled_at >= restartedAt + DELAY && moved.scheduled_at > originallyDue, JSON.stringify({ moved, originallyDue, restartedAt }));

    // The untouched one fires on the old schedule; the restarted one only on its new one.
    const fired = await finalised(erin, untouched, 30_000);
    assert.equal(fired.outcome, "send");
    const late = await finalised(erin, restarted, 30_000);
    assert.equal(late.outcome, "send");
    assert.equal(late.reason, "delay");
    assert.ok(late.finalised_ts! >= moved.scheduled_at, `sent at ${late.finalised_ts}, before its new due time ${moved.scheduled_at}`);
    // By now the cancelled one's old due time has long passed: it was never sent.
    const gone = await statusOf(on(erin, b!), cancelled);
    assert.equal(gone.outcome, "cancel");
    assert.equal(gone.reason, "action");
    assert.equal(gone.event_id, undefined);
    assert.deepEqual(await withMarker(erin, roomId, "cancelled"), []);
    assert.equal((await withMarker(on(erin, b!), roomId, "restarted")).length, 1);
    assert.equal((await withMarker(erin, roomId, "untouched")).length, 1);
  });
});
