/** Loads matrix-js-sdk in Node 20, which lacks Promise.withResolvers. */
type WithResolvers = <T>() => { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void };
const P = Promise as unknown as { withResolvers?: WithResolvers };
if (typeof P.withResolvers !== "function") {
  P.withResolvers = function <T>() {
    let resolve!: (v: T) => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<T>((a, b) => {
      resolve = a;
      reject = b;
    });
    return { promise, resolve, reject };
  };
}

export async function loadSdk() {
  const sdk = await import("matrix-js-sdk");
  const { logger } = await import("matrix-js-sdk/lib/logger.js");
  // The SDK logs every request at debug level, and its child loggers (sync, MatrixRTC) ignore the
  // root's level; keep test output readable so that a failure stands out in CI's log.
  (logger as unknown as { setLevel?: (level: string) => void }).setLevel?.("warn");
  await quietSdkLogs();
  return sdk;
}

const applied = new Set<string>();

/**
 * Keeps only the given levels (warnings and errors by default) from every matrix-js-sdk logger. Its child loggers (MatrixRTC,
 * sync, crypto) are made at DEBUG level and inherit the root's method factory, so the filter goes there.
 */
export async function quietSdkLogs(keep: string[] = ["warn", "error"]): Promise<void> {
  const key = keep.join(",");
  if (applied.has(key)) return;
  applied.add(key);
  const { logger } = await import("matrix-js-sdk/lib/logger.js");
  type Factory = (method: string, level: unknown, name: unknown) => (...args: unknown[]) => void;
  const root = logger as unknown as { methodFactory: Factory; rebuild(): void };
  const base = root.methodFactory;
  root.methodFactory = (method, level, name) => (keep.includes(method) ? base(method, level, name) : () => {});
  root.rebuild();
}
