/**
 * Per-key queues whose waiting items are handled together: while one batch of a key is being
 * handled, later items of that key wait, and the next batch takes all of them at once. A lone
 * item starts at once, so nothing waits to be batched; under load, the sends into one room
 * share one transaction (one commit, one fsync) instead of queueing for one each.
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
      void this.#drain(key);
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
