/** A test's own HTTP origin on loopback, and how a fetch test reads a failure. */
import assert from "node:assert/strict";
import type http from "node:http";
import type { AddressInfo } from "node:net";
import { SafeFetchError, type SafeFetchErrorKind } from "../../src/services/outbound/safe_fetch.js";

export interface LoopbackOrigin {
  /** The URL of `path` on the origin. */
  at(path: string): string;
  /** Ends held responses, open connections, and the server. */
  close(): Promise<void>;
}

/** Serves `server` on a port of 127.0.0.1; `held` are responses a test keeps open, ended at close. */
export async function listenLoopback(server: http.Server, held: Set<http.ServerResponse> = new Set()): Promise<LoopbackOrigin> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    at: (path) => `http://127.0.0.1:${port}${path}`,
    close: async () => {
      for (const res of held) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Asserts that `fetch` fails with a SafeFetchError of `kind`, and returns it. */
export async function fetchFailure(fetch: Promise<unknown>, kind: SafeFetchErrorKind): Promise<SafeFetchError> {
  const err = await fetch.then(
    () => assert.fail(`the fetch succeeded; expected ${kind}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof SafeFetchError, String(err));
  assert.equal(err.kind, kind);
  return err;
}
