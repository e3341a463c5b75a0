/**
 * `GET /_matrix/client/v1/delayed_events` as MSC4140 was accepted: ordering, direction,
 * `since_ts`, pagination tokens, filters, errors, and the retention of finalised events.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { delayIdOf, lookupV1, manageV1, sharedRoom, waitFor, type AcceptedItem } from "./helpers/delayed.js";
import { assertError, enc, ok, startWithUsers, type User } from "./helpers/rooms.js";
import { request, type Reply, type TestServer } from "./helpers/server.js";

let server: TestServer;
let owner: User;
let lister: User;
let other: User;
/** Rooms: twelve scheduled events in `r1`; the finalised ones in `r2`. */
let r1: string;
let r2: string;
const scheduled: string[] = [];
let cancelled: string;
let sentByAction: string;
let sentByTimer: string;
let failed: string;

interface Page {
  delayed_events: AcceptedItem[];
  next_batch?: string;
  prev_batch?: string;
}

const LIST = "/_matrix/client/v1/delayed_events";
const list = (user: User, query: string): Promise<Reply> => request(user.baseUrl, "GET", `${LIST}?${query}`, { token: user.token });
const page = async (query: string): Promise<Page> => ok(await list(lister, query)) as unknown as Page;
const ids = (p: Page) => p.delayed_events.map((e) => e.delay_id);

const putDelayed = (user: User, room: string, type: string, txnId: string, body: unknown): Promise<Reply> =>
  request(user.baseUrl, "PUT", `/_matrix/client/v3/rooms/${enc(room)}/delayed_event/${enc(type)}/${txnId}`, { token: user.token, body });

async function finalisedItem(id: string): Promise<AcceptedItem> {
  return waitFor(`${id} to be finalised`, async () => {
    const item = await lookupV1(lister, id);
    return item.origin_server_ts !== undefined ? item : undefined;
  });
}

before(async () => {
  ({ server, users: [owner, lister, other] } = await startWithUsers("owner", "lister", "other"));
  r1 = await sharedRoom(owner, [lister]);
  r2 = await sharedRoom(owner, [lister], { power_level_content_override: { events: { "org.example.b": 0, "org.example.c": 0 } } });
  // Scheduled in the order of their send times: each one's delay is longer.
  for (let i = 0; i < 12; i++) {
    scheduled.push(delayIdOf(await putDelayed(lister, r1, "org.example.a", `a${i}`, { delay: 600_000 + i * 1000, content: { i } })));
  }
  cancelled = delayIdOf(await putDelayed(lister, r2, "org.example.b", "b", { delay: 300_000, state_key: "k", content: {} }));
  ok(await manageV1(lister, cancelled, "cancel"));
  sentByAction = delayIdOf(await putDelayed(lister, r2, "org.example.c", "c", { delay: 400_000, state_key: "k", content: {} }));
  ok(await manageV1(lister, sentByAction, "send"));
  sentByTimer = delayIdOf(await putDelayed(lister, r2, "m.room.message", "t", { delay: 1, content: { body: "timer" } }));
  // Power 0 may not send this state type (state_default 50): its timer's send fails.
  failed = delayIdOf(await putDelayed(lister, r2, "org.example.guarded", "g", { delay: 1, state_key: "", content: {} }));
  await finalisedItem(sentByTimer);
  await finalisedItem(failed);
});
after(async () => server?.stop());

