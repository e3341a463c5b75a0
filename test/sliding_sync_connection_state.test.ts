/**
 * A connection's state knows whether a response changed it: an unchanged state keeps its
 * position without being serialised, so the tracking must never miss a change (a change undone
 * may still count). Checked against the serialised form, which is what the database holds.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ConnectionState } from "../src/services/sliding_sync/connection.js";
import type { RoomConfig } from "../src/services/sliding_sync/request.js";

const listConfig: RoomConfig = { timelineLimit: 1, requiredState: [["m.room.name", ""]] };

function saved(): ConnectionState {
  const s = new ConnectionState();
  s.markLive("!a:x", listConfig);
  s.markLive("!b:x", listConfig);
  s.markLive("!c:x", listConfig);
  s.markMissed("!c:x", "s5_0_0_0_0_0");
  s.addLazyMembers("!a:x", ["@u:x", "@v:x"], true);
  s.setCounts(new Map([["all", 3]]));
  return ConnectionState.parse(s.serialize());
}

test("a parsed state is unchanged; a copy of it too, and independent of it", () => {
  const s = saved();
  assert.equal(s.changed(), false);
  const c = s.copy();
  assert.equal(c.changed(), false);
  c.markMissed("!a:x", "s9_0_0_0_0_0");
  c.addLazyMembers("!b:x", ["@w:x"], false);
  assert.equal(c.changed(), true);
  assert.equal(s.changed(), false);
  assert.deepEqual(s.status("!a:x"), { kind: "live" });
  assert.deepEqual([...s.lazyMembersSent("!b:x")], []);
  assert.equal(new ConnectionState().changed(), true, "a new connection's state is always saved");
});

test("what a woken request repeats leaves the state unchanged", () => {
  const c = saved().copy();
  const before = c.serialize();
  // The same config again, as an equal object (combineConfigs makes a new one per response).
  c.markLive("!a:x", { timelineLimit: 1, requiredState: [["m.room.name", ""]] });
  c.markLive("!b:x", listConfig);
  c.markMissed("!c:x", "s7_0_0_0_0_0"); // already missed: keeps where it was left
  c.addLazyMembers("!a:x", ["@u:x"], false);
  c.addLazyMembers("!a:x", ["@v:x", "@u:x"], true);
  c.addLazyMembers("!b:x", [], true);
  c.forget("!nowhere:x");
  c.setCounts(new Map([["all", 3]]));
  assert.equal(c.changed(), false);
  assert.equal(c.serialize(), before);
});

test("every real change is noticed and serialised", () => {
  const cases: [string, (c: ConnectionState) => void][] = [
    ["a new room", (c) => c.markLive("!d:x", listConfig)],
    ["a missed room sent again", (c) => c.markLive("!c:x", listConfig)],
    ["another config", (c) => c.markLive("!a:x", { timelineLimit: 5, requiredState: [["m.room.name", ""]] })],
    ["a live room missing updates", (c) => c.markMissed("!b:x", "s8_0_0_0_0_0")],
    ["a forgotten room", (c) => c.forget("!b:x")],
    ["a new lazy member", (c) => c.addLazyMembers("!a:x", ["@w:x"], false)],
    ["lazy members reset to fewer", (c) => c.addLazyMembers("!a:x", ["@u:x"], true)],
    ["lazy members reset to none", (c) => c.addLazyMembers("!a:x", [], true)],
    ["another count", (c) => c.setCounts(new Map([["all", 4]]))],
    ["another list", (c) => c.setCounts(new Map([["all", 3], ["dms", 0]]))],
  ];
  for (const [what, change] of cases) {
    const c = saved().copy();
    const before = c.serialize();
    change(c);
    assert.equal(c.changed(), true, what);
    assert.notEqual(c.serialize(), before, what);
  }
});
