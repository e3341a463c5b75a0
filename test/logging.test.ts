/**
 * Logging (issue 2, sections 2 and 5): one line per request with method, path, status,
 * duration and user, tokens never written; request-scoped error lines that share the request's
 * id; and log lines that reach their destination, in order, even when the process exits at once.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import pino from "pino";
import { createLogger, TurnBatchedDestination } from "../src/http/logging.js";
import { registerUser, request, startServer, until, type TestServer } from "./helpers/server.js";

const WHOAMI = "/_matrix/client/v3/account/whoami";

interface Line {
  level: number;
  msg: string;
  reqId?: string;
  method?: string;
  path?: string;
  status?: number;
  ms?: number;
  user?: string;
  ip?: string;
  err?: { message?: string };
}

/** Everything the server logs, as written. */
const written: string[] = [];
const lines = (): Line[] => written.join("").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Line);
const requestLines = (p: string) => lines().filter((l) => l.msg === "request" && l.path?.startsWith(p));

let server: TestServer;
let user: { user_id: string; access_token: string };

before(async () => {
  const logger = createLogger("info", { write: (s: string) => void written.push(s) });
  server = await startServer({ log_level: "info" }, { logger });
  user = await registerUser(server.baseUrl, "logged");
});
after(async () => server?.stop());

describe("the request line", () => {
  test("gives method, path, status, duration, user and client address", async () => {
    const res = await request(server.baseUrl, "GET", WHOAMI, { token: user.access_token });
    assert.equal(res.status, 200);
    const [line] = requestLines(WHOAMI);
    assert.ok(line, `no request line for ${WHOAMI} in:\n${written.join("")}`);
    assert.equal(line.level, 30, "info");
    assert.equal(line.method, "GET");
    assert.equal(line.path, WHOAMI);
    assert.equal(line.status, 200);
    assert.equal(typeof line.ms, "number");
    assert.ok(line.ms! >= 0);
    assert.equal(line.user, user.user_id);
    assert.equal(line.ip, "127.0.0.1");
    assert.match(line.reqId ?? "", /\S/);
  });

  test("is written for errors too, without a user when none was authenticated", async () => {
    const missing = "/_matrix/client/v3/no_such_endpoint";
    assert.equal((await request(server.baseUrl, "GET", missing)).status, 404);
    assert.equal((await request(server.baseUrl, "GET", `${WHOAMI}?from=unauthenticated`)).status, 401);
    const [notFound] = requestLines(missing);
    assert.equal(notFound?.status, 404);
    assert.equal(notFound?.user, undefined);
    const unauthorised = requestLines(WHOAMI).find((l) => l.status === 401);
    assert.ok(unauthorised, "a line for the 401");
    assert.equal(unauthorised.user, undefined);
    // Refused by Fastify before routing, and still logged.
    const badUrl = "/_matrix/client/v3/profile/%zz";
    assert.equal((await request(server.baseUrl, "GET", badUrl)).status, 400);
    await until(() => requestLines(badUrl).length === 1);
    assert.equal(requestLines(badUrl)[0]?.status, 400);
  });

  test("never contains an access token, from the query string or the header", async () => {
    const login = await request(server.baseUrl, "POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: "logged" }, password: "correct horse battery staple" },
    });
    assert.equal(login.status, 200);
    const second = login.body.access_token as string;
    const byQuery = await request(server.baseUrl, "GET", `${WHOAMI}?access_token=${encodeURIComponent(second)}&x=1`);
    assert.equal(byQuery.status, 200);
    const line = requestLines(WHOAMI).find((l) => l.path?.includes("access_token"));
    assert.equal(line?.path, `${WHOAMI}?access_token=[redacted]&x=1`);
    // The query parser decodes parameter names, so the redaction does too.
    const encoded = await request(server.baseUrl, "GET", `${WHOAMI}?y=2&access%5Ftoken=${encodeURIComponent(second)}`);
    assert.equal(encoded.status, 200);
    assert.ok(requestLines(WHOAMI).some((l) => l.path === `${WHOAMI}?y=2&access%5Ftoken=[redacted]`));
    // Registration tokens are secrets too: checking one, and the admin API that names one.
    const validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
    await request(server.baseUrl, "GET", `${validity}?token=sekritRegToken`);
    assert.equal(requestLines(validity)[0]?.path, `${validity}?token=[redacted]`);
    const admin = "/_synapse/admin/v1/registration_tokens";
    await request(server.baseUrl, "GET", `${admin}/sekritAdminToken`, { token: second });
    assert.equal(requestLines(admin)[0]?.path, `${admin}/[redacted]`);
    await request(server.baseUrl, "POST", `${admin}/new`, { token: second, body: {} });
    assert.ok(requestLines(admin).some((l) => l.path === `${admin}/new`), "the endpoint that makes a token is not one");
    const all = written.join("");
    for (const secret of [user.access_token, second, "correct horse battery staple", "sekritRegToken", "sekritAdminToken"]) {
      assert.ok(!all.includes(secret), "a secret reached the log");
    }
  });
});

