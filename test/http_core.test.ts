/**
 * The HTTP core (issue 2, section 5) and discovery endpoints, over real HTTP:
 * the Matrix error envelope, CORS, tokens, X-Forwarded-For, and the
 * unauthenticated discovery documents.
 */
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { beginDraining } from "../src/http/server.js";
import { registerUser, request, startBareApp, startServer, type Reply, type TestServer } from "./helpers/server.js";

const LOGIN = "/_matrix/client/v3/login";
const WHOAMI = "/_matrix/client/v3/account/whoami";

function assertError(res: Reply, status: number, errcode: string): void {
  assert.equal(res.status, status, `expected ${status} ${errcode}, got ${res.status} ${JSON.stringify(res.body)}`);
  assert.equal(res.body.errcode, errcode);
  assert.equal(typeof res.body.error, "string");
}

function assertCors(res: Reply): void {
  assert.equal(res.headers.get("access-control-allow-origin"), "*");
  const methods = (res.headers.get("access-control-allow-methods") ?? "").split(/,\s*/);
  for (const m of ["GET", "POST", "PUT", "DELETE", "OPTIONS"]) assert.ok(methods.includes(m), `allow-methods lacks ${m}`);
  const headers = (res.headers.get("access-control-allow-headers") ?? "").toLowerCase().split(/,\s*/);
  for (const h of ["x-requested-with", "content-type", "authorization"]) assert.ok(headers.includes(h), `allow-headers lacks ${h}`);
}

let server: TestServer;
let token: string;

before(async () => {
  server = await startServer({
    max_request_body_size: "1K",
    public_baseurl: "https://matrix.example.org/",
    serve_server_wellknown: true,
    extra_well_known_client_content: {
      "m.homeserver": { base_url: "https://evil.example.net/" },
      "m.identity_server": { base_url: "https://id.example.org" },
      "org.example.custom": { answer: 42 },
    },
  });
  token = (await registerUser(server.baseUrl, "core")).access_token;
});
after(async () => server?.stop());

describe("Matrix error envelope", () => {
  test("an unknown path is 404 M_UNRECOGNIZED", async () => {
    assertError(await request(server.baseUrl, "GET", "/_matrix/client/v3/no_such_thing"), 404, "M_UNRECOGNIZED");
    assertError(await request(server.baseUrl, "POST", "/nowhere", { body: {} }), 404, "M_UNRECOGNIZED");
  });

  test("a known path with the wrong method is 405 M_UNRECOGNIZED", async () => {
    assertError(await request(server.baseUrl, "PUT", LOGIN, { body: {} }), 405, "M_UNRECOGNIZED");
    assertError(await request(server.baseUrl, "POST", "/_matrix/client/versions", { body: {} }), 405, "M_UNRECOGNIZED");
    assertError(await request(server.baseUrl, "PATCH", "/_matrix/client/v3/devices/ABC", { token, body: {} }), 405, "M_UNRECOGNIZED");
  });

  test("a body that is not JSON is 400 M_NOT_JSON", async () => {
    assertError(await request(server.baseUrl, "POST", LOGIN, { body: "{not json" }), 400, "M_NOT_JSON");
    // Content type does not matter: Matrix bodies are JSON whatever the client says.
    assertError(
      await request(server.baseUrl, "POST", LOGIN, { body: "type=m.login.password", headers: { "content-type": "text/plain" } }),
      400,
      "M_NOT_JSON",
    );
    assertError(await request(server.baseUrl, "POST", LOGIN, { body: "" }), 400, "M_NOT_JSON");
  });

  test("JSON that is not an object is 400 M_BAD_JSON", async () => {
    for (const body of ["[1, 2]", "42", '"m.login.password"', "true", "null"]) {
      assertError(await request(server.baseUrl, "POST", LOGIN, { body }), 400, "M_BAD_JSON");
    }
  });

  test("fields of the wrong type are 400 M_BAD_JSON", async () => {
    assertError(await request(server.baseUrl, "POST", LOGIN, { body: { type: 123 } }), 400, "M_BAD_JSON");
    assertError(
      await request(server.baseUrl, "POST", LOGIN, { body: { type: "m.login.password", user: "core", password: 123 } }),
      400,
      "M_BAD_JSON",
    );
    // No coercion: "true" is not a boolean.
    assertError(
      await request(server.baseUrl, "POST", "/_matrix/client/v3/register", { body: { username: "x", inhibit_login: "true" } }),
      400,
      "M_BAD_JSON",
    );
  });

  test("a missing required field is 400 M_MISSING_PARAM", async () => {
    assertError(await request(server.baseUrl, "POST", LOGIN, { body: {} }), 400, "M_MISSING_PARAM");
    assertError(
      await request(server.baseUrl, "POST", "/_matrix/client/v3/account/password", { token, body: {} }),
      400,
      "M_MISSING_PARAM",
    );
  });

  test("a bad query parameter is 400 M_INVALID_PARAM", async () => {
    assertError(
      await request(server.baseUrl, "POST", "/_matrix/client/v3/register?kind=admin", { body: {} }),
      400,
      "M_INVALID_PARAM",
    );
  });

  test("a body over max_request_body_size is 413 M_TOO_LARGE", async () => {
    const big = { type: "m.login.password", user: "core", password: "x".repeat(2048) };
    const res = await request(server.baseUrl, "POST", LOGIN, { body: big });
    assertError(res, 413, "M_TOO_LARGE");
    assertCors(res);
    // Just under the limit is parsed as usual (and fails only on the password).
    const small = { type: "m.login.password", user: "core", password: "x".repeat(900) };
    assertError(await request(server.baseUrl, "POST", LOGIN, { body: small }), 403, "M_FORBIDDEN");
  });

  test("a path parameter that is not valid percent-encoding is 400 M_INVALID_PARAM", async () => {
    const res = await request(server.baseUrl, "GET", "/_matrix/client/v3/profile/%zz");
    assertError(res, 400, "M_INVALID_PARAM");
    assertCors(res);
  });

  test("a path parameter over 1,000 characters is 414 M_INVALID_PARAM", async () => {
    const res = await request(server.baseUrl, "GET", `/_matrix/client/v3/profile/@${"a".repeat(1200)}:localhost`);
    assertError(res, 414, "M_INVALID_PARAM");
    assertCors(res);
  });
});

