/**
 * For the `switchboard doctor` tests: a Switchboard whose public URL, server name and listener
 * agree on one loopback port (so that the doctor's discovery chain is the real one), a stand-in
 * LiveKit SFU that checks tokens the way LiveKit does, a stand-in lk-jwt-service, a proxy that
 * mangles CORS headers and one that does not pass WebSocket upgrades.
 */
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { AccessToken, TokenVerifier } from "livekit-server-sdk";
import { livekitRoomAlias } from "../../src/services/livekit/naming.js";
import { runDoctor, type Configured } from "../../src/cli/doctor/runner.js";
import type { DoctorOptions } from "../../src/cli/doctor/context.js";
import type { CheckResult, DoctorReport } from "../../src/cli/doctor/report.js";
import { encodeRequest, METHOD, requestedTransportUdp, udpChannel } from "../../src/cli/doctor/stun.js";
import { freePort } from "./ports.js";
import { NO_LIMIT, registerUser, startServer, type TestServer } from "./server.js";

export const SFU_KEY = "doctorkey";
export const SFU_SECRET = "doctor-sfu-secret-0123456789-abcdefghij";
export const PASSWORD = "doctor test password";

/** The `Sec-WebSocket-Accept` RFC 6455 derives from a `Sec-WebSocket-Key`. */
const wsAccept = (key: string) => createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");

/** A whole HTTP/1.1 answer written straight to a socket, then closed. */
function rawAnswer(socket: Socket, status: number, reason: string, body = ""): void {
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

/**
 * Plays the parts of LiveKit the doctor and the bundled JWT service meet: the Twirp
 * RoomService (CreateRoom, authorised by a token signed with a key pair it knows, 401
 * `unauthenticated` otherwise), `GET /rtc/validate?access_token=…` (200 for a good token,
 * 401 for a bad one, 404 for a room that does not exist), and the WebSocket at `/rtc` (101 for a
 * good token, 400 to a plain GET without the upgrade), as livekit-server 1.x answers them.
 */
export class FakeSfu {
  readonly rooms = new Set<string>();
  readonly validated: string[] = [];
  /** The rooms of the WebSockets opened (and at once closed). */
  readonly opened: string[] = [];
  readonly #verifier = new TokenVerifier(SFU_KEY, SFU_SECRET);
  readonly #server = http
    .createServer((req, res) => void this.#handle(req, res))
    .on("upgrade", (req: http.IncomingMessage, socket: Socket) => void this.#upgrade(req, socket));

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    return `ws://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  async #verify(token: string | undefined | null): Promise<{ video?: { room?: string } } | undefined> {
    if (!token) return undefined;
    try {
      return (await this.#verifier.verify(token)) as { video?: { room?: string } };
    } catch {
      return undefined;
    }
  }

  async #upgrade(req: http.IncomingMessage, socket: Socket): Promise<void> {
    socket.on("error", () => undefined);
    const url = new URL(req.url ?? "/", "http://sfu.invalid");
    const key = req.headers["sec-websocket-key"];
    if (url.pathname !== "/rtc" || typeof key !== "string") return rawAnswer(socket, 404, "Not Found");
    const claims = await this.#verify(url.searchParams.get("access_token"));
    if (!claims) return rawAnswer(socket, 401, "Unauthorized", "invalid authorization token");
    if (!claims.video?.room || !this.rooms.has(claims.video.room)) return rawAnswer(socket, 404, "Not Found", "requested room does not exist");
    this.opened.push(claims.video.room);
    socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${wsAccept(key)}\r\n\r\n`);
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let text = "";
    for await (const chunk of req) text += (chunk as Buffer).toString("utf8");
    const url = new URL(req.url ?? "/", "http://sfu.invalid");
    // The WebSocket endpoint asked without the upgrade (a proxy dropped it): gorilla/websocket's answer.
    if (url.pathname === "/rtc") return void res.writeHead(400).end("Bad Request\n");
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === "/rtc/validate") {
      const claims = await this.#verify(url.searchParams.get("access_token"));
      if (!claims) return void res.writeHead(401).end("invalid authorization token");
      if (!claims.video?.room || !this.rooms.has(claims.video.room)) return void res.writeHead(404).end("requested room does not exist");
      this.validated.push(claims.video.room);
      return void res.writeHead(200).end("success");
    }
    if (url.pathname === "/twirp/livekit.RoomService/CreateRoom") {
      const claims = await this.#verify(req.headers.authorization?.replace(/^Bearer /, ""));
      if (!claims) return json(401, { code: "unauthenticated", msg: "invalid token" });
      const name = String((JSON.parse(text || "{}") as { name?: unknown }).name);
      this.rooms.add(name);
      return json(200, { sid: "RM_doctor", name });
    }
    json(404, { code: "bad_route", msg: "not here" });
  }
}

