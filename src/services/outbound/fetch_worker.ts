/**
 * The thread behind FetchThread (fetch_thread.ts): a SafeFetcher of its own, built from the
 * address policy's ranges, running the requests the main thread sends and answering each.
 */
import { parentPort, workerData } from "node:worker_threads";
import { AddressPolicy } from "./address_policy.js";
import type { FetchThreadOptions, FromFetchThread, ToFetchThread } from "./fetch_thread.js";
import { SafeFetcher, SafeFetchError } from "./safe_fetch.js";

const opts = workerData as FetchThreadOptions;
const port = parentPort!;
const fetcher = new SafeFetcher({
  policy: new AddressPolicy({ deny: opts.deny, allow: opts.allow }),
  userAgent: opts.userAgent,
  keepAlive: opts.keepAlive,
  resolutionCacheMs: opts.resolutionCacheMs,
});
// Nothing is called off here: a caller that gives up on a request drops its answer (FetchThread),
// and a request runs at most its deadline. An AbortController per request would cost more than
// the rare cancellation saves.
port.on("message", (msg: ToFetchThread) => {
  const { id, req } = msg;
  fetcher.fetch(req).then(
    (res) => {
      // A copy of exactly the body's bytes, whose buffer moves to the main thread: a pooled
      // Buffer's whole pool would otherwise be cloned with it.
      const body = new Uint8Array(res.body);
      const answer: FromFetchThread = { id, ok: { url: res.url.href, status: res.status, headers: res.headers, body } };
      port.postMessage(answer, [body.buffer]);
    },
    (err: unknown) => {
      const error =
        err instanceof SafeFetchError
          ? { kind: err.kind, message: err.message, detail: err.detail }
          : { kind: "network" as const, message: err instanceof Error ? err.message : String(err), detail: {} };
      port.postMessage({ id, error } satisfies FromFetchThread);
    },
  );
});
