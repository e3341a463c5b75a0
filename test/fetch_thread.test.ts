/**
 * The SSRF-safe fetcher on a thread of its own (services/outbound/fetch_thread.ts), as push
 * delivery uses it: the same answers and the same refusals as on the main thread, a caller's
 * signal honoured here, and a closed or crashed thread failing what was in flight.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { FetchThread } from "../src/services/outbound/fetch_thread.js";
import { SafeFetchError } from "../src/services/outbound/safe_fetch.js";
import { fetchFailure, listenLoopback, type LoopbackOrigin } from "./helpers/loopback.js";

const failure = (p: Promise<unknown>) =>
  p.then(
    () => assert.fail("the fetch succeeded"),
    (err: unknown) => err,
  );

describe("FetchThread", () => {
  const stalled = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.url === "/slow") return void stalled.add(res);
      if (req.url === "/big") return void res.writeHead(200, { "content-type": "text/plain" }).end("x".repeat(5000));
      res.writeHead(201, { "content-type": "application/json", "x-seen": req.headers["user-agent"] ?? "" });
      res.end(JSON.stringify({ method: req.method, body: Buffer.concat(chunks).toString("utf8") }));
    });
  });
  let origin: LoopbackOrigin;
  const at = (p: string) => origin.at(p);
  // Loopback is refused by default: this thread may reach 127.0.0.1 only.
  const thread = new FetchThread({ deny: [], allow: ["127.0.0.1/32"], userAgent: "Switchboard test", keepAlive: true });

  before(async () => {
    origin = await listenLoopback(server, stalled);
  });
  after(async () => {
    thread.close();
    await origin.close();
  });

  test("a request goes through the thread and comes back whole: status, headers, body and URL", async () => {
    const res = await thread.fetch({ url: at("/notify"), method: "POST", headers: { "content-type": "application/json" }, body: '{"n":1}', maxBytes: 1000 });
    assert.equal(res.status, 201);
    assert.equal(res.headers["x-seen"], "Switchboard test");
    assert.deepEqual(JSON.parse(res.body.toString("utf8")), { method: "POST", body: '{"n":1}' });
    assert.equal(res.url.href, at("/notify"));
    // Many at once, each with its own answer.
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => thread.fetch({ url: at(`/n${i}`), method: "POST", body: String(i), maxBytes: 1000 })));
    assert.deepEqual(
      answers.map((a) => (JSON.parse(a.body.toString("utf8")) as { body: string }).body),
      Array.from({ length: 50 }, (_, i) => String(i)),
    );
  });

  test("the thread's fetcher applies the address policy: an address it does not allow is never contacted", async () => {
    for (const url of ["http://127.0.0.2:9/x", "http://10.0.0.1/x", "http://[::1]:9/x"]) {
      await fetchFailure(thread.fetch({ url, maxBytes: 100 }), "blocked_address");
    }
    await fetchFailure(thread.fetch({ url: "ftp://127.0.0.1/x", maxBytes: 100 }), "invalid_url");
  });

  test("the fetches of one turn go over together, and each gets its own answer: successes and refusals mixed", async () => {
    const asked = Array.from({ length: 30 }, (_, i) =>
      i % 3 === 0
        ? fetchFailure(thread.fetch({ url: `http://10.0.0.${i}/x`, maxBytes: 100 }), "blocked_address").then(() => `refused ${i}`)
        : thread.fetch({ url: at(`/m${i}`), method: "POST", body: String(i), maxBytes: 1000 }).then((a) => (JSON.parse(a.body.toString("utf8")) as { body: string }).body),
    );
    assert.deepEqual(
      await Promise.all(asked),
      Array.from({ length: 30 }, (_, i) => (i % 3 === 0 ? `refused ${i}` : String(i))),
    );
  });

  test("a fetch called off before its turn ends is never sent", async () => {
    const controller = new AbortController();
    const before = stalled.size;
    const gone = failure(thread.fetch({ url: at("/slow"), maxBytes: 100, signal: controller.signal }));
    controller.abort(new Error("changed my mind"));
    assert.equal(((await gone) as Error).message, "changed my mind");
    // A later fetch has been answered, so an order sent with the one called off would have arrived first.
    assert.equal((await thread.fetch({ url: at("/after"), maxBytes: 1000 })).status, 201);
    assert.equal(stalled.size, before);
  });

  test("limits hold in the thread: a body over maxBytes is too_large", async () => {
    await fetchFailure(thread.fetch({ url: at("/big"), maxBytes: 100 }), "too_large");
  });

  test("the caller's signal calls a fetch off here, with its reason, and the thread carries on", async () => {
    const controller = new AbortController();
    const reason = new Error("stopping");
    const inFlight = failure(thread.fetch({ url: at("/slow"), maxBytes: 100, signal: controller.signal }));
    while (stalled.size === 0) await new Promise((r) => setTimeout(r, 5));
    controller.abort(reason);
    assert.equal(await inFlight, reason);
    assert.equal(await failure(thread.fetch({ url: at("/x"), maxBytes: 100, signal: controller.signal })), reason);
    assert.equal((await thread.fetch({ url: at("/x"), maxBytes: 1000 })).status, 201);
  });

  test("closing fails what is in flight as a network error; the next fetch starts a new thread", async () => {
    const inFlight = failure(thread.fetch({ url: at("/slow"), maxBytes: 100 }));
    const before = stalled.size;
    while (stalled.size === before) await new Promise((r) => setTimeout(r, 5));
    thread.close();
    const err = await inFlight;
    assert.ok(err instanceof SafeFetchError && err.kind === "network", String(err));
    assert.equal((await thread.fetch({ url: at("/again"), maxBytes: 1000 })).status, 201);
  });
});