/**
 * A small lk-jwt-service for another homeserver's users: `/healthz`, and `/get_token` checking
 * the OpenID token at `homeserver`'s userinfo endpoint, then creating the room on the SFU's API
 * (Twirp CreateRoom at `apiUrl`, the http form of `sfuUrl` unless given, signed with its own
 * `secret`) and minting a token for it. When CreateRoom fails, for whatever reason, it answers
 * as lk-jwt-service does (handler.go): `500 {"errcode":"M_UNKNOWN","error":"Unable to create
 * room on SFU"}`, with the JSON and CORS headers it sets on every /get_token answer.
 */
export class FakeJwtService {
  readonly #server = http.createServer((req, res) => void this.#handle(req, res));
  constructor(
    private readonly homeserver: () => string,
    private readonly sfuUrl: string,
    private readonly options: { secret?: string; apiUrl?: string } = {},
  ) {}

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  /** lk-jwt-service's CreateLiveKitRoom: the RoomService client with LIVEKIT_URL, LIVEKIT_KEY and LIVEKIT_SECRET. */
  async #createRoom(room: string): Promise<boolean> {
    const api = new URL(this.options.apiUrl ?? this.sfuUrl);
    api.protocol = api.protocol === "wss:" ? "https:" : api.protocol === "ws:" ? "http:" : api.protocol;
    const token = new AccessToken(SFU_KEY, this.options.secret ?? SFU_SECRET, { ttl: 600 });
    token.addGrant({ roomCreate: true });
    try {
      const reply = await fetch(`${api.origin}/twirp/livekit.RoomService/CreateRoom`, {
        method: "POST",
        headers: { authorization: `Bearer ${await token.toJwt()}`, "content-type": "application/json" },
        body: JSON.stringify({ name: room, empty_timeout: 300, departure_timeout: 20 }),
      });
      return reply.ok;
    } catch {
      return false;
    }
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let text = "";
    for await (const chunk of req) text += (chunk as Buffer).toString("utf8");
    // lk-jwt-service's corsJSON headers, then json.NewEncoder(w).Encode (hence the newline).
    const cors = {
      "content-type": "application/json",
      "access-control-allow-origin": "*",
      "access-control-allow-methods": "POST",
      "access-control-allow-headers": "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token",
    };
    const json = (status: number, body: unknown) => void res.writeHead(status, cors).end(`${JSON.stringify(body)}\n`);
    if (req.url === "/healthz") return void res.writeHead(200).end();
    if (req.method === "OPTIONS") return void res.writeHead(200, cors).end();
    if (req.url !== "/get_token" || req.method !== "POST") return json(404, { errcode: "M_NOT_FOUND", error: "no" });
    const body = JSON.parse(text) as { room_id: string; slot_id: string; openid_token: { access_token: string }; member: { id: string; claimed_user_id: string } };
    const check = await fetch(`${this.homeserver()}/_matrix/federation/v1/openid/userinfo?access_token=${encodeURIComponent(body.openid_token.access_token)}`);
    const who = (await check.json()) as { sub?: string };
    if (!check.ok || who.sub !== body.member.claimed_user_id) return json(401, { errcode: "M_UNAUTHORIZED", error: "The request could not be authorised." });
    const room = livekitRoomAlias(body.room_id, body.slot_id);
    if (!(await this.#createRoom(room))) return json(500, { errcode: "M_UNKNOWN", error: "Unable to create room on SFU" });
    const token = new AccessToken(SFU_KEY, this.options.secret ?? SFU_SECRET, { identity: `${who.sub}|${body.member.id}`, ttl: 3600 });
    token.addGrant({ roomJoin: true, room, canPublish: true, canSubscribe: true, roomCreate: false });
    json(200, { url: this.sfuUrl, jwt: await token.toJwt() });
  }
}

export interface DoctorServer {
  server: TestServer;
  /** `127.0.0.1:PORT`: the server name, which also is where it listens. */
  name: string;
  baseUrl: string;
  user: string;
}

/**
 * A Switchboard at `127.0.0.1:PORT` with a user; `overrides` go into its config, `resources`
 * (default client and federation) into its listener.
 */
export async function startDoctorServer(overrides: Record<string, unknown> = {}, resources = ["client", "federation"]): Promise<DoctorServer> {
  const port = await freePort();
  const name = `127.0.0.1:${port}`;
  const server = await startServer({
    server_name: name,
    public_baseurl: `http://${name}/`,
    listeners: [{ port, bind_addresses: ["127.0.0.1"], resources: [{ names: resources }] }],
    rc_rtc_transports: NO_LIMIT,
    ...overrides,
  });
  const user = "doctor";
  await registerUser(server.baseUrl, user, PASSWORD);
  return { server, name, baseUrl: `http://${name}`, user };
}

/** The `livekit` block for a (fake or real) SFU at `url`. */
export const livekitBlock = (url: string, secret = SFU_SECRET) => ({ livekit: { url, api_key: SFU_KEY, api_secret: secret } });

/** The doctor, in process, as `switchboard doctor NAME --insecure-http --user … --password …` would run it. */
export function doctorOn(target: DoctorServer, opts: Partial<DoctorOptions> = {}, configured?: Configured): Promise<DoctorReport> {
  return runDoctor({ server: target.name, insecureHttp: true, user: target.user, password: PASSWORD, delayMs: 1000, ...opts }, configured);
}

export const failures = (report: DoctorReport): CheckResult[] => report.checks.filter((c) => c.status === "fail");

/** Every check, one per line, for assertion messages. */
export const dump = (report: DoctorReport): string => report.checks.map((c) => `${c.status} ${c.id}: ${c.got}${c.cause ? ` | ${c.cause}` : ""}`).join("\n");

/**
 * A reverse proxy in front of `target()` that rewrites the CORS header of the answers under
 * `prefix`: `strip` removes it, `double` adds a second copy (as a proxy with its own add_header does).
 */
export async function corsProxy(
  target: () => string,
  mode: "strip" | "double",
  prefix = "/.well-known/matrix/client",
): Promise<{ name: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const upstream = http.request(target() + (req.url ?? "/"), { method: req.method, headers: req.headers }, (up) => {
      const headers = { ...up.headers } as Record<string, string | string[] | undefined>;
      if ((req.url ?? "").startsWith(prefix)) {
        if (mode === "strip") delete headers["access-control-allow-origin"];
        else headers["access-control-allow-origin"] = ["*", "*"];
      }
      res.writeHead(up.statusCode ?? 502, headers as http.OutgoingHttpHeaders);
      up.pipe(res);
    });
    upstream.on("error", () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
    req.pipe(upstream);
  });
  return listenOnLoopback(server);
}

