/**
 * Wakes long-polling `/sync` requests when something they care about changes, and tells
 * every access-token cache which tokens were revoked. The interface is what several
 * processes would share later (over Redis or PostgreSQL NOTIFY); this implementation is
 * in-process.
 */

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
   * token up again finds it gone. In-process, listeners run before this returns.
   */
  revokeTokens(tokenHashes: Iterable<string>): void;
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