describe("an unexpected failure", () => {
  test("answers 500 M_UNKNOWN and logs the error with the request's id", async () => {
    const s = await startServer({ log_level: "info" }, { logger: createLogger("info", { write: (l: string) => void written.push(l) }) });
    try {
      const { access_token } = await registerUser(s.baseUrl, "broken");
      // The token is not yet in the cache, so the lookup reaches the closed database.
      await s.homeserver.storage.close();
      const res = await request(s.baseUrl, "GET", `${WHOAMI}?case=failure`, { token: access_token });
      assert.equal(res.status, 500);
      assert.equal(res.body.errcode, "M_UNKNOWN");
      assert.equal(res.body.error, "Internal server error", "the cause is logged, not served");
      const line = requestLines(`${WHOAMI}?case=failure`)[0];
      assert.equal(line?.status, 500);
      const error = lines().find((l) => l.msg === "unhandled error" && l.reqId === line.reqId);
      assert.ok(error, `an error line with reqId ${line.reqId}`);
      assert.equal(error.level, 50);
      assert.match(error.err?.message ?? "", /\S/);
    } finally {
      await s.stop();
    }
  });
});

describe("the production log destination", () => {
  test("writes the lines of one event-loop turn together, in order, before the next turn", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "switchboard-log-"));
    try {
      const file = path.join(dir, "out.log");
      const logger = createLogger("info", new TurnBatchedDestination(pino.destination({ dest: file, sync: true })));
      for (let i = 0; i < 1000; i++) logger.info({ i }, "line");
      assert.equal(readFileSync(file, "utf8"), "", "held until the turn ends");
      await new Promise((resolve) => setImmediate(resolve));
      const got = readFileSync(file, "utf8").trim().split("\n").map((l) => (JSON.parse(l) as { i: number }).i);
      assert.deepEqual(got, Array.from({ length: 1000 }, (_, i) => i));
      logger.info({ i: 1000 }, "line");
      await new Promise<void>((resolve, reject) => logger.flush((err) => (err ? reject(err) : resolve())));
      assert.match(readFileSync(file, "utf8"), /"i":1000/, "flush writes what is pending");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("loses nothing when the process exits in the same turn, or dies of an uncaught error", () => {
    const logging = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "src", "http", "logging.js");
    for (const [ending, status] of [
      ["process.exit(3);", 3],
      ['throw new Error("boom");', 1],
    ] as const) {
      const script = `
        const { createLogger, logDestination } = await import(${JSON.stringify(logging)});
        const logger = createLogger("info", logDestination());
        for (let i = 0; i < 100; i++) logger.info({ i }, "last words");
        ${ending}
      `;
      const run = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
      assert.equal(run.status, status, run.stderr);
      const got = run.stdout.trim().split("\n").map((l) => (JSON.parse(l) as { i: number }).i);
      assert.deepEqual(got, Array.from({ length: 100 }, (_, i) => i), ending);
    }
  });
});
