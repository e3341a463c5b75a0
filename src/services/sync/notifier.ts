/**
 * Wakes long-polling `/sync` requests when something they care about changes, and tells
 * every access-token cache which tokens were revoked: in this process (`InProcessNotifier`),
 * and in every other process on the database (`ClusterNotifier`).
 */
import type { Cluster } from "../../storage/cluster.js";
import { STREAMS, type StreamName, type StreamPositions } from "../../storage/sql/streams.js";

export interface Interest {
  userId: string;
  roomIds: Iterable<string>;
}

export interface Notifier {
  /** A counter that grows with every notification; read it before computing a sync. */
  version(): number;
  /** Something changed in these rooms or for these users. */
  notify(change: { roomIds?: Iterable<string>; userIds?: Iterable<string> }): void;
  /**
   * Resolves true as soon as a notification relevant to `interest` happens
   * after `sinceVersion` (at once if one already has), false on timeout or abort.
   */
  wait(interest: Interest, sinceVersion: number, timeoutMs: number, signal?: AbortSignal): Promise<boolean>;
  /**
   * These access tokens (SHA-256 hashes) were deleted from storage: every process drops them
   * from its token cache. Published after the deletion commits, so a process that looks a
   * token up again finds it gone. Resolves once every process has dropped them (in-process,
   * listeners run before this returns).
   */
  revokeTokens(tokenHashes: Iterable<string>): void | Promise<void>;
  /** Calls `listener` with every revocation published from now on; returns what unsubscribes it. */
  onTokensRevoked(listener: (tokenHashes: readonly string[]) => void): () => void;
}

interface Waiter {
  interest: { userId: string; roomIds: Set<string> };
  wake: () => void;
}

export class InProcessNotifier implements Notifier {
  #version = 0;
  readonly #lastForRoom = new Map<string, number>();
  readonly #lastForUser = new Map<string, number>();
  readonly #waiters = new Set<Waiter>();
  readonly #revocationListeners = new Set<(tokenHashes: readonly string[]) => void>();

  version(): number {
    return this.#version;
  }

  notify(change: { roomIds?: Iterable<string>; userIds?: Iterable<string> }): void {
    const v = ++this.#version;
    const rooms = new Set(change.roomIds ?? []);
    const users = new Set(change.userIds ?? []);
    for (const r of rooms) this.#lastForRoom.set(r, v);
    for (const u of users) this.#lastForUser.set(u, v);
    for (const w of this.#waiters) {
      if (users.has(w.interest.userId) || [...rooms].some((r) => w.interest.roomIds.has(r))) w.wake();
    }
  }