describe("CORS", () => {
  test("on a success", async () => {
    const res = await request(server.baseUrl, "GET", "/_matrix/client/versions");
    assert.equal(res.status, 200);
    assertCors(res);
  });

  test("on errors", async () => {
    assertCors(await request(server.baseUrl, "GET", "/unknown/path"));
    assertCors(await request(server.baseUrl, "PUT", LOGIN, { body: {} }));
    assertCors(await request(server.baseUrl, "POST", LOGIN, { body: "{" }));
    assertCors(await request(server.baseUrl, "GET", WHOAMI));
    assertCors(await request(server.baseUrl, "GET", WHOAMI, { token: "nope" }));
  });

  test("OPTIONS preflight answers 200 with CORS headers on any path", async () => {
    const preflight = {
      origin: "https://app.example.com",
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization, content-type",
    };
    for (const path of [LOGIN, WHOAMI, "/_matrix/client/v3/devices/ABC", "/_matrix/client/v3/not/a/route", "/.well-known/matrix/client"]) {
      const res = await request(server.baseUrl, "OPTIONS", path, { headers: preflight });
      assert.equal(res.status, 200, `OPTIONS ${path}`);
      assertCors(res);
    }
  });
});

describe("access tokens", () => {
  test("a missing token is 401 M_MISSING_TOKEN", async () => {
    assertError(await request(server.baseUrl, "GET", WHOAMI), 401, "M_MISSING_TOKEN");
    assertError(await request(server.baseUrl, "GET", "/_matrix/client/v3/devices"), 401, "M_MISSING_TOKEN");
  });

  test("an unknown token is 401 M_UNKNOWN_TOKEN with soft_logout false", async () => {
    const res = await request(server.baseUrl, "GET", WHOAMI, { token: "sbt_not_a_real_token" });
    assertError(res, 401, "M_UNKNOWN_TOKEN");
    assert.equal(res.body.soft_logout, false);
    const q = await request(server.baseUrl, "GET", `${WHOAMI}?access_token=sbt_not_a_real_token`);
    assertError(q, 401, "M_UNKNOWN_TOKEN");
    assert.equal(q.body.soft_logout, false);
  });

  test("the token is accepted from the Authorization header and from ?access_token=", async () => {
    const byHeader = await request(server.baseUrl, "GET", WHOAMI, { token });
    assert.equal(byHeader.status, 200);
    assert.equal(byHeader.body.user_id, "@core:localhost");
    const byQuery = await request(server.baseUrl, "GET", `${WHOAMI}?access_token=${encodeURIComponent(token)}`);
    assert.equal(byQuery.status, 200);
    assert.deepEqual(byQuery.body, byHeader.body);
  });
});

