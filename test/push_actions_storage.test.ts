/**
 * Push actions in storage (storage/sql/push.ts), on every backend: an event's actions are staged
 * by room and filed by user later (`settle`). Whichever table a row is in, every reader sees the
 * same: counts, badges, `/notifications`, a pusher's pending pushes, and a read receipt forgets
 * the rows it covers in both. Filing races neither receipts nor the sends still staging rows.
 * And the badge a pusher's gateway was last sent is the one read last, whichever write lands last.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Storage } from "../src/storage/interfaces.js";
import type { PushActionRecord } from "../src/storage/push.js";
import { appendLocked, BACKENDS, concurrently, freshStorage, message, seedRoom, seedUser, type Backend } from "./helpers/storage.js";

const ALICE = "@alice:test";
const BOB = "@bob:test";
const ROOM = "!room:test";

async function joinBob(storage: Storage): Promise<void> {
  await seedUser(storage, BOB, "BOBDEV");
  await appendLocked(storage, {
    ...message(ROOM, BOB, "$bob-join"),
    type: "m.room.member",
    stateKey: BOB,
    membership: "join",
    json: JSON.stringify({ event_id: "$bob-join", content: { membership: "join" } }),
  });
}

/** Alice sends `count` messages; Bob's actions for them (the `highlights` highlight), not yet stored. */
async function sendToBob(storage: Storage, first: number, count: number, highlights: readonly number[] = []): Promise<PushActionRecord[]> {
  const records: PushActionRecord[] = [];
  for (let i = first; i < first + count; i++) {
    const eventId = `$m${i}`;
    const streamOrdering = await appendLocked(storage, message(ROOM, ALICE, eventId));
    const highlight = highlights.includes(i);
    const actions = JSON.stringify(highlight ? ["notify", { set_tweak: "highlight" }] : ["notify"]);
    records.push({ userId: BOB, roomId: ROOM, eventId, streamOrdering, threadId: "main", actions, notify: true, highlight, ts: 1_000 + i });
  }
  return records;
}

async function room(t: test.TestContext, backend: Backend): Promise<Storage> {
  const storage = await freshStorage(t, backend);
  await seedUser(storage, ALICE);
  await seedRoom(storage, ROOM, ALICE);
  await joinBob(storage);
  return storage;
}

/** Everything a reader can see of Bob's actions. */
async function seen(storage: Storage) {
  const upTo = storage.streams.current("events");
  const counts = (await storage.pushActions.counts(BOB, [ROOM], upTo)).get(ROOM);
  return {
    counts: counts && { notify: counts.notify, highlight: counts.highlight, threads: Object.fromEntries(counts.threads) },
    badge: (await storage.pushActions.badges([BOB], upTo)).get(BOB) ?? 0,
    notifications: (await storage.pushActions.notifications(BOB, { limit: 100, onlyHighlight: false })).map((n) => n.eventId),
    highlights: (await storage.pushActions.notifications(BOB, { limit: 100, onlyHighlight: true })).map((n) => n.eventId),
    pending: (await storage.pushers.pending(BOB, 0, 100)).map((p) => p.eventId),
  };
}

