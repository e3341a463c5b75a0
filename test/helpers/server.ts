/**
 * Starts a real Switchboard in-process, on a free loopback port, with its own
 * temporary SQLite file (or PostgreSQL database, see helpers/database.ts). Tests talk
 * to it over real HTTP.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import pino, { type Logger } from "pino";
import { configFromObject } from "../../src/config/load.js";
import { createHomeserver, type Homeserver, type HomeserverOptions } from "../../src/homeserver.js";
import { createHttpApp, type App } from "../../src/http/server.js";
import type { Clock } from "../../src/services/clock.js";
import { databaseSection, removeTestData } from "./database.js";

export interface TestServer {
  baseUrl: string;
  dir: string;
  homeserver: Homeserver;
  stop(): Promise<void>;
}

/** Generous limits so tests that are not about rate limiting never hit them. */
export const NO_LIMIT = { per_second: 1000, burst_count: 1000 };

export interface StartOptions {
  /** Reuse a folder (and so its database) across restarts; the caller removes both, with `removeTestData(dir)`. */
  dir?: string;
  clock?: Clock;
  /** Where the server logs; silent unless SWITCHBOARD_TEST_LOG sets a level. */
  logger?: Logger;
  homeserver?: HomeserverOptions;
}

export async function startServer(overrides: Record<string, unknown> = {}, opts: StartOptions = {}): Promise<TestServer> {
  const dir = opts.dir;
  const ownDir = dir ?? mkdtempSync(path.join(tmpdir(), "switchboard-test-"));
  try {
    return await startIn(ownDir, dir === undefined, overrides, opts);
  } catch (err) {
    // A server that never started leaves nothing behind either, unless the caller owns the folder.
    if (!dir) await removeTestData(ownDir);
    throw err;
  }
}

async function startIn(ownDir: string, owned: boolean, overrides: Record<string, unknown>, opts: StartOptions): Promise<TestServer> {
  const { config } = configFromObject(
    {
      server_name: "localhost",
      public_baseurl: "http://localhost/",
      listeners: [{ port: 0, bind_addresses: ["127.0.0.1"] }],
      database: await databaseSection(ownDir),
      signing_key_path: path.join(ownDir, "signing.key"),
      enable_registration: true,
      enable_registration_without_verification: true,
      rc_login: { address: NO_LIMIT, account: NO_LIMIT, failed_attempts: NO_LIMIT },
      rc_registration: NO_LIMIT,
      rc_message: NO_LIMIT,
      rc_delayed_event_mgmt: NO_LIMIT,
      log_level: "warn",
      ...overrides,
    },
    path.join(ownDir, "switchboard.yaml"),
  );
  const logger = opts.logger ?? pino({ level: process.env.SWITCHBOARD_TEST_LOG ?? "silent" });
  const homeserver = await createHomeserver(config, logger, opts.clock, opts.homeserver);
  let url: string | undefined;
  try {
    [url] = await homeserver.start();
  } catch (err) {
    await homeserver.stop().catch(() => undefined);
    throw err;
  }
  return {
    baseUrl: url!,
    dir: ownDir,
    homeserver,
    async stop() {
      await homeserver.stop();
      if (owned) await removeTestData(ownDir);
    },
  };
}

export interface Reply {
  status: number;
  headers: Headers;
  body: Record<string, unknown> & { errcode?: string; error?: string };
}

/** One HTTP request; a JSON body is sent as given when it is a string. */
export async function request(
  baseUrl: string,
  method: string,
  path: string,
  opts: { token?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let body: string | undefined;
  if (opts.body !== undefined) {
    body = typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body);
    headers["content-type"] ??= "application/json";
  }
  const res = await fetch(baseUrl + path, { method, headers, body });
  const text = await res.text();
  let parsed: Record<string, unknown>;
  try {
    parsed = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    parsed = { raw: text };
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** Registers a user through the UIA dummy flow and returns its login. */
export async function registerUser(
  baseUrl: string,
  username: string,
  password = "correct horse battery staple",
): Promise<{ user_id: string; access_token: string; device_id: string }> {
  const res = await request(baseUrl, "POST", "/_matrix/client/v3/register", {
    body: { username, password, auth: { type: "m.login.dummy" } },
  });
  if (res.status !== 200) throw new Error(`register ${username}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body as { user_id: string; access_token: string; device_id: string };
}

/** Waits (up to 15 s, for a loaded machine) for something the server does just after the client has its answer. */
export async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 1500 && !done(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  if (!done()) throw new Error("the server never did what was expected");
}

/**
 * Polls `check` until it answers something, as a client polling /sync would. No time limit of
 * its own: the test file's timeout bounds it (no timing threshold in tests).
 */
export async function eventually<T>(check: () => Promise<T | undefined>): Promise<T> {
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A bare HTTP app of the project's (`createHttpApp`) listening on a free loopback port. */
export interface BareApp {
  app: App;
  baseUrl: string;
  /** Every log line the app wrote, parsed; empty unless `logged` was set. */
  lines: LogLine[];
}

export interface LogLine {
  level: number;
  msg: string;
  err?: { message: string };
}

/** Makes an app with `createHttpApp`, lets `addRoutes` add to it, and starts it on loopback. */
export async function startBareApp(addRoutes: (app: App) => void, opts: { logged?: boolean } = {}): Promise<BareApp> {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n")) if (line) lines.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  const logger = opts.logged ? pino({ level: "info" }, sink) : pino({ level: "silent" });
  const app = createHttpApp({ logger, bodyLimit: 1024, trustProxy: false });
  addRoutes(app);
  await app.listen({ host: "127.0.0.1", port: 0 });
  const addr = app.server.address();
  return { app, baseUrl: `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`, lines };
}

/**
 * Runs teardown steps in order, each even if one before it failed, so that a failed step never
 * leaves a server, browser or child holding the test process open; then reports the failures.
 */
export async function teardown(...steps: (() => unknown)[]): Promise<void> {
  const failures: unknown[] = [];
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      failures.push(err);
    }
  }
  if (failures.length === 1) throw failures[0];
  if (failures.length > 1) throw new AggregateError(failures, "several teardown steps failed");
}