describe("X-Forwarded-For", () => {
  const limit = { per_second: 0.001, burst_count: 2 };
  const NO_LIMIT = { per_second: 1000, burst_count: 1000 };

  async function loginFrom(baseUrl: string, ip: string): Promise<Reply> {
    return request(baseUrl, "POST", LOGIN, {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: "nobody" }, password: "x" },
      headers: { "x-forwarded-for": ip },
    });
  }

  test("is ignored on a listener without x_forwarded", async () => {
    const s = await startServer({ rc_login: { address: limit, account: NO_LIMIT, failed_attempts: NO_LIMIT } });
    try {
      assertError(await loginFrom(s.baseUrl, "192.0.2.1"), 403, "M_FORBIDDEN");
      assertError(await loginFrom(s.baseUrl, "192.0.2.2"), 403, "M_FORBIDDEN");
      // Every request comes from 127.0.0.1, whatever the header says.
      assertError(await loginFrom(s.baseUrl, "192.0.2.3"), 429, "M_LIMIT_EXCEEDED");
    } finally {
      await s.stop();
    }
  });

  test("gives the client address on a listener with x_forwarded", async () => {
    const s = await startServer({
      listeners: [{ port: 0, bind_addresses: ["127.0.0.1"], x_forwarded: true }],
      rc_login: { address: limit, account: NO_LIMIT, failed_attempts: NO_LIMIT },
    });
    try {
      assertError(await loginFrom(s.baseUrl, "192.0.2.1"), 403, "M_FORBIDDEN");
      assertError(await loginFrom(s.baseUrl, "192.0.2.1"), 403, "M_FORBIDDEN");
      assertError(await loginFrom(s.baseUrl, "192.0.2.1"), 429, "M_LIMIT_EXCEEDED");
      // Another client behind the same proxy has its own budget.
      assertError(await loginFrom(s.baseUrl, "192.0.2.2"), 403, "M_FORBIDDEN");
      assertError(await loginFrom(s.baseUrl, "192.0.2.2"), 403, "M_FORBIDDEN");
      assertError(await loginFrom(s.baseUrl, "192.0.2.2"), 429, "M_LIMIT_EXCEEDED");
    } finally {
      await s.stop();
    }
  });
});

describe("discovery", () => {
  test("GET /_matrix/client/versions", async () => {
    const res = await request(server.baseUrl, "GET", "/_matrix/client/versions");
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
    const { versions, unstable_features } = res.body as { versions: unknown; unstable_features: Record<string, unknown> };
    assert.ok(Array.isArray(versions) && versions.length > 0);
    for (const v of versions) assert.match(v as string, /^(r0\.\d+\.\d+|v1\.\d+)$/);
    assert.ok(versions.includes("v1.1"));
    // v1.2 brings /hierarchy and v1.3 /relations, which are not here yet, and clients that see
    // those versions call them. v1.11 is there for authenticated media, which clients look for
    // by that exact string.
    assert.deepEqual(versions, ["r0.6.1", "v1.1", "v1.11"]);
    for (const path of ["/_matrix/client/v1/rooms/!r:localhost/hierarchy", "/_matrix/client/v1/rooms/!r:localhost/relations/$e"]) {
      assert.equal((await request(server.baseUrl, "GET", path, { token })).body.errcode, "M_UNRECOGNIZED", path);
    }
    assert.equal(unstable_features["org.matrix.msc2285.stable"], true, "private read receipts work");
    assert.ok(typeof unstable_features === "object" && unstable_features !== null && !Array.isArray(unstable_features));
    for (const [k, v] of Object.entries(unstable_features)) assert.equal(typeof v, "boolean", k);
    // Authenticated, the same answer.
    const authed = await request(server.baseUrl, "GET", "/_matrix/client/versions", { token });
    assert.equal(authed.status, 200);
    assert.deepEqual(authed.body, res.body);
  });

  test("GET /.well-known/matrix/client merges extra content but keeps m.homeserver", async () => {
    const res = await request(server.baseUrl, "GET", "/.well-known/matrix/client");
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
    assertCors(res);
    assert.deepEqual(res.body["m.homeserver"], { base_url: "https://matrix.example.org/" });
    assert.deepEqual(res.body["m.identity_server"], { base_url: "https://id.example.org" });
    assert.deepEqual(res.body["org.example.custom"], { answer: 42 });
  });

  test("GET /.well-known/matrix/server is served with serve_server_wellknown", async () => {
    const res = await request(server.baseUrl, "GET", "/.well-known/matrix/server");
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { "m.server": "matrix.example.org:443" });
  });

  test("GET /.well-known/matrix/server is 404 M_UNRECOGNIZED without serve_server_wellknown", async () => {
    const s = await startServer({ public_baseurl: "http://hs.example.org:8008/" });
    try {
      assertError(await request(s.baseUrl, "GET", "/.well-known/matrix/server"), 404, "M_UNRECOGNIZED");
      // Another method on the path is 405, served or not, as on every known path.
      assertError(await request(s.baseUrl, "POST", "/.well-known/matrix/server"), 405, "M_UNRECOGNIZED");
      assertError(await request(server.baseUrl, "POST", "/.well-known/matrix/server"), 405, "M_UNRECOGNIZED");
      const client = await request(s.baseUrl, "GET", "/.well-known/matrix/client");
      assert.equal(client.status, 200);
      assert.deepEqual(client.body, { "m.homeserver": { base_url: "http://hs.example.org:8008/" } });
    } finally {
      await s.stop();
    }
  });

  test("GET /capabilities", async () => {
    assertError(await request(server.baseUrl, "GET", "/_matrix/client/v3/capabilities"), 401, "M_MISSING_TOKEN");
    const res = await request(server.baseUrl, "GET", "/_matrix/client/v3/capabilities", { token });
    assert.equal(res.status, 200);
    const caps = res.body.capabilities as Record<string, { enabled?: boolean }>;
    assert.equal(typeof caps, "object");
    assert.deepEqual(caps["m.change_password"], { enabled: true });
    assert.deepEqual(caps["m.set_displayname"], { enabled: true });
    assert.deepEqual(caps["m.set_avatar_url"], { enabled: true });
    assert.deepEqual(caps["m.3pid_changes"], { enabled: false });
  });

  test("GET /health", async () => {
    const res = await fetch(`${server.baseUrl}/health`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "OK");
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
  });
});

