/**
 * limitRows (storage/sql/executor.ts): a LIMIT written into a statement, so it must be a row
 * count and nothing else.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { limitRows } from "../src/storage/sql/executor.js";

test("limitRows writes a whole, non-negative count, and refuses anything else", () => {
  assert.equal(limitRows(10), "LIMIT 10");
  assert.equal(limitRows(0), "LIMIT 0");
  for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53]) {
    assert.throws(() => limitRows(bad), TypeError, String(bad));
  }
  assert.throws(() => limitRows("1; DROP TABLE events" as unknown as number), TypeError);
});
