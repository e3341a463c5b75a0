/**
 * A SafeFetcher on a thread of its own. Push delivery sends a request per recipient of every
 * event, and Node's HTTP client is most of what a push costs: on the main thread it competes
 * with the requests being served (the sends that make the pushes) and stretches the queue of
 * pushes behind them. Here the main thread only hands over the request and gets back the answer,
 * and the HTTP work runs on another core. The requests of one turn of the event loop (an event's
 * pushes) go over in one message, and the answers ready in one turn come back in one: a message
 * per request cost about a fifth of what the request itself cost.
 *
 * The thread's fetcher is a full SafeFetcher built from the same address policy (its ranges),
 * so every request is vetted, resolved and pinned there exactly as on the main thread. The
 * thread starts on the first fetch, so a server without pushers never pays for it (a thread is
 * a V8 isolate of its own: some megabytes), and starts again after a crash; what was in flight
 * then fails as a network error, which push delivery retries.
 */
import { Worker } from "node:worker_threads";
import { Cancel, follow } from "./cancel.js";
import { SafeFetchError, type SafeFetchErrorKind } from "./fetch_error.js";
import type { FetchResult, Fetcher, PlainFetchRequest } from "./safe_fetch.js";

export interface FetchThreadOptions {
  /** The address policy's ranges (AddressPolicy's `deny` and `allow`). */
  deny: readonly string[];
  allow: readonly string[];
  userAgent: string;
  keepAlive: boolean;
  /** See SafeFetcherOptions. */
  resolutionCacheMs?: number;
}

/** To the thread: a request to run. The caller's signal stays here: a request called off has its answer dropped. */
export type FetchOrder = { id: number; req: Omit<PlainFetchRequest, "signal"> };

/** From the thread: a request's answer, or how it failed. */
export type FetchAnswer =
  | { id: number; ok: { url: string; status: number; headers: FetchResult["headers"]; body: Uint8Array } }
  | { id: number; error: { kind: SafeFetchErrorKind; message: string; detail: SafeFetchError["detail"] } };

/**
 * Messages carry every order (and every answer) of one turn of the event loop: an event's
 * pushes are asked for together, and a message costs about as much as the request it carries.
 */
export type ToFetchThread = FetchOrder[];
export type FromFetchThread = FetchAnswer[];

interface Waiting {
  resolve: (result: FetchResult) => void;
  reject: (err: unknown) => void;
}

export class FetchThread implements Fetcher {
  #worker: Worker | undefined;
  #next = 0;
  readonly #waiting = new Map<number, Waiting>();
  /** Orders of this turn, sent together at its end. */
  #orders: FetchOrder[] = [];

  /**
   * @param onCrash told of an error that ended the thread (it is restarted on the next fetch).
   */
  constructor(
    private readonly opts: FetchThreadOptions,
    private readonly onCrash: (err: unknown) => void = () => undefined,
  ) {}

  fetch(req: PlainFetchRequest): Promise<FetchResult> {
    const { signal, ...rest } = req;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = this.#next++;
    return new Promise<FetchResult>((resolve, reject) => {
      let unfollow: (() => void) | undefined;
      this.#waiting.set(id, {
        resolve: (result) => {
          unfollow?.();
          resolve(result);
        },
        reject: (err) => {
          unfollow?.();
          reject(err);
        },
      });
      if (signal) {
        const cancel = new Cancel();
        cancel.watch(() => {
          if (this.#waiting.delete(id)) reject(signal.reason);
        });
        unfollow = follow(signal, cancel);
      }
      if (this.#orders.length === 0) setImmediate(() => this.#send());
      this.#orders.push({ id, req: rest });
    });
  }

  #send(): void {
    const orders = this.#orders;
    this.#orders = [];
    // Those called off meanwhile are not sent; a thread that stopped meanwhile failed them all.
    const live = orders.filter((o) => this.#waiting.has(o.id));
    if (live.length > 0) this.#start().postMessage(live satisfies ToFetchThread);
  }

  /** Stops the thread; what is still in flight fails. */
  close(): void {
    const worker = this.#worker;
    this.#worker = undefined;
    this.#failAll(new SafeFetchError("network", "The fetcher was closed"));
    void worker?.terminate();
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(new URL("./fetch_worker.js", import.meta.url), { workerData: this.opts });
    // In-flight requests must not keep a stopping process alive: the server's own sockets do that.
    worker.unref();
    worker.on("message", (answers: FromFetchThread) => {
      for (const msg of answers) {
        const waiting = this.#waiting.get(msg.id);
        if (!waiting) continue;
        this.#waiting.delete(msg.id);
        if ("ok" in msg) {
          const { url, status, headers, body } = msg.ok;
          waiting.resolve({ url: new URL(url), status, headers, body: Buffer.from(body.buffer, body.byteOffset, body.byteLength) });
        } else {
          waiting.reject(new SafeFetchError(msg.error.kind, msg.error.message, msg.error.detail));
        }
      }
    });
    // A crash: what was in flight fails, and the next fetch starts a new thread.
    worker.on("error", (err) => this.onCrash(err));
    worker.on("exit", () => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      this.#failAll(new SafeFetchError("network", "The fetch thread stopped"));
    });
    this.#worker = worker;
    return worker;
  }

  #failAll(err: SafeFetchError): void {
    const waiting = [...this.#waiting.values()];
    this.#waiting.clear();
    for (const w of waiting) w.reject(err);
  }
}
