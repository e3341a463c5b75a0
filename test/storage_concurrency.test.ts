/**
 * Storage contract, streams under concurrency: many writers append to a stream at once while a
 * reader follows it the way /sync does (read (last, current], then move `last` to `current`).
 * Whatever order the writers commit in, the reader sees every committed row exactly once, in
 * stream order, at the position its writer was given. Runs on every backend (helpers/storage.ts).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Storage } from "../src/storage/interfaces.js";
import type { StreamName } from "../src/storage/sql/streams.js";
import { appendLocked, BACKENDS, concurrently, freshDatabase, freshStorage, message, seedRoom, seedUser, type Backend } from "./helpers/storage.js";

const WRITERS = 8;
const PER_WRITER = 25;

/** A row of a stream as a writer was told it, or as a reader found it. */
interface Item {
  key: string;
  position: number;
}

interface Followed {
  committed: Item[];
  seen: Item[];
  reads: number;
}

/**
 * Runs `write` (the racing writers) while a reader follows `stream` with `read`, until the
 * writers are done and one last read has been made.
 */
async function follow(
  storage: Storage,
  stream: StreamName,
  read: (from: number, to: number) => Promise<Item[]>,
  write: () => Promise<Item[]>,
): Promise<Followed> {
  let writersDone = false;
  let last = storage.streams.current(stream);
  const seen: Item[] = [];
  const wentBack: string[] = [];
  let reads = 0;
  const writing = write().finally(() => (writersDone = true));
  const finished = writing.then(
    () => undefined,
    () => undefined,
  );
  const reader = (async () => {
    for (;;) {
      const finalRead = writersDone;
      const to = storage.streams.current(stream);
      if (to < last) wentBack.push(`${last} -> ${to}`);
      seen.push(...(await read(last, to)));
      reads++;
      last = Math.max(last, to);
      if (finalRead) return;
      // Like /sync: wait for the stream to move on (or the writers to finish) before reading again.
      await Promise.race([storage.streams.waitFor(stream, last + 1), finished]);
    }
  })();
  // Both settled before anything is asserted, so a failed read is reported, not left unhandled.
  const [written, followed] = await Promise.allSettled([writing, reader]);
  if (written.status === "rejected") throw written.reason;
  if (followed.status === "rejected") throw followed.reason;
  assert.deepEqual(wentBack, [], `current(${stream}) went back`);
  return { committed: written.value, seen, reads };
}

/** The reader saw exactly the committed rows, each once, in increasing position order. */
function assertFollowed(storage: Storage, stream: StreamName, { committed, seen }: Followed): void {
  assert.equal(committed.length, WRITERS * PER_WRITER);
  const positions = committed.map((c) => c.position);
  assert.equal(new Set(positions).size, positions.length, `${stream}: a position was handed out twice`);
  const missed = committed.filter((c) => !seen.some((s) => s.key === c.key)).map((c) => `${c.key}@${c.position}`);
  assert.deepEqual(missed, [], `${stream}: the reader never saw these committed rows`);
  for (let i = 1; i < seen.length; i++) {
    assert.ok(seen[i]!.position > seen[i - 1]!.position, `${stream}: ${seen[i]!.key} read after ${seen[i - 1]!.key}, out of order`);
  }
  assert.deepEqual(seen, [...committed].sort((a, b) => a.position - b.position));
  assert.ok(storage.streams.current(stream) >= Math.max(...positions), `${stream}: current() stops short of a committed position`);
}

