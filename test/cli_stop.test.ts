/**
 * Stopping on SIGTERM and SIGINT, against the real binary: requests in flight finish, new
 * connections are refused, and the process exits 0.
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import http from "node:http";
import net from "node:net";
import { describe, test } from "node:test";
import { generated, run, serve, tempDir, TIMEOUT } from "./helpers/cli.js";

describe("switchboard stops cleanly", { concurrency: 2 }, () => {
  interface Answer {
    status: number | undefined;
    connection: string | undefined;
    body: Record<string, unknown>;
  }

  /** The answer to `req`: its status, its `Connection` header and its JSON body. */
  function answerOf(req: http.ClientRequest): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      req.on("response", (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (d: string) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode, connection: res.headers.connection, body: JSON.parse(text) as Record<string, unknown> }));
        res.on("error", reject);
      });
      req.on("error", reject);
    });
  }

  /**
   * Logs in with `Expect: 100-continue`: once the "100 Continue" arrives the
   * server has taken the request in, and only then is `signal` sent and the body
   * written. `agent` keeps connections alive, as clients do.
   */
  function loginAcrossSignal(baseUrl: string, agent: http.Agent, child: ChildProcess, signal: NodeJS.Signals): Promise<Answer> {
    const url = new URL(`${baseUrl}/_matrix/client/v3/login`);
    const body = JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: "carol" }, password: "carol pw" });
    const req = http.request(url, {
      method: "POST",
      agent,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), expect: "100-continue" },
    });
    req.on("continue", () => {
      if (child.kill(signal)) req.end(body);
      else req.destroy(new Error(`could not send ${signal}`));
    });
    const answer = answerOf(req);
    req.flushHeaders();
    return answer;
  }

  test("SIGTERM and SIGINT let an in-flight request finish, then exit 0", TIMEOUT, async (t) => {
    const dir = tempDir();
    const file = await generated(dir, "example.org", 0);
    const made = await run(["register-user", "--config", file, "--user", "carol", "--password", "carol pw"], dir);
    assert.equal(made.code, 0, made.stderr);
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      await t.test(signal, async () => {
        const server = await serve(["-c", file], dir);
        // The client holds its connection open until the server is gone: stopping must not wait for it.
        const agent = new http.Agent({ keepAlive: true });
        let answer, end;
        try {
          answer = await loginAcrossSignal(server.listening[0]!, agent, server.child, signal);
          end = await server.exited;
        } finally {
          if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill("SIGKILL");
          agent.destroy();
        }
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        assert.equal(answer.body.user_id, "@carol:example.org");
        assert.equal(answer.connection, "close", "the answer ends its keep-alive connection, so the close need not wait for the client");
        assert.equal(end.signal, null);
        assert.equal(end.code, 0, end.stderr);
        const lines = end.stdout
          .split("\n")
          .filter((l) => l.startsWith("{"))
          .map((l) => JSON.parse(l) as { msg: string; signal?: string; path?: string; status?: number });
        const stopping = lines.findIndex((l) => l.msg === "stopping: finishing in-flight requests" && l.signal === signal);
        const served = lines.findIndex((l) => l.msg === "request" && l.path === "/_matrix/client/v3/login" && l.status === 200);
        const stopped = lines.findIndex((l) => l.msg === "stopped");
        assert.ok(stopping >= 0 && served > stopping && stopped > served, `the log shows stop, the request, then stopped:\n${end.stdout}`);
      });
    }
  });

  test("once stopping, new connections are refused while a request in flight still finishes", TIMEOUT, async () => {
    const dir = tempDir();
    const file = await generated(dir, "example.org", 0);
    const made = await run(["register-user", "--config", file, "--user", "dan", "--password", "dan pw"], dir);
    assert.equal(made.code, 0, made.stderr);
    const server = await serve(["-c", file], dir);
    const url = new URL(`${server.listening[0]!}/_matrix/client/v3/login`);
    const body = JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: "dan" }, password: "dan pw" });
    const half = body.length >> 1;
    // The test holds the request in flight by sending only half of its body until the end. The
    // signal waits for "100 Continue": by then the server has the request, not just bytes in a socket.
    const req = http.request(url, {
      method: "POST",
      agent: false,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), expect: "100-continue" },
    });
    const received = new Promise<void>((resolve) => req.once("continue", () => resolve()));
    try {
      const answered = answerOf(req);
      answered.catch(() => {}); // awaited below; a failure before then is reported by its own assertion
      req.flushHeaders();
      await received;
      await new Promise<void>((resolve) => req.write(body.slice(0, half), () => resolve()));
      assert.ok(server.child.kill("SIGTERM"));

      // The listener closes at once: a new connection is refused (the request above is still open).
      const connect = () =>
        new Promise<string>((resolve) => {
          const socket = net.connect(Number(url.port), url.hostname);
          socket.once("connect", () => {
            socket.destroy();
            resolve("accepted");
          });
          socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
        });
      let outcome = await connect();
      for (let i = 0; i < 300 && outcome === "accepted"; i++) {
        await new Promise((r) => setTimeout(r, 50));
        outcome = await connect();
      }
      assert.equal(outcome, "ECONNREFUSED");
      assert.equal(server.child.exitCode, null, "still running while the request is in flight");

      req.end(body.slice(half));
      const answer = await answered;
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(answer.body.user_id, "@dan:example.org");
      assert.equal(answer.connection, "close");
      const end = await server.exited;
      assert.equal(end.code, 0, end.stderr);
      assert.equal(end.signal, null);
    } finally {
      req.destroy(); // a failed assertion must not leave the server waiting for the rest of the body
      if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill("SIGKILL");
    }
  });
});
