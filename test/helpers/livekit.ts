/**
 * Test scaffolding for the bundled LiveKit service: a Switchboard with
 * `livekit` configured (and, optionally, a CA and name resolution for its
 * outbound calls), a stand-in for LiveKit's Twirp server API, a test CA made
 * with openssl, and a TLS front for a second Switchboard acting as a remote
 * homeserver. No LiveKit SFU can run on this machine (none is packaged for
 * npm or Debian), so the SFU's API is played by a recording HTTP server.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { AccessToken } from "livekit-server-sdk";
import pino from "pino";
import type { Dialer, OutboundOptions, SrvRecord } from "../../src/services/livekit/outbound.js";
import { NO_LIMIT, request, startServer, type TestServer } from "./server.js";

export const LK_KEY = "devkey";
export const LK_SECRET = "lk-test-secret-0123456789-abcdefghijklmnop";
export { NO_LIMIT };

export interface LiveKitServerOptions {
  outbound?: OutboundOptions;
  /** A pino destination, to read the log lines. */
  logStream?: NodeJS.WritableStream;
  /** The data folder (and so the database) to use, shared with another server; the caller removes it. */
  dir?: string;
}

/** A Switchboard with `livekit` set; `livekit` overrides are merged into the block. */
export async function startLiveKitServer(
  overrides: Record<string, unknown> = {},
  opts: LiveKitServerOptions = {},
): Promise<TestServer> {
  const { livekit, ...rest } = overrides as { livekit?: Record<string, unknown> };
  const logger = opts.logStream ? pino({ level: "trace" }, opts.logStream) : undefined;
  return startServer(
    {
      public_baseurl: "http://localhost:8008/",
      rc_rtc_transports: NO_LIMIT,
      ...rest,
      ...(livekit === null ? {} : { livekit: { url: "ws://127.0.0.1:7880", api_key: LK_KEY, api_secret: LK_SECRET, ...livekit } }),
    },
    { logger, dir: opts.dir, homeserver: { outbound: opts.outbound } },
  );
}

export interface TwirpCall {
  method: string;
  body: Record<string, unknown>;
  authorization: string | undefined;
}

/**
 * Plays LiveKit's RoomService API (Twirp, JSON): records calls, answers CreateRoom and GetParticipant.
 * It cannot play the SFU itself: a client's WebSocket connection (the signal channel, `/rtc`) is
 * recorded and refused, or held open unanswered until `failSignal()`, so that a test decides when
 * the client learns that no SFU is there.
 */
