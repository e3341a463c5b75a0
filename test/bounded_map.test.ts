/**
 * The bounded caches' eviction (services/bounded_map.ts): oldest first, never past the limit,
 * a tenth at a time, so that a full cache does not walk the holes of its deleted entries on
 * every insert.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { BoundedMap, trimOldest } from "../src/services/bounded_map.js";

test("trimOldest leaves a collection within its limit alone", () => {
  const map = new Map([["a", 1], ["b", 2]]);
  trimOldest(map, 2);
  assert.deepEqual([...map.keys()], ["a", "b"]);
});

test("trimOldest forgets the oldest entries, down to nine tenths of the limit, and says which", () => {
  const set = new Set<number>();
  const forgotten: number[] = [];
  for (let i = 0; i < 101; i++) {
    set.add(i);
    trimOldest(set, 100, (k) => forgotten.push(k));
  }
  // The 101st entry took it past 100: the 11 oldest went, leaving 90, the newest kept.
  assert.deepEqual(forgotten, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(set.size, 90);
  assert.ok(set.has(100) && set.has(11) && !set.has(10));
  // Nothing more goes until it passes the limit again.
  for (let i = 101; i < 111; i++) trimOldest(set.add(i), 100);
  assert.equal(set.size, 100);
});

test("a cache kept by trimOldest never holds more than its limit, however many go through it", () => {
  const map = new Map<number, number>();
  for (let i = 0; i < 50_000; i++) {
    map.set(i, i);
    trimOldest(map, 1_000);
    assert.ok(map.size <= 1_000);
  }
  // The newest are the ones kept.
  assert.ok(map.has(49_999) && map.has(49_100) && !map.has(48_000));
});

test("BoundedMap keeps the most recently used entries", () => {
  const cache = new BoundedMap<string, number>(10);
  for (let i = 0; i < 10; i++) cache.set(`k${i}`, i);
  // Reading k0 makes it the most recent, so the next eviction spares it.
  assert.equal(cache.get("k0"), 0);
  cache.set("k10", 10);
  assert.equal(cache.size, 9);
  assert.equal(cache.get("k0"), 0);
  assert.equal(cache.get("k1"), undefined);
  assert.equal(cache.get("k10"), 10);
});