function contract(backend: Backend): void {
  describe(`storage streams under concurrency (${backend.name})`, () => {
    // One room: the room lock queues the writers. A room per writer: nothing does, and their
    // positions come back from the database in any order.
    for (const layout of ["one room", "a room per writer"] as const) {
      test(`room events, ${layout}: racing writers under the room lock, and a reader following current(events)`, async (t) => {
        const storage = await freshStorage(t, backend);
        await seedUser(storage, "@alice:test");
        const roomOf = (w: number) => (layout === "one room" ? "!room0:test" : `!room${w}:test`);
        const rooms = [...new Set(Array.from({ length: WRITERS }, (_, w) => roomOf(w)))];
        for (const room of rooms) await seedRoom(storage, room, "@alice:test");
        const followed = await follow(
          storage,
          "events",
          async (from, to) => {
            const found: Item[] = [];
            for (const room of await storage.rooms.roomsWithEventsBetween(rooms, from, to)) {
              const { events, limited } = await storage.rooms.eventsBetween(room, from, to, 10_000);
              assert.equal(limited, false);
              found.push(...events.map((e) => ({ key: e.eventId, position: e.streamOrdering })));
            }
            return found.sort((a, b) => a.position - b.position);
          },
          async () =>
            (
              await concurrently(WRITERS, async (w) => {
                const mine: Item[] = [];
                for (let i = 0; i < PER_WRITER; i++) {
                  const key = `$w${w}-${i}`;
                  mine.push({ key, position: await appendLocked(storage, message(roomOf(w), "@alice:test", key)) });
                }
                return mine;
              })
            ).flat(),
        );
        t.diagnostic(`${followed.reads} reads`);
        assertFollowed(storage, "events", followed);
        // Each writer's own events are in the order it sent them.
        for (let w = 0; w < WRITERS; w++) {
          const own = followed.seen.filter((s) => s.key.startsWith(`$w${w}-`)).map((s) => s.key);
          assert.deepEqual(own, Array.from({ length: PER_WRITER }, (_, i) => `$w${w}-${i}`));
        }
      });
    }

    test("account data: racing writers of different types, and a reader following current(account_data)", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, "@alice:test");
      const followed = await follow(
        storage,
        "account_data",
        async (from, to) =>
          (await storage.accountData.changes("@alice:test", from, to)).map((c) => ({ key: c.type, position: c.streamId })),
        async () =>
          (
            await concurrently(WRITERS, async (w) => {
              const mine: Item[] = [];
              for (let i = 0; i < PER_WRITER; i++) {
                const key = `org.test.w${w}.${i}`;
                mine.push({ key, position: await storage.accountData.set("@alice:test", null, key, { w, i }) });
              }
              return mine;
            })
          ).flat(),
      );
      t.diagnostic(`${followed.reads} reads`);
      assertFollowed(storage, "account_data", followed);
      assert.deepEqual(await storage.accountData.get("@alice:test", null, "org.test.w3.7"), { w: 3, i: 7 });
    });

    test("receipts: racing writers, and a reader following current(receipts)", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, "@alice:test");
      await seedRoom(storage, "!room:test", "@alice:test");
      const followed = await follow(
        storage,
        "receipts",
        async (from, to) =>
          (await storage.receipts.changes(["!room:test"], from, to)).map((r) => ({
            key: `${r.userId}|${r.threadId}`,
            position: r.streamId,
          })),
        async () =>
          (
            await concurrently(WRITERS, async (w) => {
              const mine: Item[] = [];
              for (let i = 0; i < PER_WRITER; i++) {
                const receipt = { roomId: "!room:test", userId: `@u${w}:test`, receiptType: "m.read", threadId: `t${i}`, eventId: "$e", ts: i };
                mine.push({ key: `@u${w}:test|t${i}`, position: await storage.receipts.set(receipt) });
              }
              return mine;
            })
          ).flat(),
      );
      t.diagnostic(`${followed.reads} reads`);
      assertFollowed(storage, "receipts", followed);
    });
  });
}

for (const backend of BACKENDS) contract(backend);

const postgres = BACKENDS.find((b) => b.name === "postgres");
describe("two processes on one PostgreSQL database", { skip: postgres ? false : "needs PostgreSQL (SWITCHBOARD_TEST_POSTGRES)" }, () => {
  test("a process that starts while another holds a position open reads no further than below it until it commits", { timeout: 60_000 }, async (t) => {
    const db = freshDatabase(t, postgres!);
    const first = await db.open();
    await seedUser(first, "@alice:test");
    await seedRoom(first, "!room:test", "@alice:test");
    const before = await appendLocked(first, message("!room:test", "@alice:test", "$before"));
    // A transaction on the first storage takes a position and stays open while the second starts.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let taken!: (position: number) => void;
    const position = new Promise<number>((resolve) => (taken = resolve));
    const holding = first.transaction(async (tx) => {
      const p = await tx.rooms.appendEvent(message("!room:test", "@alice:test", "$held"));
      taken(p);
      await held;
      return p;
    });
    const open = await position;
    assert.ok(open > before);

    let second: Storage | undefined;
    let later: Promise<number> | undefined;
    try {
      second = await db.open();
      // Its sequence has passed the open position; the first process's floor holds it back.
      assert.equal(second.streams.current("events"), open - 1, "the newcomer would hand out a token past an open position");
      // A write through the newcomer lands above the open position (no room lock: the open
      // transaction's event holds a key-share lock on the room's row).
      let laterDone = false;
      later = second.transaction((tx) => tx.rooms.appendEvent(message("!room:test", "@alice:test", "$later")));
      void later.finally(() => (laterDone = true)).catch(() => undefined);
      // Once that has committed, readers of the newcomer still stop below the open position.
      while (!(await first.rooms.getEvent("$later"))) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(second.streams.current("events"), open - 1);
      assert.equal(laterDone, false, "a write through the newcomer was reported done before the position below it ended");
    } finally {
      // Also after a failed assertion: the storages cannot close around an open transaction.
      release();
    }
    assert.equal(await holding, open);
    const after = await later;
    assert.ok(after > open);
    await second.streams.waitFor("events", after);
    // A reader of the newcomer from below the open position sees both, in order.
    const { events } = await second.rooms.eventsBetween("!room:test", open - 1, second.streams.current("events"), 10);
    assert.deepEqual(
      events.map((e) => e.eventId),
      ["$held", "$later"],
    );
  });
});
