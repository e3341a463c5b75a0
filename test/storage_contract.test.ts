/**
 * Storage contract: what every backend (helpers/storage.ts: SQLite always, PostgreSQL with
 * SWITCHBOARD_TEST_POSTGRES) must do the same, above all when requests race. Streams followed
 * by concurrent readers are in storage_concurrency.test.ts.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { NewDelayedEvent } from "../src/storage/delayed_events.js";
import type { UploadedKey } from "../src/storage/e2ee.js";
import { appendLocked, BACKENDS, concurrently, freshDatabase, freshStorage, message, seedRoom, seedUser, type Backend } from "./helpers/storage.js";

const ALICE = "@alice:test";
const BOB = "@bob:test";
const ROOM = "!room:test";
const OTK = "signed_curve25519";

const key = (keyId: string, value = keyId): UploadedKey => ({ algorithm: OTK, keyId, json: JSON.stringify({ key: value }) });

const delayed = (delayId: string): NewDelayedEvent => ({
  delayId,
  userId: ALICE,
  roomId: ROOM,
  type: "m.room.message",
  stateKey: null,
  content: { body: delayId },
  delayMs: 60_000,
  runningSince: 1_000,
  parentDelayId: null,
  stickyDurationMs: null,
});

/** The senders alive in the claim tests. */
const LIVE = ["w0", "w1", "w2", "w9"];

const session = (deviceId: string) => ({ deviceId, displayName: null, tokenHash: `hash-${deviceId}`, ip: null });

