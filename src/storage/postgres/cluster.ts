/**
 * Several processes on one PostgreSQL database, held together by PostgreSQL alone: each process
 * keeps one extra connection that LISTENs on a channel, and tells the others, with NOTIFY, its
 * stream state and whatever the services publish (sync wake-ups, revoked tokens, typing). No
 * process leads; none needs to know the others in advance.
 *
 * Why stream positions stay exact (streams.ts): PostgreSQL delivers notifications in the order
 * their transactions committed. A process announces "busy on stream S above floor F" and waits
 * for that NOTIFY to commit before it asks S's sequence for a position. Any process that later
 * takes a higher position took it after that commit, so its "committed up to P" reaches every
 * reader after the "busy" that holds P's lower neighbours back.
 *
 * Liveness: every connection of a process carries `switchboard/<worker id>#<instance>` as its
 * application name (the instance part tells a restarted process from the one before it). A
 * process whose connections are all gone from `pg_stat_activity` is gone, and so are its
 * transactions: what it committed is readable, what it had open was rolled back.
 */
import pg from "pg";
import type { Cluster } from "../cluster.js";
import { DuplicateWorkerError } from "../errors.js";
import { STREAMS, type StreamName, type StreamTracker } from "../sql/streams.js";

const CHANNEL = "switchboard";
export const APPLICATION_PREFIX = "switchboard/";
/** NOTIFY takes payloads under 8000 bytes. */
const MAX_PAYLOAD = 7800;
/** How often the list of live processes is read. */
const LIVENESS_INTERVAL_MS = 1000;
/** How long a joining process waits for the others to tell it their state. */
const JOIN_TIMEOUT_MS = 5000;

/** One thing published: a stream state, a topic's body, or the protocol's own (hello, its answer, marker, bye). */
type Item =
  | ["s", StreamName, number, number | null]
  | ["t", string, unknown]
  | ["hello"]
  | ["welcome", string]
  | ["mark", number]
  | ["bye"];

interface Message {
  w: string;
  m: Item[];
}

/** What a process's connections call themselves. */
export function applicationNameOf(instance: string): string {
  return `${APPLICATION_PREFIX}${instance}`;
}

export class PostgresCluster implements Cluster {
  readonly #client: pg.Client;
  readonly #handlers = new Map<string, ((body: unknown, from: string) => void)[]>();
  readonly #goneListeners: ((workerId: string) => void)[] = [];
  #tracker: StreamTracker | undefined;
  /** Messages that arrived before the tracker existed, applied in order once it does. */
  #early: Message[] = [];
  readonly #workers = new Set<string>();

  // What to send: stream states are read when the batch goes out, so the latest state wins.
  #outbox: Item[] = [];
  readonly #dirty = new Set<StreamName>();
  #sending = false;
  /** Streams whose "busy" the others have (a floor at or below any position taken here since). */
  readonly #published = new Map<StreamName, number | null>();
  /** Streams whose state is in the batch being sent. */
  #inFlight = new Set<StreamName>();
  #flushWaiters: (() => void)[] = [];
  #markers = new Map<number, () => void>();
  #nextMarker = 0;
  /** Processes that have answered this one's hello (their state as it was then came with it). */
  readonly #heard = new Set<string>();
  #liveness: NodeJS.Timeout | undefined;
  #closed = false;
  #queries: Promise<unknown> = Promise.resolve();

  /** `<worker id>#<instance>`, from `instanceOf`. */
  readonly workerId: string;

