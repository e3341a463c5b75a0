/**
 * One timer for the soonest due delayed event. Entries live in a binary
 * min-heap; a restart pushes a new entry and the old one is dropped when it
 * surfaces (the store, not the heap, is the truth about what is due).
 */
import type { Clock } from "../clock.js";

interface Entry {
  at: number;
  id: string;
}

/** Node's timers overflow past 2^31-1 ms; longer waits are taken in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class DueHeap {
  readonly #items: Entry[] = [];

  get size(): number {
    return this.#items.length;
  }

  push(entry: Entry): void {
    const a = this.#items;
    a.push(entry);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (a[parent]!.at <= a[i]!.at) break;
      [a[parent], a[i]] = [a[i]!, a[parent]!];
      i = parent;
    }
  }

  peek(): Entry | undefined {
    return this.#items[0];
  }

  pop(): Entry | undefined {
    const a = this.#items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let smallest = i;
        if (l < a.length && a[l]!.at < a[smallest]!.at) smallest = l;
        if (r < a.length && a[r]!.at < a[smallest]!.at) smallest = r;
        if (smallest === i) break;
        [a[smallest], a[i]] = [a[i]!, a[smallest]!];
        i = smallest;
      }
    }
    return top;
  }
}

export class DelayScheduler {
  readonly #heap = new DueHeap();
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Infinity;
  #running = false;
  #stopped = false;
  #current: Promise<void> | undefined;

  /** `fire` is called with every id whose time has come; it decides, with the store, whether it is really due. */
  constructor(
    private readonly clock: Clock,
    private readonly fire: (ids: string[]) => Promise<void>,
    private readonly onError: (err: unknown) => void = () => {},
  ) {}

  get pendingEntries(): number {
    return this.#heap.size;
  }

  add(id: string, at: number): void {
    if (this.#stopped) return;
    this.#heap.push({ id, at });
    if (at < this.#timerAt) this.#arm();
  }

  /** Stops the timer; resolves when a batch being fired has finished. */
  stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    return this.#current ?? Promise.resolve();
  }

  #arm(): void {
    if (this.#stopped || this.#running) return;
    const next = this.#heap.peek();
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
    if (!next) return;
    const wait = Math.min(Math.max(0, next.at - this.clock.now()), MAX_TIMER_MS);
    this.#timerAt = next.at;
    this.#timer = setTimeout(() => {
      this.#current = this.#run().finally(() => (this.#current = undefined));
    }, wait);
    // A pending delayed event must not keep a stopping process alive.
    this.#timer.unref();
  }

  async #run(): Promise<void> {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    this.#running = true;
    try {
      for (;;) {
        const now = this.clock.now();
        const due: string[] = [];
        while (due.length < 500 && (this.#heap.peek()?.at ?? Infinity) <= now) due.push(this.#heap.pop()!.id);
        if (due.length === 0) break;
        await this.fire([...new Set(due)]);
        if (this.#stopped) return;
      }
    } catch (err) {
      // `fire` handles its own failures; this only keeps a bug from becoming an unhandled rejection.
      this.onError(err);
    } finally {
      this.#running = false;
      this.#arm();
    }
  }
}