describe("closing", () => {
  test("a request that arrives once the close has begun is 503 M_UNKNOWN, with CORS headers", async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let reached!: () => void;
    const slowArrived = new Promise<void>((resolve) => (reached = resolve));
    let closeBegan!: () => void;
    const closing = new Promise<void>((resolve) => (closeBegan = resolve));
    const { app, baseUrl } = await startBareApp((app) => {
      app.get("/slow", async () => {
        reached();
        await held;
        return { ok: true };
      });
      app.get("/quick", () => ({ ok: true }));
      app.addHook("preClose", async () => closeBegan());
    });
    const port = Number(new URL(baseUrl).port);
    // A connection busy with a request when the close begins, on which a second one then arrives.
    const socket = net.connect(port, "127.0.0.1");
    let received = "";
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => (received += chunk));
    const ended = new Promise<void>((resolve) => socket.on("close", () => resolve()));
    try {
      socket.write("GET /slow HTTP/1.1\r\nhost: x\r\n\r\n");
      await slowArrived;
      const closed = app.close();
      await closing;
      // The server must have read it before the first answer frees the connection.
      const quickRead = new Promise<void>((resolve) => app.server.on("request", (req: http.IncomingMessage) => req.url === "/quick" && resolve()));
      socket.write("GET /quick HTTP/1.1\r\nhost: x\r\n\r\n");
      await quickRead;
      release();
      await ended;
      await closed;
      const responses = received.split(/(?=HTTP\/1\.1 )/);
      assert.equal(responses.length, 2, received);
      assert.match(responses[0]!, /^HTTP\/1\.1 200 /);
      assert.match(responses[1]!, /^HTTP\/1\.1 503 /);
      assert.match(responses[1]!, /\r\naccess-control-allow-origin: \*\r\n/i);
      assert.match(responses[1]!, /\r\nconnection: close\r\n/i);
      const body = JSON.parse(responses[1]!.slice(responses[1]!.indexOf("\r\n\r\n") + 4)) as Record<string, unknown>;
      assert.equal(body.errcode, "M_UNKNOWN");
      assert.match(String(body.error), /shutting down/);
    } finally {
      release();
      socket.destroy();
      await app.close();
    }
  });
});

describe("draining, when stopping begins", () => {
  interface Got {
    status: number | undefined;
    connection: string | undefined;
  }
  const get = (url: string, agent: http.Agent) =>
    new Promise<Got>((resolve, reject) => {
      http
        .get(url, { agent }, (res) => {
          res.resume();
          res.on("end", () => resolve({ status: res.statusCode, connection: res.headers.connection }));
        })
        .on("error", reject);
    });

  test("responses in flight, and requests on idle keep-alive connections, end their connections", async () => {
    let reached!: () => void;
    const slowArrived = new Promise<void>((resolve) => (reached = resolve));
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const { app, baseUrl: base } = await startBareApp((app) => {
      app.get("/quick", (_request, reply) => reply.send({ ok: true }));
      app.get("/slow", async () => {
        reached();
        await held;
        return { ok: true };
      });
    });
    const idle = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const busy = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await get(`${base}/quick`, idle);
      assert.equal(first.connection, "keep-alive", "an idle keep-alive connection to reuse");
      const slow = get(`${base}/slow`, busy);
      await slowArrived;

      beginDraining(app);
      const reused = await get(`${base}/quick`, idle);
      assert.equal(reused.status, 200, "requests are still served until the server closes");
      assert.equal(reused.connection, "close");
      release();
      const inFlight = await slow;
      assert.equal(inFlight.status, 200);
      assert.equal(inFlight.connection, "close");
      // Nothing is left open for the close to wait on.
      await app.close();
    } finally {
      release();
      idle.destroy();
      busy.destroy();
      await app.close();
    }
  });
});