/** Starts a test proxy on a free loopback port: its `host:port` name, and how to close it. */
async function listenOnLoopback(server: http.Server): Promise<{ name: string; close(): Promise<void> }> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    name: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * A reverse proxy in front of `target()` that passes plain requests but not WebSocket upgrades:
 * it drops `Upgrade` and `Connection` and forwards the request as a plain GET, as nginx does
 * without `proxy_set_header Upgrade $http_upgrade`, and returns whatever that gets.
 */
export async function noUpgradeProxy(target: () => string): Promise<{ name: string; close(): Promise<void> }> {
  const forward = (req: http.IncomingMessage, headers: http.IncomingHttpHeaders, answer: (up: http.IncomingMessage) => void, fail: () => void) => {
    const upstream = http.request(target() + (req.url ?? "/"), { method: req.method, headers }, answer);
    upstream.on("error", fail);
    req.pipe(upstream);
  };
  const server = http.createServer((req, res) =>
    forward(req, req.headers, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    }, () => (res.headersSent ? res.destroy() : res.writeHead(502).end())),
  );
  server.on("upgrade", (req: http.IncomingMessage, socket: Socket) => {
    socket.on("error", () => undefined);
    const headers = { ...req.headers };
    for (const name of ["upgrade", "connection", "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"]) delete headers[name];
    forward(req, headers, (up) => {
      const chunks: Buffer[] = [];
      up.on("data", (c: Buffer) => chunks.push(c));
      up.on("end", () => rawAnswer(socket, up.statusCode ?? 502, up.statusMessage ?? "", Buffer.concat(chunks).toString("utf8")));
    }, () => rawAnswer(socket, 502, "Bad Gateway"));
  });
  return listenOnLoopback(server);
}

export const haveCoturn = spawnSync("which", ["turnserver"]).status === 0;

/** A real coturn in shared-secret mode on a free loopback port, answering once this returns. */
export async function startCoturn(secret: string): Promise<{ port: number; stop(): void }> {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-doctor-coturn-"));
  const port = await freePort();
  const relayBase = 49160 + (port % 200) * 4;
  const turn = spawn(
    "turnserver",
    [
      "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", `--listening-port=${port}`,
      `--min-port=${relayBase}`, `--max-port=${relayBase + 40}`, "--realm=doctor.test",
      "--use-auth-secret", `--static-auth-secret=${secret}`, "--allow-loopback-peers", "--no-tls", "--no-dtls",
      "--no-cli", `--userdb=${path.join(dir, "turndb")}`, "--simple-log", "--fingerprint",
    ],
    { stdio: "ignore" },
  );
  const stop = () => {
    turn.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };
  // Ready once it answers an unauthenticated Allocate (with its 401 challenge).
  for (let i = 0; ; i++) {
    if (turn.exitCode !== null) throw (stop(), new Error(`turnserver exited (${turn.exitCode}); is port ${port} taken?`));
    const channel = await udpChannel("127.0.0.1", port, 1000);
    const answered = await channel.exchange(encodeRequest(METHOD.allocate, [requestedTransportUdp()])).then(() => true, () => false);
    channel.close();
    if (answered) break;
    if (i === 20) throw (stop(), new Error("turnserver never answered"));
  }
  return { port, stop };
}