describe("GET /v1/delayed_events", () => {
  test("by default: send_ts order, forward from now, pages of 10 with next_batch and never prev_batch", async () => {
    const first = await page(`room_id=${enc(r1)}`);
    assert.deepEqual(ids(first), scheduled.slice(0, 10));
    assert.equal(first.prev_batch, undefined);
    assert.equal(typeof first.next_batch, "string");
    const second = await page(`room_id=${enc(r1)}&from=${enc(first.next_batch!)}`);
    assert.deepEqual(ids(second), scheduled.slice(10));
    assert.equal(second.next_batch, undefined);
    assert.equal(second.prev_batch, undefined);
    // Every item has the accepted fields; the scheduled ones no finalisation time.
    const item = first.delayed_events[0]!;
    assert.deepEqual(
      { ...item, running_since: 0 },
      { delay_id: scheduled[0], room_id: r1, type: "org.example.a", delay: 600_000, running_since: 0, content: { i: 0 } },
    );
    // What is due before now (sent by its timer, failed) is behind the default starting point.
    const all = [...ids(await page("")), ...ids(await page(`from=${enc((await page("")).next_batch!)}`))];
    assert.ok(!all.includes(sentByTimer) && !all.includes(failed));
    assert.ok(all.includes(cancelled) && all.includes(sentByAction));
  });

  test("dir=b with since_ts=end: newest first, prev_batch and never next_batch", async () => {
    const first = await page(`dir=b&since_ts=end&room_id=${enc(r1)}`);
    const reversed = [...scheduled].reverse();
    assert.deepEqual(ids(first), reversed.slice(0, 10));
    assert.equal(first.next_batch, undefined);
    const second = await page(`dir=b&room_id=${enc(r1)}&from=${enc(first.prev_batch!)}`);
    assert.deepEqual(ids(second), reversed.slice(10));
    assert.equal(second.prev_batch, undefined);
    // Forward from the end there is nothing; since_ts in ms starts where it says.
    assert.deepEqual(ids(await page("since_ts=end")), []);
    assert.deepEqual(ids(await page(`since_ts=0&room_id=${enc(r2)}`)).sort(), [cancelled, sentByAction, sentByTimer, failed].sort());
  });

  test("order_by origin_server_ts and running_since", async () => {
    const byFinal = await page("order_by=origin_server_ts&status=finalised&dir=b&since_ts=end");
    const stamps = byFinal.delayed_events.map((e) => e.origin_server_ts!);
    assert.equal(stamps.length, 4);
    assert.deepEqual(stamps, [...stamps].sort((a, b) => b - a));
    // A restart makes an event the most recently running.
    ok(await manageV1(lister, scheduled[3]!, "restart"));
    const byRunning = await page(`order_by=running_since&dir=b&since_ts=end&room_id=${enc(r1)}`);
    assert.equal(ids(byRunning)[0], scheduled[3]);
    const running = byRunning.delayed_events.map((e) => e.running_since);
    assert.deepEqual(running, [...running].sort((a, b) => b - a));
    // A token belongs to its ordering.
    assertError(await list(lister, `order_by=running_since&from=${enc((await page(`room_id=${enc(r1)}`)).next_batch!)}`), 400, "M_INVALID_PARAM");
  });

  test("filters: status, room_id, type, outcome (send/cancel/error), reason (action/delay)", async () => {
    const q = (filter: string) => page(`since_ts=0&${filter}`).then((p) => ids(p).sort());
    assert.deepEqual(await q("status=finalised"), [cancelled, sentByAction, sentByTimer, failed].sort());
    const sched = await page(`since_ts=0&status=scheduled`);
    assert.equal(sched.delayed_events.length, 10);
    assert.ok(sched.delayed_events.every((e) => e.origin_server_ts === undefined && e.room_id === r1));
    assert.deepEqual(await q("type=org.example.b"), [cancelled]);
    assert.deepEqual(await q(`room_id=${enc(r2)}&type=m.room.message`), [sentByTimer]);
    assert.deepEqual(await q("outcome=send"), [sentByAction, sentByTimer].sort());
    assert.deepEqual(await q("outcome=cancel"), [cancelled]);
    assert.deepEqual(await q("outcome=error"), [failed]);
    assert.deepEqual(await q("reason=action"), [cancelled, sentByAction].sort());
    assert.deepEqual(await q("reason=delay"), [sentByTimer, failed].sort());
    const failure = (await page("since_ts=0&outcome=error")).delayed_events[0]!;
    assert.equal(failure.error?.errcode, "M_FORBIDDEN");
    assert.equal(failure.event_id, undefined);
    const sent = (await page("since_ts=0&outcome=send&reason=action")).delayed_events[0]!;
    assert.equal(typeof sent.event_id, "string");
    assert.equal(sent.error, undefined);
    // Only one's own.
    assert.deepEqual(ids(ok(await list(other, "since_ts=0")) as unknown as Page), []);
  });

  test("unsupported values: 400 M_INVALID_PARAM; no token: 401 M_MISSING_TOKEN", async () => {
    const bad = [
      "order_by=stream",
      "dir=x",
      "status=pending",
      "outcome=sent",
      "reason=error",
      "since_ts=yesterday",
      "since_ts=-5",
      "from=not-a-token",
      `from=${enc(Buffer.from(JSON.stringify(["send_ts", "x", 1])).toString("base64url"))}`,
      "status=scheduled&status=finalised",
    ];
    for (const query of bad) assertError(await list(lister, query), 400, "M_INVALID_PARAM");
    assertError(await request(server.baseUrl, "GET", LIST), 401, "M_MISSING_TOKEN");
  });
});

describe("retention of finalised events", () => {
  test("7 days or 1,000 per user: what is newer stays; the store forgets by age and by count, scheduled ones never", async () => {
    const { delayedEvents } = server.homeserver.services;
    const store = server.homeserver.storage.delayedEvents;
    // Everything here was finalised just now: the service's sweep keeps it.
    assert.equal(await delayedEvents.pruneFinalised(), 0);
    assert.equal(typeof (await lookupV1(lister, cancelled)).origin_server_ts, "number");
    // Keeping one per user keeps the newest finalised.
    const newest = (await page("order_by=origin_server_ts&status=finalised&dir=b&since_ts=end")).delayed_events[0]!.delay_id;
    assert.equal(await store.pruneFinalised(0, 1), 3);
    assert.deepEqual(ids(await page("status=finalised&since_ts=0")), [newest]);
    // By age: everything finalised before the cut goes.
    assert.equal(await store.pruneFinalised(Date.now() + 1, 1000), 1);
    assertError(await request(server.baseUrl, "GET", `${LIST}/${enc(newest)}`, { token: lister.token }), 404, "M_NOT_FOUND");
    assert.deepEqual(ids(await page(`since_ts=0&status=scheduled&room_id=${enc(r1)}`)).length, 10);
  });
});
