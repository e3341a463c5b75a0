/**
 * The queue behind group commit: items of one key that arrive in the same event-loop turn, from
 * separate callbacks (as requests parsed from different sockets do), are handled as one batch,
 * even when the handler finishes within the turn, as SQLite's synchronous transactions do.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BatchQueue, type ItemResult } from "../src/services/batch_queue.js";

/** A queue whose handler finishes without leaving the turn and records each batch it was given. */
function recording(fail?: (items: number[]) => boolean) {
  const batches: { key: string; items: number[] }[] = [];
  const queue = new BatchQueue<number, number>(async (key, items): Promise<ItemResult<number>[]> => {
    batches.push({ key, items });
    if (fail?.(items)) throw new Error(`batch ${items.join(",")} failed`);
    return items.map((i) => (i < 0 ? { error: new Error(`item ${i} refused`) } : { value: i * 10 }));
  });
  return { batches, queue };
}

/** Runs `submit(i)` for each i from its own callback, all in one turn of the loop. */
function fromSeparateCallbacks<T>(n: number, submit: (i: number) => Promise<T>): Promise<T[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => new Promise<T>((resolve, reject) => setImmediate(() => submit(i).then(resolve, reject)))));
}

describe("BatchQueue", () => {
  test("items from separate callbacks in one turn share one batch, and each gets its own answer", async () => {
    const { batches, queue } = recording();
    const answers = await fromSeparateCallbacks(5, (i) => queue.run("room", i + 1));
    assert.deepEqual(answers, [10, 20, 30, 40, 50]);
    assert.deepEqual(batches, [{ key: "room", items: [1, 2, 3, 4, 5] }]);
  });

  test("a lone item is handled without waiting for company", async () => {
    const { batches, queue } = recording();
    assert.equal(await queue.run("room", 7), 70);
    assert.deepEqual(batches, [{ key: "room", items: [7] }]);
  });

  test("items arriving while a batch is handled form the next batch, in their order", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const batches: number[][] = [];
    const queue = new BatchQueue<number, number>(async (_key, items) => {
      batches.push(items);
      if (batches.length === 1) await gate;
      return items.map((i) => ({ value: i }));
    });
    const first = queue.run("room", 1);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    const later = [queue.run("room", 2), queue.run("room", 3), queue.run("room", 4)];
    release();
    assert.deepEqual(await Promise.all([first, ...later]), [1, 2, 3, 4]);
    assert.deepEqual(batches, [[1], [2, 3, 4]]);
  });

  test("keys are batched apart", async () => {
    const { batches, queue } = recording();
    await fromSeparateCallbacks(4, (i) => queue.run(i % 2 === 0 ? "a" : "b", i));
    assert.deepEqual(
      batches.sort((x, y) => x.key.localeCompare(y.key)),
      [
        { key: "a", items: [0, 2] },
        { key: "b", items: [1, 3] },
      ],
    );
  });

  test("one refused item fails alone; a handler that throws fails its whole batch and the queue goes on", async () => {
    const { batches, queue } = recording((items) => items.includes(99));
    const results = await fromSeparateCallbacks(3, (i) => queue.run("room", [5, -1, 6][i]!).then((v) => ({ v }), (e: Error) => ({ e: e.message })));
    assert.deepEqual(results, [{ v: 50 }, { e: "item -1 refused" }, { v: 60 }]);
    const failed = await fromSeparateCallbacks(2, (i) => queue.run("room", [99, 8][i]!).then((v) => ({ v }), (e: Error) => ({ e: e.message })));
    assert.deepEqual(failed, [{ e: "batch 99,8 failed" }, { e: "batch 99,8 failed" }]);
    assert.equal(await queue.run("room", 3), 30);
    assert.deepEqual(
      batches.map((b) => b.items),
      [[5, -1, 6], [99, 8], [3]],
    );
  });
});