function suite(backend: Backend): void {
  describe(`push actions in storage (${backend.name})`, () => {
    test("staged and filed actions read the same, and a page of them may span both tables", async (t) => {
      const storage = await room(t, backend);
      const older = await sendToBob(storage, 1, 3, [2]);
      await storage.pushActions.add(older);
      assert.equal(await storage.pushActions.settle(), 3, "the first three are filed");
      const newer = await sendToBob(storage, 4, 2);
      await storage.pushActions.add(newer);

      const expected = {
        counts: { notify: 5, highlight: 1, threads: { main: { notify: 5, highlight: 1 } } },
        badge: 5,
        notifications: ["$m5", "$m4", "$m3", "$m2", "$m1"],
        highlights: ["$m2"],
        pending: ["$m1", "$m2", "$m3", "$m4", "$m5"],
      };
      assert.deepEqual(await seen(storage), expected, "two filed rows' worth in one table, three in the other");

      // Pages that cross from one table to the other, in both directions.
      const page = await storage.pushActions.notifications(BOB, { limit: 3, onlyHighlight: false });
      assert.deepEqual(page.map((n) => n.eventId), ["$m5", "$m4", "$m3"]);
      const next = await storage.pushActions.notifications(BOB, { before: page[2]!.streamOrdering, limit: 3, onlyHighlight: false });
      assert.deepEqual(next.map((n) => n.eventId), ["$m2", "$m1"]);
      const pending = await storage.pushers.pending(BOB, older[1]!.streamOrdering, 2);
      assert.deepEqual(pending.map((p) => p.eventId), ["$m3", "$m4"]);
      const unread = await storage.pushers.pendingEvents(BOB, ["$m1", "$m5"]);
      assert.deepEqual(unread.map((p) => p.eventId), ["$m1", "$m5"]);

      assert.equal(await storage.pushActions.settle(), 2, "the other two are filed");
      assert.equal(await storage.pushActions.settle(), 0, "nothing is left to file");
      assert.deepEqual(await seen(storage), expected, "all five in one table");
    });

    test("an event that notifies thousands of members is staged in one statement, values and all", async (t) => {
      const storage = await room(t, backend);
      const [forBob] = await sendToBob(storage, 1, 1, [1]);
      // More recipients than either backend takes parameters in one statement at nine a row
      // (SQLite 32,766; PostgreSQL 65,535), as a room of 8,000 members makes.
      const others = Array.from({ length: 7_999 }, (_, i): PushActionRecord => ({ ...forBob!, userId: `@member${i}:test`, highlight: false }));
      await storage.pushActions.add([forBob!, ...others]);

      const expected = {
        counts: { notify: 1, highlight: 1, threads: { main: { notify: 1, highlight: 1 } } },
        badge: 1,
        notifications: ["$m1"],
        highlights: ["$m1"],
        pending: ["$m1"],
      };
      assert.deepEqual(await seen(storage), expected, "staged");
      const [notification] = await storage.pushActions.notifications(BOB, { limit: 1, onlyHighlight: false });
      assert.deepEqual(
        { ...notification, read: undefined },
        { ...forBob, read: undefined },
        "every value comes back as it was given, types included",
      );
      assert.equal(await storage.pushActions.settle(), 8_000, "every row is filed");
      assert.deepEqual(await seen(storage), expected, "filed");
    });

    test("a receipt forgets what it covers in both tables, keeping highlights", async (t) => {
      const storage = await room(t, backend);
      const older = await sendToBob(storage, 1, 3, [1]);
      await storage.pushActions.add(older);
      await storage.pushActions.settle();
      const newer = await sendToBob(storage, 4, 3, [4]);
      await storage.pushActions.add(newer);

      // Read up to $m5: filed $m2 and $m3 go, as does staged $m5; the highlights stay.
      await storage.pushActions.forgetRead(BOB, ROOM, newer[1]!.streamOrdering, null);
      const left = await storage.pushActions.notifications(BOB, { limit: 100, onlyHighlight: false });
      assert.deepEqual(left.map((n) => [n.eventId, n.highlight]), [["$m6", false], ["$m4", true], ["$m1", true]]);
      await storage.pushActions.settle();
      const after = await storage.pushActions.notifications(BOB, { limit: 100, onlyHighlight: false });
      assert.deepEqual(after.map((n) => n.eventId), ["$m6", "$m4", "$m1"]);

      // Pruning reaches both tables too.
      const last = await sendToBob(storage, 7, 1);
      await storage.pushActions.add(last);
      assert.equal(await storage.pushActions.prune(10_000), 4);
      assert.deepEqual(await storage.pushActions.notifications(BOB, { limit: 100, onlyHighlight: false }), []);
    });

    test("filing races receipts and sends without losing or bringing back a row", async (t) => {
      const storage = await room(t, backend);
      const records = await sendToBob(storage, 1, 40);
      await storage.pushActions.add(records);
      const readTo = records[19]!.streamOrdering;
      // Several moves at once (as from several processes), a receipt, and more actions being
      // staged meanwhile.
      const more = await sendToBob(storage, 41, 10);
      await concurrently(8, async (i) => {
        if (i === 0) return storage.pushActions.forgetRead(BOB, ROOM, readTo, null);
        if (i === 1) return storage.pushActions.add(more);
        return storage.pushActions.settle();
      });
      await storage.pushActions.settle();
      const expected = [...records.slice(20), ...more].map((r) => r.eventId);
      assert.deepEqual((await seen(storage)).pending, expected, "exactly the unread rows, once each");
      assert.equal((await seen(storage)).counts?.notify, 30);
    });

    test("a move leaves rows of a transaction still open, and files them once it commits", async (t) => {
      const storage = await room(t, backend);
      const records = await sendToBob(storage, 1, 2);
      let staged!: () => void;
      const wasStaged = new Promise<void>((resolve) => (staged = resolve));
      let finish!: () => void;
      const finished = new Promise<void>((resolve) => (finish = resolve));
      const open = storage.transaction(async (tx) => {
        await tx.pushActions.add(records);
        staged();
        await finished;
      });
      await wasStaged;
      // On PostgreSQL the move runs beside the open transaction and cannot see its rows; on
      // SQLite it waits for it. Either way nothing is lost.
      const moving = storage.pushActions.settle();
      finish();
      await Promise.all([open, moving]);
      await storage.pushActions.settle();
      assert.deepEqual((await seen(storage)).pending, ["$m1", "$m2"]);
      assert.equal(await storage.pushActions.settle(), 0);
    });

    test("a delivery that records its badge late keeps the badge read after it", async (t) => {
      const storage = await room(t, backend);
      const key = { appId: "org.example.app", pushkey: "key-1", userId: BOB };
      await storage.pushers.set(
        { ...key, kind: "http", appDisplayName: "App", deviceDisplayName: "Phone", profileTag: null, lang: "en", data: { url: "https://push.example/_matrix/push/v1/notify" }, deviceId: null, createdTs: 1, lastStreamOrdering: 0 },
        false,
      );
      const claim = { worker: "w0", leaseUntil: Date.now() + 60_000, live: ["w0"], now: Date.now() };
      assert.equal((await storage.pushers.claim([key], claim)).length, 1);

      // A push carried badge 2 (read at 1,000 µs); a read receipt's badge 0 (read at 2,000) is
      // sent and recorded before the delivery writes its progress.
      assert.equal(await storage.pushers.noteBadge(key, { count: 0, readUs: 2_000 }), true);
      const late = { key, worker: "w0", streamOrdering: 5, successTs: 1, badge: { count: 2, readUs: 1_000 } };
      assert.deepEqual(await storage.pushers.advance([late]), [true]);
      assert.equal((await storage.pushers.get(key))?.lastStreamOrdering, 5, "the position is written");
      // So the same receipt again finds 0 already sent: nothing to send.
      assert.equal(await storage.pushers.noteBadge(key, { count: 0, readUs: 3_000 }), false);

      // A badge read later than the recorded one replaces it; one read earlier never does.
      const newer = { ...late, streamOrdering: 6, badge: { count: 4, readUs: 4_000 } };
      assert.deepEqual(await storage.pushers.advance([newer]), [true]);
      assert.equal(await storage.pushers.noteBadge(key, { count: 1, readUs: 3_500 }), false, "read before the recorded one");
      assert.equal(await storage.pushers.noteBadge(key, { count: 4, readUs: 5_000 }), false, "already sent");
      assert.equal(await storage.pushers.noteBadge(key, { count: 1, readUs: 6_000 }), true);
    });
  });
}

for (const backend of BACKENDS) suite(backend);
