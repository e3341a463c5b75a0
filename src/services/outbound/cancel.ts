/** Calling off a fetch: its deadline, or its caller's signal (safe_fetch.ts). */

/**
 * How one fetch is called off (its deadline, or the caller's signal): whatever it waits on at
 * that moment fails. Not an AbortController: making one, and the listeners `http.request` adds
 * to its signal, cost more than the rest of a small request (push gateways get thousands a second).
 */
export class Cancel {
  aborted = false;
  reason: unknown;
  #onAbort: (() => void) | undefined;

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const onAbort = this.#onAbort;
    this.#onAbort = undefined;
    onAbort?.();
  }

  /** `onAbort` runs on abort (at once if that has happened), instead of any earlier one. */
  watch(onAbort: (() => void) | undefined): void {
    if (this.aborted) onAbort?.();
    else this.#onAbort = onAbort;
  }
}

/** Settles as `promise` does, or rejects when `signal` aborts first (DNS cannot be cancelled). */
export function abortable<T>(promise: Promise<T>, signal: Cancel): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    signal.watch(() => reject(signal.reason as Error));
    promise.then(resolve, reject).finally(() => signal.watch(undefined));
  });
}

/**
 * Cancels that follow each caller's signal. Push delivery passes one signal to every fetch it
 * makes, thousands at once; an `abort` listener each would make every add and remove walk all
 * the others (an EventTarget keeps its listeners in a list), so each signal gets one listener,
 * added the first time, and a set of the fetches it calls off.
 */
const followers = new WeakMap<AbortSignal, Set<Cancel>>();

/** Has `cancel` abort when `signal` does (at once if it has); returns how to stop following. */
export function follow(signal: AbortSignal, cancel: Cancel): () => void {
  if (signal.aborted) {
    cancel.abort(signal.reason);
    return () => undefined;
  }
  let set = followers.get(signal);
  if (!set) {
    const fetches = (set = new Set<Cancel>());
    followers.set(signal, fetches);
    signal.addEventListener(
      "abort",
      () => {
        for (const c of fetches) c.abort(signal.reason);
        fetches.clear();
      },
      { once: true },
    );
  }
  set.add(cancel);
  const following = set;
  return () => following.delete(cancel);
}