function contract(backend: Backend): void {
  describe(`storage contract (${backend.name})`, () => {
    test("a transaction that throws keeps nothing, and current() is not held back by the positions it took", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, ALICE);
      await seedRoom(storage, ROOM, ALICE);
      const before = { events: storage.streams.current("events"), accountData: storage.streams.current("account_data") };
      const abandoned = { events: 0, accountData: 0 };
      await assert.rejects(
        storage.transaction(async (tx) => {
          assert.equal(await tx.rooms.lockRoom(ROOM), true);
          abandoned.events = await tx.rooms.appendEvent(message(ROOM, ALICE, "$doomed"));
          abandoned.accountData = await tx.accountData.set(ALICE, null, "org.test.doomed", { doomed: true });
          throw new Error("boom");
        }),
        /boom/,
      );
      assert.equal(await storage.rooms.getEvent("$doomed"), undefined);
      assert.equal(await storage.rooms.getTip(ROOM), undefined);
      assert.equal(await storage.accountData.get(ALICE, null, "org.test.doomed"), undefined);

      // Nothing holds readers back at the abandoned positions, and nothing is there to read. Only
      // commits raise current(): a sequence may give rolled-back positions back (SQLite's is a
      // row in the transaction), so no reader may have been told it passed them.
      const eventsReadTo = storage.streams.current("events");
      const accountDataReadTo = storage.streams.current("account_data");
      assert.equal(eventsReadTo, before.events, "current(events) after the rollback");
      assert.equal(accountDataReadTo, before.accountData, "current(account_data) after the rollback");
      assert.deepEqual((await storage.rooms.eventsBetween(ROOM, 0, eventsReadTo, 100)).events, []);
      assert.deepEqual(await storage.accountData.changes(ALICE, 0, accountDataReadTo), []);

      // A reader that has read up to there sees what is written next.
      const later = await appendLocked(storage, message(ROOM, ALICE, "$later"));
      assert.ok(later > eventsReadTo, `the next event took position ${later}, which a reader at ${eventsReadTo} has passed`);
      const next = await storage.rooms.eventsBetween(ROOM, eventsReadTo, storage.streams.current("events"), 100);
      assert.deepEqual(
        next.events.map((e) => e.eventId),
        ["$later"],
      );
      await storage.accountData.set(ALICE, null, "org.test.later", {});
      const changes = await storage.accountData.changes(ALICE, accountDataReadTo, storage.streams.current("account_data"));
      assert.deepEqual(
        changes.map((c) => c.type),
        ["org.test.later"],
      );
    });

    test("store calls inside a transaction join it: nothing is visible before it commits, all of it after", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, ALICE);
      await seedRoom(storage, ROOM, ALICE);
      const taken = await storage.transaction(async (tx) => {
        assert.equal(await tx.rooms.lockRoom(ROOM), true);
        const event = await tx.rooms.appendEvent(message(ROOM, ALICE, "$a"));
        const accountData = await tx.accountData.set(ALICE, null, "org.test.a", { a: 1 });
        // Had either committed on its own, readers would already be let up to it.
        assert.ok(storage.streams.current("events") < event);
        assert.ok(storage.streams.current("account_data") < accountData);
        return { event, accountData };
      });
      // Resolved only once readers can see both writes.
      assert.ok(storage.streams.current("events") >= taken.event);
      assert.ok(storage.streams.current("account_data") >= taken.accountData);
      assert.equal((await storage.rooms.getEvent("$a"))?.streamOrdering, taken.event);
      assert.deepEqual(await storage.accountData.get(ALICE, null, "org.test.a"), { a: 1 });
      assert.equal(await storage.transaction(async (tx) => tx.rooms.lockRoom("!nowhere:test")), false);
    });

    test("racing one-time key claims hand out each key once, then the fallback key or nothing", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, ALICE, "WITH_FALLBACK");
      await storage.devices.createSession(ALICE, session("NO_FALLBACK"), 1);
      const n = 10;
      const keys = Array.from({ length: n }, (_, i) => key(`k${String(i).padStart(2, "0")}`));
      for (const device of ["WITH_FALLBACK", "NO_FALLBACK"]) assert.equal(await storage.deviceKeys.addOneTimeKeys(ALICE, device, keys), undefined);
      await storage.deviceKeys.setFallbackKey(ALICE, "WITH_FALLBACK", { algorithm: OTK, keyId: "fb", json: '{"key":"fallback"}' });

      const [withFallback, without] = await Promise.all(
        ["WITH_FALLBACK", "NO_FALLBACK"].map((device) => concurrently(n + 3, () => storage.deviceKeys.claimKey(ALICE, device, OTK))),
      );
      const uploaded = new Map(keys.map((k) => [`${OTK}:${k.keyId}`, k.json]));
      for (const claims of [withFallback!, without!]) {
        const oneTime = claims.filter((c) => c !== undefined && c.id !== `${OTK}:fb`);
        assert.deepEqual(oneTime.map((c) => c!.id).sort(), [...uploaded.keys()], "each one-time key exactly once");
        for (const c of oneTime) assert.equal(c!.json, uploaded.get(c!.id));
      }
      assert.deepEqual(
        withFallback!.filter((c) => c?.id === `${OTK}:fb`),
        Array.from({ length: 3 }, () => ({ id: `${OTK}:fb`, json: '{"key":"fallback"}' })),
      );
      assert.equal(without!.filter((c) => c === undefined).length, 3);
      for (const device of ["WITH_FALLBACK", "NO_FALLBACK"]) assert.deepEqual(await storage.deviceKeys.oneTimeKeyCounts(ALICE, device), {});
      assert.deepEqual((await storage.deviceKeys.keyCounts(ALICE, "WITH_FALLBACK")).unusedFallbackTypes, []);
    });

    test("an upload of many keys of two algorithms keeps each key exactly as sent", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, ALICE);
      const odd = (i: number) => JSON.stringify({ key: `k${i} "quoted" \\ é ☎`, signatures: { [ALICE]: { "ed25519:DEV": `s${i}` } } });
      const keys: UploadedKey[] = Array.from({ length: 100 }, (_, i) => ({ algorithm: i % 2 ? OTK : "curve25519", keyId: `K${String(i).padStart(3, "0")}`, json: odd(i) }));
      assert.equal(await storage.deviceKeys.addOneTimeKeys(ALICE, "DEV", keys), undefined);
      assert.deepEqual(await storage.deviceKeys.oneTimeKeyCounts(ALICE, "DEV"), { [OTK]: 50, curve25519: 50 });
      assert.deepEqual(await storage.deviceKeys.claimKey(ALICE, "DEV", OTK), { id: `${OTK}:K001`, json: odd(1) });
      assert.deepEqual(await storage.deviceKeys.claimKey(ALICE, "DEV", "curve25519"), { id: "curve25519:K000", json: odd(0) });
    });

    test("an upload that reuses a key ID for a different key stores none of its keys", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, ALICE);
      assert.equal(await storage.deviceKeys.addOneTimeKeys(ALICE, "DEV", [key("a"), key("b")]), undefined);
      // The same keys again (a retried upload) are fine and change nothing.
      assert.equal(await storage.deviceKeys.addOneTimeKeys(ALICE, "DEV", [key("a"), key("b")]), undefined);
      assert.equal(await storage.deviceKeys.addOneTimeKeys(ALICE, "DEV", [key("c"), key("a", "other")]), `${OTK}:a`);
      assert.deepEqual(await storage.deviceKeys.oneTimeKeyCounts(ALICE, "DEV"), { [OTK]: 2 });
      // Of several clashes, the first in the upload's order is named.
      assert.equal(await storage.deviceKeys.addOneTimeKeys(ALICE, "DEV", [key("c"), key("b", "other"), key("a", "other")]), `${OTK}:b`);
      assert.deepEqual(await storage.deviceKeys.oneTimeKeyCounts(ALICE, "DEV"), { [OTK]: 2 });
      // New keys beside one already stored: the new ones are added.
      assert.equal(await storage.deviceKeys.addOneTimeKeys(ALICE, "DEV", [key("b"), key("c")]), undefined);
      const claimed = [];
      for (let i = 0; i < 4; i++) claimed.push(await storage.deviceKeys.claimKey(ALICE, "DEV", OTK));
      assert.deepEqual(claimed, [
        { id: `${OTK}:a`, json: key("a").json },
        { id: `${OTK}:b`, json: key("b").json },
        { id: `${OTK}:c`, json: key("c").json },
        undefined,
      ]);
    });

    test("a delayed event cancelled and claimed for sending at once goes one way only", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, ALICE);
      const ids = Array.from({ length: 30 }, (_, i) => `d${i}`);
      for (const id of ids) assert.equal(await storage.delayedEvents.schedule(delayed(id), 1_000), true);
      // Half the races start with the cancel, half with the claim.
      const outcomes = await Promise.all(
        ids.map(async (id, i) => {
          const cancel = () => storage.delayedEvents.cancel(id, "action", 2_000);
          const claim = () => storage.delayedEvents.claimForSending(id, { worker: "w1", leaseUntil: 12_000 });
          const [cancelled, claimed] = i % 2 === 0 ? await Promise.all([cancel(), claim()]) : (await Promise.all([claim(), cancel()])).reverse();
          return { id, cancelled: cancelled!, claimed: claimed! };
        }),
      );
      for (const o of outcomes) {
        assert.notEqual(o.cancelled, o.claimed, `${o.id}: cancelled ${o.cancelled}, claimed ${o.claimed}`);
        const record = await storage.delayedEvents.get(o.id);
        if (o.cancelled) assert.deepEqual([record?.status, record?.outcome, record?.reason], ["finalised", "cancel", "action"]);
        else assert.deepEqual([record?.status, record?.outcome], ["sending", null]);
      }
      assert.deepEqual(await storage.delayedEvents.scheduledOf(ALICE), []);
    });

    test("due delayed events claimed by several senders at once: each goes to exactly one, and a lapsed claim is taken over", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, ALICE);
      const ids = Array.from({ length: 40 }, (_, i) => `due${i}`);
      for (const id of ids) assert.equal(await storage.delayedEvents.schedule(delayed(id), 1_000), true);
      const due = 1_000 + 60_000 + 1; // every one is due (scheduled at 1000 with a 60 s delay)
      const batches = await concurrently(8, (i) => storage.delayedEvents.claimDue(due, { worker: `w${i % 3}`, leaseUntil: due + 10_000 }, 7, LIVE));
      const claimed = batches.flat().map((r) => r.delayId);
      // Whatever the batches missed (rows skipped while another statement held them) is claimed next.
      const rest = await storage.delayedEvents.claimDue(due, { worker: "w9", leaseUntil: due + 10_000 }, 100, LIVE);
      const all = [...claimed, ...rest.map((r) => r.delayId)];
      assert.equal(new Set(all).size, all.length, "no event was claimed twice");
      assert.deepEqual([...all].sort(), [...ids].sort());
      // Within the lease nobody else gets them; once it has run out, the next claim does.
      assert.deepEqual(await storage.delayedEvents.claimDue(due + 5_000, { worker: "w1", leaseUntil: due + 20_000 }, 100, LIVE), []);
      const taken = await storage.delayedEvents.claimDue(due + 10_000, { worker: "w1", leaseUntil: due + 20_000 }, 100, LIVE);
      assert.equal(taken.length, ids.length);
      // A claimed event is next looked at when its claim runs out, or at once when its sender is gone.
      const pending = await storage.delayedEvents.pending(LIVE);
      assert.equal(pending.length, ids.length);
      for (const p of pending) assert.equal(p.wakeAt, due + 20_000);
      for (const p of await storage.delayedEvents.pending(["w2"])) assert.equal(p.wakeAt, 0);
      const fromGone = await storage.delayedEvents.claimDue(due + 10_001, { worker: "w2", leaseUntil: due + 30_000 }, 100, ["w2"]);
      assert.equal(fromGone.length, ids.length, "the claims of a process that is gone are taken at once");
    });

    test("schedules racing past the per-user limit: exactly the limit succeed", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, ALICE);
      const max = 5;
      const results = await concurrently(max + 5, (i) => storage.delayedEvents.schedule(delayed(`d${i}`), max));
      assert.equal(results.filter((ok) => ok).length, max);
      assert.equal((await storage.delayedEvents.scheduledOf(ALICE)).length, max);
    });

    test("everJoined: only a join of that user, in that room, at or before the position", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, ALICE);
      await seedUser(storage, BOB);
      const other = "!other:test";
      await seedRoom(storage, ROOM, ALICE);
      await seedRoom(storage, other, ALICE);
      const member = (roomId: string, eventId: string, membership: string) => ({
        ...message(roomId, ALICE, eventId),
        type: "m.room.member",
        stateKey: BOB,
        membership,
      });
      const invited = await appendLocked(storage, member(ROOM, "$invite", "invite"));
      const joinedElsewhere = await appendLocked(storage, member(other, "$other-join", "join"));
      const joined = await appendLocked(storage, member(ROOM, "$join", "join"));
      const left = await appendLocked(storage, member(ROOM, "$leave", "leave"));
      assert.equal(await storage.rooms.everJoined(BOB, ROOM, invited), false);
      assert.equal(await storage.rooms.everJoined(BOB, ROOM, joinedElsewhere), false, "a join of another room");
      assert.equal(await storage.rooms.everJoined(BOB, other, joinedElsewhere), true);
      assert.equal(await storage.rooms.everJoined(BOB, ROOM, joined), true);
      assert.equal(await storage.rooms.everJoined(BOB, ROOM, left), true, "a leave does not undo having joined");
      assert.equal(await storage.rooms.everJoined(ALICE, ROOM, left), false, "another user's joins");
    });

    test("filters created at once for one user get distinct IDs", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, ALICE);
      const ids = await concurrently(20, (i) => storage.filters.create(ALICE, JSON.stringify({ n: i })));
      assert.equal(new Set(ids).size, ids.length, `IDs handed out twice: ${ids.join(",")}`);
      for (const [i, id] of ids.entries()) assert.equal(await storage.filters.get(ALICE, id), JSON.stringify({ n: i }));
    });

    test("to-device: a transaction sent twice at once is stored once; positions increase; acknowledging deletes", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, ALICE);
      await seedUser(storage, BOB, "B1");
      const send = (txnId: string, count: number) =>
        storage.toDevice.add(
          [
            ...Array.from({ length: count }, (_, i) => ({ userId: BOB, deviceId: "B1", sender: ALICE, type: "m.test", content: JSON.stringify({ txnId, i }) })),
            { userId: BOB, deviceId: "GONE", sender: ALICE, type: "m.test", content: "{}" },
          ],
          { userId: ALICE, deviceId: "DEV", txnId },
        );
      // Ten transactions, each sent twice at once.
      const added = await concurrently(20, (i) => send(`t${i % 10}`, 2));
      for (let i = 0; i < 10; i++) assert.notEqual(added[i], added[i + 10], `t${i} stored ${added[i] ? "twice" : "never"}`);

      const all = await storage.toDevice.acknowledgeAndRead(BOB, "B1", 0, storage.streams.current("to_device"), 100);
      assert.equal(all.length, 20, "two messages per transaction, none for the unknown device");
      for (let i = 1; i < all.length; i++) assert.ok(all[i]!.streamId > all[i - 1]!.streamId);
      for (let i = 0; i < 10; i++) assert.equal(all.filter((m) => m.content.txnId === `t${i}`).length, 2);

      const upTo = all[11]!.streamId;
      const rest = await storage.toDevice.acknowledgeAndRead(BOB, "B1", upTo, storage.streams.current("to_device"), 100);
      assert.deepEqual(rest, all.slice(12));
      // What was acknowledged is gone: reading from the start again finds only the rest.
      assert.deepEqual(await storage.toDevice.acknowledgeAndRead(BOB, "B1", 0, storage.streams.current("to_device"), 100), all.slice(12));
    });

    test("deleting a device that had keys is a device-list change; one without keys is not", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, ALICE, "KEYED");
      await storage.devices.createSession(ALICE, session("BARE"), 1);
      assert.equal(await storage.deviceKeys.setDeviceKeys(ALICE, "KEYED", '{"keys":{}}'), true);
      const before = storage.streams.current("device_lists");

      assert.deepEqual(await storage.devices.deleteDevices(ALICE, ["BARE"]), ["hash-BARE"]);
      assert.equal(storage.streams.current("device_lists"), before);

      assert.deepEqual(await storage.devices.deleteDevices(ALICE, ["KEYED"]), [`hash-${ALICE}-KEYED`]);
      const after = storage.streams.current("device_lists");
      assert.ok(after > before, "current(device_lists) covers the change");
      assert.deepEqual(await storage.deviceKeys.deviceListChanges([ALICE, BOB], before, after), [ALICE]);
      assert.deepEqual(await storage.deviceKeys.deviceKeys(ALICE), []);
    });

    test("opening the same database again, while it is open and after, finds it as it was", async (t) => {
      const db = freshDatabase(t, backend);
      const first = await db.open();
      await seedUser(first, ALICE);
      await seedRoom(first, ROOM, ALICE);
      const one = await appendLocked(first, message(ROOM, ALICE, "$one"));
      await first.accountData.set(ALICE, null, "org.test", { v: 1 });

      const second = await db.open();
      assert.equal((await second.accounts.getUser(ALICE))?.userId, ALICE);
      assert.equal(second.streams.current("events"), one);
      const two = await appendLocked(second, message(ROOM, ALICE, "$two"));
      assert.ok(two > one);
      assert.equal((await first.rooms.getEvent("$two"))?.streamOrdering, two);
      await first.close();
      await second.close();

      const third = await db.open();
      assert.equal(third.streams.current("events"), two);
      const { events } = await third.rooms.eventsBetween(ROOM, 0, two, 10);
      assert.deepEqual(
        events.map((e) => e.eventId),
        ["$one", "$two"],
      );
      assert.deepEqual(await third.accountData.get(ALICE, null, "org.test"), { v: 1 });
      assert.ok((await third.transaction((tx) => tx.rooms.appendEvent(message(ROOM, ALICE, "$three")))) > two);
    });
  });
}

for (const backend of BACKENDS) contract(backend);