  constructor(
    instance: string,
    clientConfig: pg.ClientConfig,
    private readonly onLost: (err: Error) => void,
  ) {
    this.workerId = instance;
    this.name = instance.slice(0, instance.lastIndexOf("#"));
    this.#client = new pg.Client({ ...clientConfig, application_name: this.applicationName });
    this.#client.on("notification", (n) => {
      if (n.channel === CHANNEL && n.payload) this.#receive(n.payload);
    });
    this.#client.on("error", (err) => this.#lost(err));
    this.#client.on("end", () => this.#lost(new Error("the PostgreSQL connection that carries notifications closed")));
  }

  /** The worker ID as configured (`--worker-id`). */
  readonly name: string;

  get applicationName(): string {
    return applicationNameOf(this.workerId);
  }

  /** Connects and listens; refuses a worker ID that a live process already uses. */
  async listen(): Promise<void> {
    await this.#client.connect();
    // Notifications are worth nothing after a crash: their commits need not wait for the disk.
    await this.#query("SET synchronous_commit = off");
    const live = await this.#liveWorkers();
    if (live.some((w) => w !== this.workerId && w.slice(0, w.lastIndexOf("#")) === this.name)) {
      this.#closed = true;
      await this.#client.end().catch(() => undefined);
      throw new DuplicateWorkerError(
        `another process on this database already runs as worker \`${this.name}\`; give each process its own --worker-id`,
      );
    }
    for (const w of live) if (w !== this.workerId) this.#workers.add(w);
    await this.#query(`LISTEN ${CHANNEL}`);
  }

  /**
   * Joins with stream positions loaded (after `listen`, so nothing announced in between is
   * missed): applies what arrived meanwhile, asks the others for their state and waits for it,
   * then starts the streams below whatever the others hold open (`StreamTracker.settle`).
   * A process that does not answer in time (hung) is not waited for: its floors stay unknown.
   */
  async join(tracker: StreamTracker): Promise<void> {
    this.#tracker = tracker;
    for (const m of this.#early) this.#apply(m);
    this.#early = [];
    tracker.onLocalChange((stream) => this.#streamChanged(stream));
    const expected = [...this.#workers];
    this.#queue(["hello"]);
    await this.#flush();
    const deadline = Date.now() + JOIN_TIMEOUT_MS;
    while (expected.some((w) => !this.#heard.has(w) && this.#workers.has(w)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    tracker.settle();
    this.#liveness = setInterval(() => void this.#checkLiveness(), LIVENESS_INTERVAL_MS);
    this.#liveness.unref();
  }

  publish(topic: string, body: unknown): void {
    // Alone, nobody listens. A process joining now learns what it needs from its hello's answers.
    if (this.#workers.size === 0) return;
    this.#queue(["t", topic, body]);
  }

  subscribe(topic: string, handler: (body: unknown, from: string) => void): void {
    const list = this.#handlers.get(topic) ?? [];
    list.push(handler);
    this.#handlers.set(topic, list);
  }

  workers(): readonly string[] {
    return [this.workerId, ...this.#workers];
  }

  onWorkerGone(listener: (workerId: string) => void): void {
    this.#goneListeners.push(listener);
  }

  /**
   * Resolves once the others know this process may hold positions on `stream` above its
   * current floor; called after `reserve` and before the sequence is asked.
   */
  async announced(stream: StreamName): Promise<void> {
    // Alone, nobody reads our positions: a process that joins waits for our answer to its hello,
    // which carries our state as it is then, before it reads anything.
    if (this.#workers.size === 0) return;
    const floor = this.#tracker?.localState(stream).floor;
    const published = this.#published.get(stream);
    // Floors only grow, so a "busy" already out still covers every position taken from now on,
    // unless a batch on its way says otherwise.
    const covered = published !== undefined && published !== null && floor !== null && floor !== undefined && published <= floor;
    if (covered && !this.#inFlight.has(stream)) return;
    this.#dirty.add(stream);
    await this.#flush();
  }

  /** Says goodbye (the others then need not wait to notice) and closes the connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#liveness) clearInterval(this.#liveness);
    for (const s of STREAMS) this.#dirty.add(s);
    this.#queue(["bye"]);
    await this.#flush().catch(() => undefined);
    this.#closed = true;
    await this.#client.end().catch(() => undefined);
  }

  /** One query at a time on the listening connection (pg would queue them, but will stop doing so). */
  #query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    const run = () => this.#client.query<R>(text, values);
    const result = this.#queries.then(run, run);
    this.#queries = result.catch(() => undefined);
    return result;
  }

  #lost(err: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#liveness) clearInterval(this.#liveness);
    this.onLost(err);
  }

  #streamChanged(stream: StreamName): void {
    if (this.#workers.size === 0) return;
    this.#dirty.add(stream);
    void this.#flush().catch(() => undefined);
  }

  #queue(item: Item): void {
    this.#outbox.push(item);
    void this.#flush().catch(() => undefined);
  }

  /** Resolves once everything queued before the call has been sent (one batch at a time, in order). */
  #flush(): Promise<void> {
    const done = new Promise<void>((resolve) => this.#flushWaiters.push(resolve));
    if (!this.#sending) {
      this.#sending = true;
      void this.#sendLoop();
    }
    return done;
  }

  async #sendLoop(): Promise<void> {
    // Let this turn of the event loop, and the I/O that is ready, add to the batch.
    await new Promise((resolve) => setImmediate(resolve));
    for (;;) {
      if (this.#flushWaiters.length === 0) {
        // In the same step as the check, so a flush after it starts a new loop.
        this.#sending = false;
        return;
      }
      const waiters = this.#flushWaiters;
      this.#flushWaiters = [];
      const items: Item[] = [];
      const states = new Map<StreamName, number | null>();
      for (const stream of this.#dirty) {
        const state = this.#tracker?.localState(stream);
        if (!state) continue;
        items.push(["s", stream, state.top, state.floor]);
        states.set(stream, state.floor);
      }
      this.#dirty.clear();
      items.push(...this.#outbox);
      this.#outbox = [];
      this.#inFlight = new Set(states.keys());
      try {
        if (items.length > 0 && !this.#closed) await this.#send(items);
        for (const [stream, floor] of states) this.#published.set(stream, floor);
      } catch (err) {
        // The connection is gone; the states were not sent.
        for (const stream of states.keys()) this.#published.delete(stream);
        if (!this.#closed) this.#lost(err instanceof Error ? err : new Error(String(err)));
      } finally {
        this.#inFlight = new Set();
      }
      for (const w of waiters) w();
    }
  }

  /** NOTIFY in batches under the payload limit, one after another so they arrive in order. */
  async #send(items: Item[]): Promise<void> {
    let batch: string[] = [];
    let size = 0;
    const payloads: string[] = [];
    const close = () => {
      if (batch.length > 0) payloads.push(`{"w":${JSON.stringify(this.workerId)},"m":[${batch.join(",")}]}`);
      batch = [];
      size = 0;
    };
    for (const item of items) {
      const text = JSON.stringify(item);
      if (text.length > MAX_PAYLOAD - 100) throw new Error(`a cluster message is too large (${text.length} bytes)`);
      if (size + text.length > MAX_PAYLOAD - 100) close();
      batch.push(text);
      size += text.length + 1;
    }
    close();
    for (const p of payloads) await this.#query("SELECT pg_notify($1, $2)", [CHANNEL, p]);
  }

  #receive(payload: string): void {
    let message: Message;
    try {
      message = JSON.parse(payload) as Message;
    } catch {
      return;
    }
    if (typeof message.w !== "string" || !Array.isArray(message.m)) return;
    if (!this.#tracker) this.#early.push(message);
    else this.#apply(message);
  }

  #apply({ w, m }: Message): void {
    if (w === this.workerId) {
      // Our own notifications come back too; only markers mean anything to us.
      for (const item of m) if (item[0] === "mark") this.#markers.get(item[1])?.();
      return;
    }
    const tracker = this.#tracker!;
    let bye = false;
    for (const item of m) {
      switch (item[0]) {
        case "s":
          tracker.remoteState(w, item[1], item[2], item[3]);
          break;
        case "t":
          for (const h of this.#handlers.get(item[1]) ?? []) h(item[2], w);
          break;
        case "hello":
          // A newcomer: tell it where we stand on every stream. The states are read when the
          // batch goes out, after this hello, and the welcome follows them in the same batch:
          // only then may the newcomer trust it knows our floors (any other message of ours
          // may have left before we saw its hello).
          for (const s of STREAMS) this.#dirty.add(s);
          this.#queue(["welcome", w]);
          break;
        case "welcome":
          if (item[1] === this.workerId) this.#heard.add(w);
          break;
        case "bye":
          bye = true;
          break;
      }
    }
    if (!bye) this.#workers.add(w);
    else void this.#gone(w);
  }

  async #liveWorkers(): Promise<string[]> {
    const rows = await this.#query<{ name: string }>(
      `SELECT DISTINCT application_name AS name FROM pg_stat_activity
       WHERE datname = current_database() AND position('switchboard/' in application_name) = 1 AND application_name LIKE '%#%'`,
    );
    return rows.rows.map((r) => r.name.slice(APPLICATION_PREFIX.length));
  }

  async #checkLiveness(): Promise<void> {
    if (this.#closed) return;
    try {
      const live = new Set(await this.#liveWorkers());
      for (const w of this.#workers) if (!live.has(w)) await this.#gone(w);
    } catch {
      // A failed query here is the connection failing; the error handler has it.
    }
  }

  /**
   * A process has gone. Its positions stop holding readers back, and whatever it committed
   * but never announced becomes readable: each sequence's value now bounds what it took.
   * The marker makes that safe: any "busy" committed before the sequences were read reaches
   * this process before the marker comes back.
   */
  async #gone(w: string): Promise<void> {
    if (!this.#workers.delete(w) || this.#closed) return;
    try {
      const tops = await this.#sequenceValues();
      const marker = this.#nextMarker++;
      const back = new Promise<void>((resolve) => this.#markers.set(marker, resolve));
      this.#queue(["mark", marker]);
      await back;
      this.#markers.delete(marker);
      this.#tracker?.dropWriter(w, tops);
    } catch {
      return;
    }
    for (const l of this.#goneListeners) l(w);
  }

  async #sequenceValues(): Promise<Partial<Record<StreamName, number>>> {
    const parts = STREAMS.map((s) => `SELECT '${s}' AS s, last_value, is_called FROM stream_${s}`).join(" UNION ALL ");
    const rows = await this.#query<{ s: StreamName; last_value: string; is_called: boolean }>(parts);
    const out: Partial<Record<StreamName, number>> = {};
    for (const r of rows.rows) out[r.s] = Number(r.last_value) - (r.is_called ? 0 : 1);
    return out;
  }
}
