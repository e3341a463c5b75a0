/**
 * Per-key queues whose waiting items are handled together: while one batch of a key is being
 * handled, later items of that key wait, and the next batch takes all of them at once. Under
 * load, the sends into one room share one transaction (one commit, one fsync) instead of
 * queueing for one each.
 *
 * A key's first batch starts at the end of the event loop's current turn (`setImmediate`), not
 * at once. A handler that never leaves the turn (SQLite's transactions are synchronous under
 * their promises) would otherwise finish each item before the next request is even parsed, and
 * nothing would ever be batched. Requests whose bytes arrived in the same turn join the batch;
 * a lone item waits only for the turn's other callbacks, not for a timer.
 */

/** What the handler decided for one item: its value, or the error its caller gets. */
export type ItemResult<R> = { value: R } | { error: unknown };

export class BatchQueue<T, R> {
  readonly #queues = new Map<string, { item: T; resolve: (r: R) => void; reject: (e: unknown) => void }[]>();

  /**
   * @param handle Handles one batch of a key, in order; returns one result per item. If it
   *   throws, every item of the batch gets that error.
   */
  constructor(
    private readonly handle: (key: string, items: T[]) => Promise<ItemResult<R>[]>,
    private readonly maxBatch = 100,
  ) {}

  run(key: string, item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const queue = this.#queues.get(key);
      if (queue) {
        queue.push({ item, resolve, reject });
        return;
      }
      this.#queues.set(key, [{ item, resolve, reject }]);
      setImmediate(() => void this.#drain(key));
    });
  }

  async #drain(key: string): Promise<void> {
    const queue = this.#queues.get(key)!;
    while (queue.length > 0) {
      const batch = queue.splice(0, this.maxBatch);
      try {
        const results = await this.handle(
          key,
          batch.map((b) => b.item),
        );
        batch.forEach((b, i) => {
          const r = results[i]!;
          if ("value" in r) b.resolve(r.value);
          else b.reject(r.error);
        });
      } catch (err) {
        for (const b of batch) b.reject(err);
      }
    }
    this.#queues.delete(key);
  }
}
