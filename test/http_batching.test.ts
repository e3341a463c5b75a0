/**
 * Responses are written once per event-loop turn (`writeResponsesPerTurn`). These tests check
 * what that must not change: every request gets exactly its own response, whatever style its
 * handler is written in, and a keep-alive connection stays usable afterwards.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import type { App } from "../src/http/server.js";
import { CS, startWithUsers, type User } from "./helpers/rooms.js";
import { startBareApp, until, type LogLine, type TestServer } from "./helpers/server.js";

interface Got {
  status: number | undefined;
  body: string;
  contentType: string | undefined;
  /** Whether the request went out on a connection an earlier request had used. */
  reused: boolean;
}

function get(url: string, agent: http.Agent, headers: Record<string, string> = {}): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode, body, contentType: res.headers["content-type"], reused: req.reusedSocket }));
    });
    req.on("error", reject);
  });
}

describe("concurrent requests answered in batches", () => {
  let server: TestServer;
  let users: readonly User[];
  before(async () => ({ server, users } = await startWithUsers("ann", "bob", "cat", "dan", "eve")));
  after(async () => server?.stop());

  test("each of 400 whoami requests over 40 connections gets its own user's answer", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 40 });
    try {
      const asks = Array.from({ length: 400 }, (_, i) => users[(i * 7) % users.length]!);
      const answers = await Promise.all(
        asks.map((u) => get(`${server.baseUrl}${CS}/account/whoami`, agent, { authorization: `Bearer ${u.token}` })),
      );
      answers.forEach((a, i) => {
        assert.equal(a.status, 200);
        assert.deepEqual(JSON.parse(a.body), { user_id: asks[i]!.userId, device_id: asks[i]!.deviceId, is_guest: false });
      });
    } finally {
      agent.destroy();
    }
  });
});

describe("handler styles", () => {
  let app: App;
  let base: string;
  let lines: LogLine[];

  before(async () => {
    const body = { ok: true };
    ({ app, baseUrl: base, lines } = await startBareApp(
      (app) => {
        app.get("/sync-returns-body", () => body);
        app.get("/sync-sends", (_request, reply) => {
          reply.send(body);
        });
        app.get("/sync-returns-reply", (_request, reply) => reply.send(body));
        app.get("/async-returns-body", async () => body);
        app.get("/async-returns-reply", async (_request, reply) => reply.send(body));
        app.get("/async-sends-then-returns-reply", async (_request, reply) => {
          reply.send(body);
          return reply;
        });
        // Wrong by Fastify's rules for async handlers (it must return the reply); it still gets one
        // response, and a warning that says what to fix.
        app.get("/async-sends-only", async (_request, reply) => {
          reply.send(body);
        });
      },
      { logged: true },
    ));
  });
  after(() => app.close());

  const correct = [
    "/sync-returns-body",
    "/sync-sends",
    "/sync-returns-reply",
    "/async-returns-body",
    "/async-returns-reply",
    "/async-sends-then-returns-reply",
  ];
  for (const path of correct) {
    test(`${path}: one response, no warning, and the connection is reused`, async () => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const seen = lines.length;
      try {
        for (let i = 0; i < 3; i++) {
          const got = await get(base + path, agent);
          assert.equal(got.status, 200);
          assert.deepEqual(JSON.parse(got.body), { ok: true });
          assert.equal(got.reused, i > 0, "one connection serves all three");
        }
        // A request's line is logged once its response has been written out.
        await until(() => lines.slice(seen).filter((l) => l.msg === "request").length === 3);
        const logged = lines.slice(seen);
        assert.deepEqual(
          logged.filter((l) => l.level >= 40),
          [],
        );
        assert.equal(logged.filter((l) => l.msg === "request").length, 3);
      } finally {
        agent.destroy();
      }
    });
  }

  test("an async handler that sends without returning the reply: one response, a warning naming the fix", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const seen = lines.length;
    try {
      for (let i = 0; i < 2; i++) {
        const got = await get(`${base}/async-sends-only`, agent);
        assert.equal(got.status, 200);
        assert.deepEqual(JSON.parse(got.body), { ok: true });
        assert.equal(got.reused, i > 0);
      }
      await until(() => lines.slice(seen).filter((l) => l.msg === "request").length === 2);
      const warnings = lines.slice(seen).filter((l) => l.level >= 40);
      assert.equal(warnings.length, 2);
      for (const w of warnings) {
        assert.equal(w.level, 40);
        assert.equal(w.msg, "GET /async-sends-only was answered twice; the first answer was sent");
      }
    } finally {
      agent.destroy();
    }
  });
});

