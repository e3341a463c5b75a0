/**
 * Stream positions with many writers (the idea of Synapse's MultiWriterIdGenerator, written
 * afresh). Every stream (events, account data, receipts, to-device, device lists) hands out
 * positions from a database sequence inside the writing transaction. Transactions commit in
 * any order, so the highest position in a table says nothing about what is committed below
 * it. Readers therefore use `current(stream)`: the highest position P such that every position
 * up to P has been committed or abandoned. It only moves forward, and never past a position
 * whose transaction is still open.
 *
 * This tracker knows the transactions of its own process. A second process announces its own
 * persisted positions through `advance` (the notifier carries them), which is how several
 * processes share one database.
 */

export const STREAMS = ["events", "account_data", "receipts", "to_device", "device_lists"] as const;
export type StreamName = (typeof STREAMS)[number];

export interface StreamPositions {
  /** Every position up to this one is committed (or abandoned) and visible to readers. */
  current(stream: StreamName): number;
  /** Resolves once `current(stream) >= position`. */
  waitFor(stream: StreamName, position: number): Promise<void>;
  /** Calls `listener` whenever a stream's current position moves forward. */
  onAdvance(listener: (stream: StreamName, position: number) => void): void;
}

interface StreamState {
  /**
   * The highest position known committed, here or elsewhere. Only commits raise it: SQLite's
   * sequence is a row, so a rolled-back transaction gives its positions back to be handed out
   * again, and a reader must not have been told they were passed.
   */
  top: number;
  /** Positions taken by transactions of this process that have not ended yet. */
  open: Set<number>;
  /** The last value `current` reported, so advances are announced once. */
  reported: number;
  /**
   * Requests for positions still in flight (`reserve`), each with `current` when it was sent:
   * what it will get lies above that, but is unknown here until the answer arrives.
   */
  reserved: Map<symbol, number>;
  waiters: { position: number; resolve: () => void }[];
}

export class StreamTracker implements StreamPositions {
  readonly #streams = new Map<StreamName, StreamState>();
  readonly #listeners: ((stream: StreamName, position: number) => void)[] = [];

  /** Starts each stream at the position its sequence has reached (everything below is committed). */
  constructor(start: Record<StreamName, number>) {
    for (const name of STREAMS) {
      const top = start[name];
      this.#streams.set(name, { top, open: new Set(), reported: top, reserved: new Map(), waiters: [] });
    }
  }

  #state(stream: StreamName): StreamState {
    return this.#streams.get(stream)!;
  }

  current(stream: StreamName): number {
    const s = this.#state(stream);
    let upTo = s.top;
    if (s.open.size > 0) {
      let lowest = Infinity;
      for (const p of s.open) if (p < lowest) lowest = p;
      // Below the lowest open position everything has ended: committed, or (PostgreSQL, whose
      // sequences never give a value twice) abandoned for good.
      upTo = lowest - 1;
    }
    // Positions the database handed out whose answer has not arrived yet are unknown here.
    for (const floor of s.reserved.values()) if (floor < upTo) upTo = floor;
    // Never below what was reported.
    return Math.max(upTo, s.reported);
  }

  waitFor(stream: StreamName, position: number): Promise<void> {
    if (this.current(stream) >= position) return Promise.resolve();
    return new Promise((resolve) => this.#state(stream).waiters.push({ position, resolve }));
  }

  onAdvance(listener: (stream: StreamName, position: number) => void): void {
    this.#listeners.push(listener);
  }

  /**
   * A transaction of this process is about to ask the database for positions: until the
   * returned function is called (once `opened` has them, or the request failed), `current`
   * stays at or below where it is now.
   */
  reserve(stream: StreamName): () => void {
    const s = this.#state(stream);
    const token = Symbol(stream);
    s.reserved.set(token, this.current(stream));
    return () => {
      s.reserved.delete(token);
      this.#announce(stream, s);
    };
  }

  /** A transaction of this process took these positions. */
  opened(stream: StreamName, positions: readonly number[]): void {
    const s = this.#state(stream);
    for (const p of positions) s.open.add(p);
  }

  /** The transaction that took these positions committed, or rolled back (`committed` false). */
  closed(stream: StreamName, positions: readonly number[], committed: boolean): void {
    const s = this.#state(stream);
    for (const p of positions) {
      s.open.delete(p);
      if (committed && p > s.top) s.top = p;
    }
    this.#announce(stream, s);
  }

  /** Another process has committed everything up to `position` on this stream. */
  advance(stream: StreamName, position: number): void {
    const s = this.#state(stream);
    if (position > s.top) s.top = position;
    this.#announce(stream, s);
  }

  #announce(stream: StreamName, s: StreamState): void {
    const now = this.current(stream);
    if (now <= s.reported) return;
    s.reported = now;
    const due = s.waiters.filter((w) => w.position <= now);
    if (due.length > 0) {
      s.waiters = s.waiters.filter((w) => w.position > now);
      for (const w of due) w.resolve();
    }
    for (const l of this.#listeners) l(stream, now);
  }
}

/** The positions one transaction took: they hold readers back until it ends. */
export class TakenPositions {
  readonly #taken: [StreamName, number[]][] = [];

  constructor(private readonly tracker: () => StreamTracker) {}

  /** Records positions just allocated in the transaction; returns them. */
  take(stream: StreamName, positions: number[]): number[] {
    this.tracker().opened(stream, positions);
    this.#taken.push([stream, positions]);
    return positions;
  }

  /** Commit or rollback: the positions stop holding readers back. */
  end(committed: boolean): void {
    for (const [stream, positions] of this.#taken) this.tracker().closed(stream, positions, committed);
  }

  /** Resolves once readers can see every position taken (per stream, the highest). */
  async visible(): Promise<void> {
    for (const [stream, positions] of this.#taken) await this.tracker().waitFor(stream, Math.max(...positions));
  }
}
