/**
 * The thread behind FetchThread (fetch_thread.ts): a SafeFetcher of its own, built from the
 * address policy's ranges, running the requests the main thread sends and answering each.
 */
import { parentPort, workerData } from "node:worker_threads";
import { AddressPolicy } from "./address_policy.js";
import type { FetchAnswer, FetchThreadOptions, FromFetchThread, ToFetchThread } from "./fetch_thread.js";
import { SafeFetcher, SafeFetchError } from "./safe_fetch.js";

const opts = workerData as FetchThreadOptions;
const port = parentPort!;
const fetcher = new SafeFetcher({
  policy: new AddressPolicy({ deny: opts.deny, allow: opts.allow }),
  userAgent: opts.userAgent,
  keepAlive: opts.keepAlive,
  resolutionCacheMs: opts.resolutionCacheMs,
});
/**
 * Answers ready in this turn, sent together at its end. Bodies are copied with the message, not
 * transferred: a gateway's answer is a few bytes, and moving a buffer between threads cost more
 * than copying it (measured with push-sized answers).
 */
let answers: FetchAnswer[] = [];

function answer(a: FetchAnswer): void {
  if (answers.length === 0) setImmediate(flush);
  answers.push(a);
}

function flush(): void {
  const batch = answers;
  answers = [];
  port.postMessage(batch satisfies FromFetchThread);
}

// Nothing is called off here: a caller that gives up on a request drops its answer (FetchThread),
// and a request runs at most its deadline. An AbortController per request would cost more than
// the rare cancellation saves.
port.on("message", (orders: ToFetchThread) => {
  for (const { id, req } of orders) {
    fetcher.fetch(req).then(
      (res) => {
        // A copy of exactly the body's bytes: a pooled Buffer's whole pool would otherwise be cloned with it.
        const body = new Uint8Array(res.body);
        answer({ id, ok: { url: res.url.href, status: res.status, headers: res.headers, body } });
      },
      (err: unknown) => {
        const error =
          err instanceof SafeFetchError
            ? { kind: err.kind, message: err.message, detail: err.detail }
            : { kind: "network" as const, message: err instanceof Error ? err.message : String(err), detail: {} };
        answer({ id, error });
      },
    );
  }
});
