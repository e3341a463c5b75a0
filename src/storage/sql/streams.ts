/**
 * Stream positions with many writers (the idea of Synapse's MultiWriterIdGenerator, written
 * afresh). Every stream (events, account data, receipts, to-device, device lists) hands out
 * positions from a database sequence inside the writing transaction. Transactions commit in
 * any order, so the highest position in a table says nothing about what is committed below
 * it. Readers therefore use `current(stream)`: the highest position P such that every position
 * up to P has been committed or abandoned. It only moves forward, and never past a position
 * whose transaction is still open.
 *
 * Several processes on one database (PostgreSQL) each run a tracker. A process tells the others
 * its state per stream (see `localState` and src/storage/postgres/cluster.ts): the highest
 * position it committed, and, while it has positions open, a floor below which it holds none.
 * A process announces that floor before it asks the sequence for a position, so a reader that
 * learns of a higher committed position has already learnt of every writer still busy below it.
 */

export const STREAMS = ["events", "account_data", "receipts", "to_device", "device_lists", "typing"] as const;
export type StreamName = (typeof STREAMS)[number];

export interface StreamPositions {
  /** Every position up to this one is committed (or abandoned) and visible to readers. */
  current(stream: StreamName): number;
  /** Resolves once `current(stream) >= position`, or when `signal` aborts. */
  waitFor(stream: StreamName, position: number, signal?: AbortSignal): Promise<void>;
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
   * Requests for positions still in flight (`reserve`), each with the highest position known
   * taken when it was sent: what it will get lies above that (a sequence only grows), but is
   * unknown here until the answer arrives.
   */
  reserved: Map<symbol, number>;
  /** Other processes with positions open on this stream, and the floor each announced. */
  remote: Map<string, number>;
  waiters: { position: number; resolve: () => void }[];
}

/** What this process tells the others about one stream. */
export interface LocalStreamState {
  /** The highest position known committed (here or elsewhere). */
  top: number;
  /** While positions are open or being allocated here: every one of them is above this. */
  floor: number | null;
}

export class StreamTracker implements StreamPositions {
  readonly #streams = new Map<StreamName, StreamState>();
  readonly #listeners: ((stream: StreamName, position: number) => void)[] = [];
  readonly #localListeners: ((stream: StreamName) => void)[] = [];

  /**
   * Starts each stream at the position its sequence has reached. Alone on the database, every
   * position up to it has ended. With other processes running, some of them may still be open:
   * `settle` then lowers the start once the others have said where they stand.
   */
  constructor(start: Record<StreamName, number>) {
    for (const name of STREAMS) {
      const top = start[name];
      this.#streams.set(name, { top, open: new Set(), reported: top, reserved: new Map(), remote: new Map(), waiters: [] });
    }
  }

