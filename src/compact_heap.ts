/**
 * One compacting garbage collection once a server process has started, so that what starting
 * left behind is returned to the operating system rather than held for the process's life.
 *
 * Starting allocates far more than it keeps: migrations, the compiled config check, route
 * registration. An idle server allocates too little to ever prompt a full collection, so V8
 * would keep that garbage, and the pages it sits on, indefinitely: about 9 MiB of a 27 MiB heap
 * on a default config (measured with Node 20). A full collection frees the objects but keeps
 * the pages, partly filled; only a compacting one empties and releases them.
 *
 * Node offers no call for this without start-up flags that `npm start`, the `switchboard` binary
 * and the worker processes would all have to pass, so the collector is reached through V8's
 * flags at run time, the way Jest's leak detector reaches it. The compaction flag is set for this
 * one collection only: compacting on every full collection would cost later ones time.
 */
import v8 from "node:v8";
import vm from "node:vm";

export interface HeapCompaction {
  /** V8's heap as committed, in bytes, before and after. */
  beforeBytes: number;
  afterBytes: number;
  tookMs: number;
}

/** Runs the collection; undefined if this Node's V8 did not offer it (nothing else happens then). */
export function compactHeap(): HeapCompaction | undefined {
  const beforeBytes = v8.getHeapStatistics().total_heap_size;
  const started = performance.now();
  let gc: unknown;
  try {
    v8.setFlagsFromString("--expose-gc");
    gc = vm.runInNewContext("gc");
  } catch {
    return undefined;
  } finally {
    // Contexts made later (none are, today) get no `gc`.
    v8.setFlagsFromString("--no-expose-gc");
  }
  if (typeof gc !== "function") return undefined;
  v8.setFlagsFromString("--compact-on-every-full-gc");
  try {
    (gc as () => void)();
  } finally {
    v8.setFlagsFromString("--no-compact-on-every-full-gc");
  }
  return { beforeBytes, afterBytes: v8.getHeapStatistics().total_heap_size, tookMs: performance.now() - started };
}