describe("when responses are written, and when that fails", () => {
  let app: App;
  let base: string;
  let lines: LogLine[];
  const observed: boolean[] = [];

  before(async () => {
    const body = { ok: true };
    ({ app, baseUrl: base, lines } = await startBareApp(
      (app) => {
        app.get("/observe", (_request, reply) => {
          reply.send(body);
          observed.push(reply.raw.headersSent);
          setImmediate(() => observed.push(reply.raw.headersSent));
        });
        app.get("/ok", () => body);
        app.get("/sends-then-throws", (_request, reply) => {
          reply.type("text/plain").send("first");
          throw new Error("thrown after sending");
        });
        // Fastify cannot write a payload that is not bytes: this serialiser gives it one, once.
        app.get("/unwritable-once", (_request, reply) => {
          let broken = true;
          reply.serializer((payload: unknown) => {
            const out = broken ? { not: "bytes" } : JSON.stringify(payload);
            broken = false;
            return out as string;
          });
          return body;
        });
        // Node refuses a header value with a line break, so no answer on this reply can be written.
        app.get("/unwritable", (_request, reply) => {
          reply.header("x-broken", "line\nbreak");
          return body;
        });
      },
      { logged: true },
    ));
  });
  after(() => app.close());

  test("a response is written once the turn's callbacks have run, not inside its handler", async () => {
    const agent = new http.Agent();
    try {
      const got = await get(`${base}/observe`, agent);
      assert.equal(got.status, 200);
      assert.deepEqual(observed, [false, true]);
    } finally {
      agent.destroy();
    }
  });

  test("a handler that throws after sending: the first answer goes out unchanged, and both are logged", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const seen = lines.length;
    try {
      const got = await get(`${base}/sends-then-throws`, agent);
      assert.equal(got.status, 200);
      assert.equal(got.body, "first");
      assert.match(got.contentType ?? "", /^text\/plain/);
      const next = await get(`${base}/ok`, agent);
      assert.equal(next.status, 200);
      assert.equal(next.reused, true, "the connection carries on");
      await until(() => lines.slice(seen).filter((l) => l.msg === "request").length === 2);
      const problems = lines.slice(seen).filter((l) => l.level >= 40);
      assert.deepEqual(
        problems.map((l) => [l.level, l.msg, l.err?.message]),
        [
          [50, "unhandled error", "thrown after sending"],
          [40, "GET /sends-then-throws was answered twice; the first answer was sent", undefined],
        ],
      );
    } finally {
      agent.destroy();
    }
  });

  test("a response that cannot be written is answered 500 M_UNKNOWN instead, and logged", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const seen = lines.length;
    try {
      const got = await get(`${base}/unwritable-once`, agent);
      assert.equal(got.status, 500);
      assert.deepEqual(JSON.parse(got.body), { errcode: "M_UNKNOWN", error: "Internal server error" });
      const next = await get(`${base}/ok`, agent);
      assert.equal(next.reused, true, "the connection carries on");
      await until(() => lines.slice(seen).filter((l) => l.msg === "request").length === 2);
      assert.equal(lines.slice(seen).filter((l) => l.msg === "writing the response failed").length, 1);
    } finally {
      agent.destroy();
    }
  });

  test("when the 500 cannot be written either, that connection is closed and the server carries on", async () => {
    const agent = new http.Agent();
    const seen = lines.length;
    try {
      await assert.rejects(get(`${base}/unwritable`, agent), /socket hang up|ECONNRESET/);
      const other = await get(`${base}/ok`, agent);
      assert.equal(other.status, 200);
      await until(() => lines.slice(seen).filter((l) => l.msg === "writing the response failed").length === 2);
    } finally {
      agent.destroy();
    }
  });
});