  #state(stream: StreamName): StreamState {
    return this.#streams.get(stream)!;
  }

  current(stream: StreamName): number {
    const s = this.#state(stream);
    // Never below what was reported.
    return Math.max(this.#upTo(s), s.reported);
  }

  /** How far readers may go by what is known now: committed, and below every open position. */
  #upTo(s: StreamState): number {
    let upTo = Math.min(s.top, this.#localFloor(s) ?? Infinity);
    // Other processes' open positions hold readers back the same way.
    for (const floor of s.remote.values()) if (floor < upTo) upTo = floor;
    return upTo;
  }

  /**
   * Called once, when the other processes have answered this one's hello and before anything
   * here reads a position or serves a client: lowers each stream's start (the sequence's value,
   * which counts positions taken but not committed) to below every position the others still
   * hold open. Without this, a position another process took before this one read the sequence,
   * and committed later, would lie below a sync token this process had already handed out.
   *
   * Lowering `reported` is safe only now: `current` must never go back once someone has read it,
   * and nothing has (no client is served yet, no waiter or listener is registered). It is also
   * enough: a process announces its floor before it asks a sequence for a position, and its
   * answer to the hello carries its floor as it is then, so every position at or below the
   * sequence's value is either committed (then readable), rolled back (never handed out again),
   * or still open with its floor known here.
   */
  settle(): void {
    for (const name of STREAMS) {
      const s = this.#state(name);
      const upTo = this.#upTo(s);
      if (upTo < s.reported) s.reported = upTo;
    }
  }

  /** Below the lowest position open or being allocated here, everything here has ended. */
  #localFloor(s: StreamState): number | null {
    if (s.open.size === 0 && s.reserved.size === 0) return null;
    let floor = Infinity;
    // Below the lowest open position everything has ended: committed, or (PostgreSQL, whose
    // sequences never give a value twice) abandoned for good.
    for (const p of s.open) if (p - 1 < floor) floor = p - 1;
    // Positions the database handed out whose answer has not arrived yet are unknown here.
    for (const f of s.reserved.values()) if (f < floor) floor = f;
    return floor;
  }

  /** This process's state of a stream, as the other processes need it. */
  localState(stream: StreamName): LocalStreamState {
    const s = this.#state(stream);
    return { top: s.top, floor: this.#localFloor(s) };
  }

  /**
   * Calls `listener` whenever this process's own state of a stream (`localState`) rises: a
   * commit, a rollback, or an allocation that ended. (A falling floor is announced by the
   * allocating transaction itself before it asks for positions.)
   */
  onLocalChange(listener: (stream: StreamName) => void): void {
    this.#localListeners.push(listener);
  }

  /**
   * What another process announced: it committed up to `top`, and holds positions open above
   * `floor` (null: none). Its announcements arrive in the order it made them.
   */
  remoteState(writer: string, stream: StreamName, top: number, floor: number | null): void {
    const s = this.#state(stream);
    if (top > s.top) s.top = top;
    if (floor === null) s.remote.delete(writer);
    else s.remote.set(writer, floor);
    this.#announce(stream, s);
  }

  /**
   * A process is gone (its connections closed, so PostgreSQL ended its transactions): it holds
   * nothing back any more, and what it committed, up to `committedUpTo` per stream, is readable.
   */
  dropWriter(writer: string, committedUpTo: Partial<Record<StreamName, number>>): void {
    for (const name of STREAMS) {
      const s = this.#state(name);
      s.remote.delete(writer);
      const top = committedUpTo[name];
      if (top !== undefined && top > s.top) s.top = top;
      this.#announce(name, s);
    }
  }

  waitFor(stream: StreamName, position: number, signal?: AbortSignal): Promise<void> {
    if (this.current(stream) >= position || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const s = this.#state(stream);
      const waiter = { position, resolve };
      s.waiters.push(waiter);
      // Given up: the waiter goes, so a token from the future leaves nothing behind.
      signal?.addEventListener(
        "abort",
        () => {
          s.waiters = s.waiters.filter((w) => w !== waiter);
          resolve();
        },
        { once: true },
      );
    });
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
    // Every position known to be taken was handed out before this request: it gets a higher one.
    // No need to tell anyone yet: the caller announces this (PostgresCluster.announced) before it
    // asks the sequence, and only falling floors need announcing first.
    s.reserved.set(token, Math.max(s.top, s.reported));
    return () => {
      s.reserved.delete(token);
      // With positions now open, the commit that closes them tells the others; with none (the
      // request failed), this may have been the last thing holding them back.
      if (s.open.size === 0 && s.reserved.size === 0) this.#localChanged(stream);
      this.#announce(stream, s);
    };
  }

  /** A transaction of this process took these positions. */
  opened(stream: StreamName, positions: readonly number[]): void {
    const s = this.#state(stream);
    // Opening raises no floor another process waits on: the reservation still holds it.
    for (const p of positions) s.open.add(p);
  }

  /** The transaction that took these positions committed, or rolled back (`committed` false). */
  closed(stream: StreamName, positions: readonly number[], committed: boolean): void {
    const s = this.#state(stream);
    for (const p of positions) {
      s.open.delete(p);
      if (committed && p > s.top) s.top = p;
    }
    this.#localChanged(stream);
    this.#announce(stream, s);
  }

  #localChanged(stream: StreamName): void {
    for (const l of this.#localListeners) l(stream);
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
