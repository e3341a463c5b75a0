/**
 * Connection reuse in the SSRF-safe fetcher (`keepAlive`, what pushers use): a connection is
 * reused only by requests whose host name was vetted to the same addresses. A name that now
 * resolves elsewhere (DNS rebinding) gets a new connection to the newly vetted address, and one
 * that now resolves to a blocked address is refused, whatever connection is still open.
 */
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import { AddressPolicy } from "../src/services/outbound/address_policy.js";
import { SafeFetchError, SafeFetcher, type Resolver } from "../src/services/outbound/safe_fetch.js";
import { fetchFailure, listenLoopback, type LoopbackOrigin } from "./helpers/loopback.js";

/** A server on one loopback address that says which address it is and counts its connections. */
class Origin {
  connections = 0;
  readonly sockets = new Set<Socket>();
  readonly #server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => res.writeHead(200, { "content-type": "text/plain" }).end(this.address));
  });
  port = 0;

  constructor(readonly address: string) {
    this.#server.on("connection", (socket: Socket) => {
      this.connections++;
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
  }

  async start(port = 0): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(port, this.address, resolve);
    });
    this.port = (this.#server.address() as AddressInfo).port;
    return this;
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

describe("pooled connections of the SSRF-safe fetcher", () => {
  const first = new Origin("127.0.0.1");
  const second = new Origin("127.0.0.2");
  /** What gateway.test resolves to now. */
  let answer = "127.0.0.1";
  const resolve: Resolver = async () => [{ address: answer, family: 4 }];
  // Loopback is blocked by default; the test allows 127.0.0.1 and 127.0.0.2 only.
  const policy = new AddressPolicy({ allow: ["127.0.0.1/32", "127.0.0.2/32"] });
  const pooled = new SafeFetcher({ policy, resolve, keepAlive: true });
  const fetchText = async (fetcher: SafeFetcher) =>
    (await fetcher.fetch({ url: `http://gateway.test:${first.port}/_matrix/push/v1/notify`, method: "POST", body: "{}", maxBytes: 1000 })).body.toString();

  before(async () => {
    await first.start();
    // The same port on another loopback address, so that only the resolution tells them apart.
    await second.start(first.port);
  });
  after(async () => {
    pooled.close();
    await first.stop();
    await second.stop();
  });

  test("requests to the same vetted address share one connection", async () => {
    for (let i = 0; i < 5; i++) assert.equal(await fetchText(pooled), "127.0.0.1");
    assert.equal(first.connections, 1);
    // Without keepAlive (the default), each request has a connection of its own.
    const unpooled = new SafeFetcher({ policy, resolve });
    const before = first.connections;
    for (let i = 0; i < 3; i++) assert.equal(await fetchText(unpooled), "127.0.0.1");
    assert.equal(first.connections - before, 3);
  });

  test("a name that now resolves elsewhere gets a new connection to the new address, not the open one", async () => {
    assert.ok(first.sockets.size > 0, "the pooled connection to 127.0.0.1 is still open");
    answer = "127.0.0.2";
    assert.equal(await fetchText(pooled), "127.0.0.2");
    assert.equal(second.connections, 1);
    // And back: the first pool's connection is for 127.0.0.1 only, and still serves it.
    answer = "127.0.0.1";
    const before = first.connections;
    assert.equal(await fetchText(pooled), "127.0.0.1");
    assert.equal(first.connections, before);
  });

  test("a name that now resolves to a blocked address is refused, though a connection to its old address is open", async () => {
    assert.ok(first.sockets.size > 0);
    answer = "10.0.0.1";
    const err = await fetchText(pooled).then(
      () => assert.fail("a blocked resolution was fetched"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof SafeFetchError);
    assert.equal(err.kind, "blocked_resolution");
    answer = "127.0.0.1";
  });

  test("with resolutionCacheMs, a name is resolved once for many fetches; a failed resolution is not remembered", async () => {
    let lookups = 0;
    let failNext = true;
    const counting: Resolver = async () => {
      lookups++;
      if (failNext) {
        failNext = false;
        throw new Error("SERVFAIL");
      }
      return [{ address: answer, family: 4 }];
    };
    const caching = new SafeFetcher({ policy, resolve: counting, keepAlive: true, resolutionCacheMs: 60_000 });
    try {
      await fetchFailure(fetchText(caching), "dns");
      for (let i = 0; i < 5; i++) assert.equal(await fetchText(caching), "127.0.0.1");
      // One failed lookup, then one for all five fetches.
      assert.equal(lookups, 2);
      // A remembered answer is still the vetted one: a name now resolving to a blocked address
      // is refused once the entry expires, and never reached meanwhile (connections are pinned).
      const brief = new SafeFetcher({ policy, resolve: counting, keepAlive: true, resolutionCacheMs: 1 });
      assert.equal(await fetchText(brief), "127.0.0.1");
      answer = "10.0.0.1";
      await new Promise((r) => setTimeout(r, 20));
      await fetchFailure(fetchText(brief), "blocked_resolution");
      assert.equal(lookups, 4);
      brief.close();
    } finally {
      answer = "127.0.0.1";
      caching.close();
    }
  });

  test("close() ends every pooled connection", async () => {
    assert.equal(await fetchText(pooled), "127.0.0.1");
    assert.ok(first.sockets.size > 0);
    pooled.close();
    await new Promise<void>((resolve) => {
      const check = () => (first.sockets.size === 0 ? resolve() : setTimeout(check, 10));
      check();
    });
  });
});

describe("calling off pooled fetches, and bodies cut short", () => {
  /** Answers /slow never (until the test ends), /cut with half its declared body, anything else "ok". */
  const stalled = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      if (req.url === "/slow") return void stalled.add(res);
      if (req.url === "/cut") {
        res.writeHead(200, { "content-type": "text/plain", "content-length": "100" });
        res.write("x".repeat(50));
        // The connection ends with 50 of the 100 bytes sent.
        setImmediate(() => res.socket?.destroy());
        return;
      }
      res.writeHead(200, { "content-type": "text/plain" }).end("ok");
    });
  });
  const policy = new AddressPolicy({ allow: ["127.0.0.1/32"] });
  const fetcher = new SafeFetcher({ policy, keepAlive: true });
  let origin: LoopbackOrigin;
  const at = (p: string) => origin.at(p);

  before(async () => {
    origin = await listenLoopback(server, stalled);
  });
  after(async () => {
    fetcher.close();
    await origin.close();
  });

  test("one caller signal shared by many fetches in flight calls off every one of them, and only those", async () => {
    const controller = new AbortController();
    const reason = new Error("stopping");
    const inFlight = Array.from({ length: 20 }, () => fetcher.fetch({ url: at("/slow"), maxBytes: 100, signal: controller.signal }).then(() => "answered", (err: unknown) => err));
    // A fetch with the same signal that finished before the abort is not touched by it.
    assert.equal((await fetcher.fetch({ url: at("/ok"), maxBytes: 100, signal: controller.signal })).body.toString(), "ok");
    while (stalled.size < 20) await new Promise((r) => setTimeout(r, 5));
    controller.abort(reason);
    for (const outcome of await Promise.all(inFlight)) assert.equal(outcome, reason);
    // A signal that has already fired calls off a new fetch at once.
    await assert.rejects(fetcher.fetch({ url: at("/ok"), maxBytes: 100, signal: controller.signal }), (err) => err === reason);
    // Other fetches still work, over the same pool.
    assert.equal((await fetcher.fetch({ url: at("/ok"), maxBytes: 100 })).body.toString(), "ok");
  });

  test("a body that ends before its declared length is a network failure, not a short answer", async () => {
    const err = await fetchFailure(fetcher.fetch({ url: at("/cut"), maxBytes: 1000 }), "network");
    assert.equal(err.detail.headersReceived, true);
  });

  test("a body larger than allowed is refused as too large", async () => {
    // Declared 100 bytes against a limit of 10: refused before reading.
    await fetchFailure(fetcher.fetch({ url: at("/cut"), maxBytes: 10 }), "too_large");
  });
});