  revokeTokens(tokenHashes: Iterable<string>): void {
    const hashes = [...tokenHashes];
    if (hashes.length === 0) return;
    // Synchronous, so that the request that revoked a token answers only once no cache here trusts it.
    for (const listener of this.#revocationListeners) listener(hashes);
  }

  onTokensRevoked(listener: (tokenHashes: readonly string[]) => void): () => void {
    this.#revocationListeners.add(listener);
    return () => this.#revocationListeners.delete(listener);
  }

  #changedSince(interest: { userId: string; roomIds: Set<string> }, since: number): boolean {
    if ((this.#lastForUser.get(interest.userId) ?? 0) > since) return true;
    for (const r of interest.roomIds) if ((this.#lastForRoom.get(r) ?? 0) > since) return true;
    return false;
  }

  wait(interest: Interest, sinceVersion: number, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    const own = { userId: interest.userId, roomIds: new Set(interest.roomIds) };
    if (this.#changedSince(own, sinceVersion)) return Promise.resolve(true);
    if (timeoutMs <= 0 || signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const finish = (woken: boolean) => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        signal?.removeEventListener("abort", onAbort);
        resolve(woken);
      };
      const waiter: Waiter = { interest: own, wake: () => finish(true) };
      const onAbort = () => finish(false);
      const timer = setTimeout(() => finish(false), timeoutMs);
      this.#waiters.add(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}

/** Room and user IDs per cluster message: well under NOTIFY's 8000-byte payload. */
const IDS_PER_MESSAGE = 40;
/** A wake-up whose positions never arrive here (its sender died first) still wakes after this. */
const REMOTE_WAKE_MAX_WAIT_MS = 10_000;

interface RemoteChange {
  /** The sender's positions when it notified: the change is readable here once these are. */
  at: Partial<Record<StreamName, number>>;
  r: string[];
  u: string[];
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === "string");

/** A revocation waits this long at most for a process that neither answers nor is seen to die. */
const REVOKE_ACK_MAX_WAIT_MS = 5000;

/**
 * The notifier of a process that shares its database with others: what happens here is told
 * to them through the cluster, and what they tell is woken here. A remote wake-up waits until
 * this process's stream positions have reached the sender's, so the sync it wakes finds the change.
 */
export class ClusterNotifier implements Notifier {
  /** Revocations sent, and the processes that have not yet said they dropped the tokens. */
  readonly #awaitingAcks = new Map<string, { from: Set<string>; done: () => void }>();
  #nextRevocation = 0;

  constructor(
    private readonly local: InProcessNotifier,
    private readonly cluster: Cluster,
    private readonly streams: StreamPositions,
  ) {
    cluster.subscribe("notify", (body) => {
      const b = body as Partial<RemoteChange> | null;
      if (b && typeof b.at === "object" && b.at !== null && isStringArray(b.r) && isStringArray(b.u)) void this.#remote(b as RemoteChange);
    });
    cluster.subscribe("revoke", (body, from) => {
      const b = body as { id?: unknown; h?: unknown } | null;
      if (!b || typeof b.id !== "string" || !isStringArray(b.h)) return;
      local.revokeTokens(b.h);
      cluster.publish("revoke-ack", { id: b.id, to: from });
    });
    cluster.subscribe("revoke-ack", (body, from) => {
      const b = body as { id?: unknown; to?: unknown } | null;
      if (b?.to === cluster.workerId && typeof b.id === "string") this.#acked(b.id, from);
    });
    cluster.onWorkerGone((worker) => {
      for (const id of [...this.#awaitingAcks.keys()]) this.#acked(id, worker);
    });
  }

  #acked(id: string, worker: string): void {
    const waiting = this.#awaitingAcks.get(id);
    if (!waiting) return;
    waiting.from.delete(worker);
    if (waiting.from.size === 0) waiting.done();
  }

  version(): number {
    return this.local.version();
  }

  notify(change: { roomIds?: Iterable<string>; userIds?: Iterable<string> }): void {
    const roomIds = [...(change.roomIds ?? [])];
    const userIds = [...(change.userIds ?? [])];
    this.local.notify({ roomIds, userIds });
    if (this.cluster.workers().length < 2) return;
    const at: Partial<Record<StreamName, number>> = {};
    for (const s of STREAMS) at[s] = this.streams.current(s);
    for (const r of chunks(roomIds, IDS_PER_MESSAGE)) this.cluster.publish("notify", { at, r, u: [] } satisfies RemoteChange);
    for (const u of chunks(userIds, IDS_PER_MESSAGE)) this.cluster.publish("notify", { at, r: [], u } satisfies RemoteChange);
  }

  async #remote(change: RemoteChange): Promise<void> {
    const behind = STREAMS.filter((s) => {
      const p = change.at[s];
      return typeof p === "number" && this.streams.current(s) < p;
    });
    // Usually the positions are here already (they travelled ahead of this message).
    if (behind.length > 0) {
      const giveUp = AbortSignal.timeout(REMOTE_WAKE_MAX_WAIT_MS);
      await Promise.all(behind.map((s) => this.streams.waitFor(s, change.at[s]!, giveUp)));
    }
    this.local.notify({ roomIds: change.r, userIds: change.u });
  }

  wait(interest: Interest, sinceVersion: number, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    return this.local.wait(interest, sinceVersion, timeoutMs, signal);
  }

  /** Resolves once every other process has dropped the tokens (or is gone, or has not answered for a while). */
  async revokeTokens(tokenHashes: Iterable<string>): Promise<void> {
    const hashes = [...tokenHashes];
    this.local.revokeTokens(hashes);
    const others = this.cluster.workers().filter((w) => w !== this.cluster.workerId);
    if (hashes.length === 0 || others.length === 0) return;
    // Token hashes are 43 characters: 100 fit a message.
    await Promise.all(
      chunks(hashes, 100).map((h) => {
        const id = `${this.cluster.workerId}/${this.#nextRevocation++}`;
        return new Promise<void>((resolve) => {
          const timer = setTimeout(() => done(), REVOKE_ACK_MAX_WAIT_MS);
          const done = () => {
            clearTimeout(timer);
            this.#awaitingAcks.delete(id);
            resolve();
          };
          this.#awaitingAcks.set(id, { from: new Set(others), done });
          this.cluster.publish("revoke", { id, h });
        });
      }),
    );
  }

  onTokensRevoked(listener: (tokenHashes: readonly string[]) => void): () => void {
    return this.local.onTokensRevoked(listener);
  }
}