export class FakeLiveKit {
  readonly calls: TwirpCall[] = [];
  /** `room\nidentity` of the participants GetParticipant finds. */
  readonly present = new Set<string>();
  /** The WebSocket connections clients attempted: the path, and the LiveKit token they presented. */
  readonly signalAttempts: { path: string; token: string | null }[] = [];
  #holdSignal = false;
  readonly #held = new Set<import("node:net").Socket>();
  #server = http.createServer((req, res) => this.#handle(req, res)).on("upgrade", (req: http.IncomingMessage, socket: import("node:net").Socket) => {
    const url = new URL(req.url ?? "/", "http://sfu.invalid");
    this.signalAttempts.push({ path: url.pathname, token: url.searchParams.get("access_token") });
    // Node drops its own error listener on upgrade: a browser resetting the socket must not crash the test.
    socket.on("error", () => {});
    if (this.#holdSignal) {
      this.#held.add(socket);
      socket.once("close", () => this.#held.delete(socket));
      return;
    }
    socket.end("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  });

  /** From now on, WebSocket connections are held open without an answer. */
  holdSignal(): void {
    this.#holdSignal = true;
  }

  /** Drops the held WebSocket connections, and refuses new ones (503). */
  failSignal(): void {
    this.#holdSignal = false;
    for (const socket of this.#held) socket.destroy();
    this.#held.clear();
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    return `ws://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    this.failSignal();
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  of(method: string): TwirpCall[] {
    return this.calls.filter((c) => c.method === method);
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    let text = "";
    req.on("data", (c: Buffer) => (text += c.toString("utf8")));
    req.on("end", () => {
      const method = /^\/twirp\/livekit\.RoomService\/(\w+)$/.exec(req.url ?? "")?.[1] ?? req.url ?? "";
      const body = (text ? JSON.parse(text) : {}) as Record<string, unknown>;
      this.calls.push({ method, body, authorization: req.headers.authorization });
      const reply = (status: number, json: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(json));
      };
      if (method === "CreateRoom") {
        reply(200, { sid: "RM_test", name: body.name, emptyTimeout: body.emptyTimeout, creationTime: String(Math.floor(Date.now() / 1000)) });
      } else if (method === "GetParticipant") {
        if (this.present.has(`${String(body.room)}\n${String(body.identity)}`)) reply(200, { sid: "PA_test", identity: body.identity, state: "ACTIVE" });
        else reply(404, { code: "not_found", msg: "participant does not exist" });
      } else {
        reply(404, { code: "bad_route", msg: `no handler for ${method}` });
      }
    });
  }
}

/** A CA and a server certificate for `names` (and IP addresses `ips`, for IP-literal server names), made with openssl in a temporary folder. */
export function makeTestCa(names: string[], ips: string[] = []): { ca: string; key: string; cert: string } {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-ca-"));
  const run = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  try {
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=Switchboard test CA");
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", `/CN=${names[0]}`);
    writeFileSync(path.join(dir, "ext.cnf"), `subjectAltName=${[...names.map((n) => `DNS:${n}`), ...ips.map((ip) => `IP:${ip}`)].join(",")}\n`);
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf");
    const read = (f: string) => readFileSync(path.join(dir, f), "utf8");
    return { ca: read("ca.crt"), key: read("server.key"), cert: read("server.crt") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface TlsFront {
  port: number;
  /** Method and path (no query: it may hold a token) of each request passed on. */
  requests: string[];
  /** The plain-HTTP server to pass requests to; set once it is running. */
  target: string;
  close(): Promise<void>;
}

/** An HTTPS front that passes every request on to a plain-HTTP server, as a reverse proxy would. */
export async function tlsFront(tlsOpts: { key: string; cert: string }): Promise<TlsFront> {
  const front: TlsFront = {
    port: 0,
    requests: [],
    target: "",
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  const server = https.createServer(tlsOpts, (req, res) => {
    front.requests.push(`${req.method} ${(req.url ?? "").split("?")[0]}`);
    const upstream = http.request(front.target + (req.url ?? "/"), { method: req.method, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on("error", () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  front.port = (server.address() as AddressInfo).port;
  return front;
}

/** A resolver for made-up names: `host:port` or `host` to a local address; SRV records as given. */
export function testDialer(addresses: Record<string, { address: string; port?: number }>, srv: Record<string, SrvRecord[]> = {}): Dialer {
  return {
    async resolveSrv(name) {
      return srv[name] ?? [];
    },
    async resolveAddress(host, port) {
      const hit = addresses[`${host}:${port}`] ?? addresses[host];
      if (!hit) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
      return { address: hit.address, port: hit.port ?? port };
    },
  };
}

/** An OpenID token for a user, from the server they are on. */
export async function openIdToken(baseUrl: string, user: { user_id: string; access_token: string }): Promise<Record<string, unknown>> {
  const res = await request(baseUrl, "POST", `/_matrix/client/v3/user/${encodeURIComponent(user.user_id)}/openid/request_token`, {
    token: user.access_token,
    body: {},
  });
  if (res.status !== 200) throw new Error(`openid: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

/** Polls until `check` returns a value other than undefined, or fails after `ms`. */
export async function eventually<T>(check: () => Promise<T | undefined> | T | undefined, ms = 5000, what = "condition"): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Schedules the delayed "leave" of a call membership, as matrix-js-sdk does before joining; returns its delay ID. */
export async function scheduleLeave(baseUrl: string, user: { user_id: string; access_token: string; device_id: string }, roomId: string, delayMs: number): Promise<string> {
  const key = encodeURIComponent(`_${user.user_id}_${user.device_id}_m.call`);
  const res = await request(
    baseUrl,
    "PUT",
    `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/org.matrix.msc3401.call.member/${key}?org.matrix.msc4140.delay=${delayMs}`,
    { token: user.access_token, body: {} },
  );
  if (res.status !== 200 || typeof res.body.delay_id !== "string") throw new Error(`delayed leave: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.delay_id;
}

/** A LiveKit webhook as the SFU signs it: a token, under the API secret, that carries the body's SHA-256. */
export async function signedWebhook(event: Record<string, unknown>, secret = LK_SECRET): Promise<{ body: string; authorization: string }> {
  const body = JSON.stringify(event);
  const token = new AccessToken(LK_KEY, secret);
  token.sha256 = createHash("sha256").update(body).digest("base64");
  return { body, authorization: await token.toJwt() };
}

export async function postWebhook(baseUrl: string, event: Record<string, unknown>, secret?: string): Promise<number> {
  const { body, authorization } = await signedWebhook(event, secret);
  const res = await fetch(`${baseUrl}/livekit/jwt/sfu_webhook`, {
    method: "POST",
    headers: { authorization, "content-type": "application/webhook+json" },
    body,
  });
  await res.text();
  return res.status;
}
