/**
 * The storage sliding sync adds, on every backend (SQLite always, PostgreSQL with
 * SWITCHBOARD_TEST_POSTGRES): connection positions and their expiry, and the batched room
 * reads its lists and room results use.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { NewEvent } from "../src/storage/rooms.js";
import { appendLocked, BACKENDS, freshStorage, message, seedRoom, seedUser, type Backend } from "./helpers/storage.js";

const ALICE = "@alice:test";
const A = "!a:test";
const B = "!b:test";

const state = (roomId: string, eventId: string, type: string, stateKey: string, content: Record<string, unknown>): NewEvent => ({
  ...message(roomId, ALICE, eventId),
  type,
  stateKey,
  json: JSON.stringify({ event_id: eventId, type, state_key: stateKey, content }),
});

function contract(backend: Backend): void {
  describe(`sliding-sync storage (${backend.name})`, () => {
    test("positions: saved, loaded, the kept one and the new one survive, a new start clears, expiry and device deletion remove", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, ALICE);
      const s = storage.slidingSync;
      const key = { userId: ALICE, deviceId: "DEV", connId: "room-list" };
      await s.save(key, "p1", "{1}", null, 1000);
      assert.equal(await s.load(key, "p1", 0, 1000), "{1}");
      await s.save(key, "p2", "{2}", "p1", 2000);
      await s.save(key, "p3", "{3}", "p1", 3000);
      assert.equal(await s.load(key, "p1", 0, 3000), "{1}", "the position a request came with stays for a retry");
      assert.equal(await s.load(key, "p2", 0, 3000), undefined, "other positions go");
      assert.equal(await s.load(key, "p3", 0, 3000), "{3}");
      await s.keepOnly(key, "p3", 4000);
      assert.equal(await s.load(key, "p1", 0, 4000), undefined);
      assert.equal(await s.load({ ...key, connId: "other" }, "p3", 0, 4000), undefined, "positions belong to their connection");
      assert.equal(await s.load(key, "p3", 10 ** 12, 4000), undefined, "unused since before the cutoff: expired");
      await s.save(key, "p4", "{4}", null, 5000);
      assert.equal(await s.load(key, "p3", 0, 5000), undefined, "a new start clears the old positions");
      assert.equal(await s.expire(100 * 24 * 3600_000), 1);
      assert.equal(await s.load(key, "p4", 0, 5000), undefined);
      await s.save(key, "p5", "{5}", null, 6000);
      await storage.devices.deleteDevices(ALICE, ["DEV"]);
      assert.equal(await s.load(key, "p5", 0, 6000), undefined, "deleting the device deletes its connections");
    });

    test("latestOfTypes, currentStateMany, getEvents and forgottenRooms read many rooms at once", async (t) => {
      const storage = await freshStorage(t, backend);
      await seedUser(storage, ALICE);
      await seedRoom(storage, A, ALICE);
      await seedRoom(storage, B, ALICE);
      const createA = await appendLocked(storage, state(A, "$ca", "m.room.create", "", {}));
      await appendLocked(storage, state(B, "$cb", "m.room.create", "", { type: "m.space" }));
      const msgA = await appendLocked(storage, message(A, ALICE, "$ma"));
      await appendLocked(storage, state(A, "$name", "m.room.name", "", { name: "A" }));
      await appendLocked(storage, state(A, "$member", "m.room.member", ALICE, { membership: "join" }));
      const latest = await storage.rooms.latestOfTypes([[A, msgA], [B, 10 ** 9], ["!none:test", 10 ** 9]], ["m.room.message", "m.room.create"]);
      assert.equal(latest.get(A), msgA);
      assert.ok(latest.get(B)! > createA);
      assert.equal(latest.has("!none:test"), false);
      assert.equal((await storage.rooms.latestOfTypes([[A, createA]], ["m.room.message"])).has(A), false, "nothing of the types at or below the cap");
      const ids = (events: { eventId: string }[]) => events.map((e) => e.eventId).sort();
      assert.deepEqual(ids(await storage.rooms.currentStateMany([A, B], ["m.room.create"], [])), ["$ca", "$cb"]);
      assert.deepEqual(ids(await storage.rooms.currentStateMany([A, B], [], [["m.room.member", ALICE], ["m.room.name", ""]])), ["$member", "$name"]);
      assert.deepEqual(await storage.rooms.currentStateMany([A], [], []), []);
      assert.deepEqual(ids(await storage.rooms.getEvents(["$ma", "$name", "$missing"])), ["$ma", "$name"]);
      await storage.rooms.forgetRoom(ALICE, B);
      assert.deepEqual(await storage.rooms.forgottenRooms(ALICE), [B]);
    });
  });
}

for (const backend of BACKENDS) contract(backend);
