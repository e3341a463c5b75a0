/**
 * The `livekit` config block: defaults, the checks made at load, the
 * transport Switchboard advertises for itself, and the API secret staying out
 * of everything served and logged.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, test } from "node:test";
import { inspect } from "node:util";
import { configFromObject } from "../src/config/load.js";
import { refusedProblems, refusedWith } from "./helpers/config.js";
import { FakeLiveKit, LK_KEY, LK_SECRET, openIdToken, startLiveKitServer } from "./helpers/livekit.js";
import { registerUser, request, type TestServer } from "./helpers/server.js";

const BASE = { server_name: "example.org", public_baseurl: "https://matrix.example.org/" };
const LK = { url: "wss://sfu.example.org", api_key: LK_KEY, api_secret: LK_SECRET };
const TRANSPORTS = "/_matrix/client/v1/rtc/transports";

const problemsOf = (raw: Record<string, unknown>, configPath?: string): string[] => refusedWith(() => configFromObject(raw, configPath));

describe("livekit config", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-lkcfg-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("defaults: path /livekit/jwt, full access for this server, advertised at public_baseurl + path", () => {
    const { config } = configFromObject({ ...BASE, livekit: LK });
    const lk = config.livekit!;
    assert.equal(lk.path, "/livekit/jwt");
    assert.deepEqual(lk.fullAccessHomeservers, ["example.org"]);
    assert.equal(lk.serviceUrl, "https://matrix.example.org/livekit/jwt");
    assert.equal(lk.sanityCheckIntervalMs, 30_000);
    assert.equal(lk.apiSecret.reveal(), LK_SECRET);
  });

  test("no livekit block, no LiveKit service", () => {
    assert.equal(configFromObject(BASE).config.livekit, undefined);
  });

  test("api_secret_path is read at load, relative to the config file, and trimmed", () => {
    writeFileSync(path.join(dir, "lk.secret"), `  ${LK_SECRET}\n`);
    const { config } = configFromObject(
      { ...BASE, livekit: { url: LK.url, api_key: LK_KEY, api_secret_path: "lk.secret" } },
      path.join(dir, "switchboard.yaml"),
    );
    assert.equal(config.livekit!.apiSecret.reveal(), LK_SECRET);
  });

  test("an unreadable api_secret_path is refused, naming the key and the file", () => {
    const problems = problemsOf(
      { ...BASE, livekit: { url: LK.url, api_key: LK_KEY, api_secret_path: "missing.secret" } },
      path.join(dir, "switchboard.yaml"),
    );
    assert.equal(problems.length, 1);
    assert.match(problems[0]!, /`livekit\.api_secret_path`: cannot read .*missing\.secret: ENOENT/);
  });

  test("exactly one of api_secret and api_secret_path", () => {
    assert.match(problemsOf({ ...BASE, livekit: { url: LK.url, api_key: LK_KEY } }).join(), /livekit\.api_secret/);
    writeFileSync(path.join(dir, "both.secret"), "x");
    const both = problemsOf({ ...BASE, livekit: { ...LK, api_secret_path: "both.secret" } }, path.join(dir, "s.yaml"));
    assert.match(both.join(), /exclude each other/);
  });

  test("the SFU URL must be wss://, or ws:// on a loopback host", () => {
    assert.match(problemsOf({ ...BASE, livekit: { ...LK, url: "ws://sfu.example.org" } }).join(), /`livekit\.url`.*wss:\/\//);
    assert.match(problemsOf({ ...BASE, livekit: { ...LK, url: "https://sfu.example.org" } }).join(), /livekit\.url/);
    const { warnings } = configFromObject({ ...BASE, livekit: { ...LK, url: "ws://127.0.0.1:7880" } });
    assert.match(warnings.join(), /ws:\/\//);
    // A DNS name that merely starts like a loopback address is not one.
    assert.match(problemsOf({ ...BASE, livekit: { ...LK, url: "ws://127.0.0.1.nip.io:7880" } }).join(), /`livekit\.url`.*wss:\/\//);
  });

  test("an SFU URL with a user name, password or secret-looking parameter is refused: clients are shown it", () => {
    assert.match(
      problemsOf({ ...BASE, livekit: { ...LK, url: "wss://key:hunter2@sfu.example.org" } }).join(),
      /`livekit\.url` carries a user name or password/,
    );
    // No query or fragment at all: LiveKit's URL has none, so nothing can hide in one.
    for (const url of ["wss://sfu.example.org/?access_token=abc", "wss://sfu.example.org/#token=abc"]) {
      assert.match(problemsOf({ ...BASE, livekit: { ...LK, url } }).join(), /`livekit\.url` is .*which is not allowed: expected a wss:\/\/ URL/);
    }
  });

  test("in a file, each problem names the line of its own key", () => {
    const yaml = [
      "server_name: example.org", // 1
      "livekit:", // 2
      "  url: wss://sfu.example.org", // 3
      "  api_key: key", // 4
      "  cs_api_url_overrides:", // 5
      "    other.org: https://matrix.other.org", // 6
      '    "123": "https://[bad"', // 7
      "",
    ].join("\n");
    assert.deepEqual(refusedProblems(yaml, "/srv/sb.yaml"), [
      "/srv/sb.yaml: line 2: `livekit` needs the LiveKit API secret: set `livekit.api_secret` or `livekit.api_secret_path`",
      '/srv/sb.yaml: line 7: `livekit.cs_api_url_overrides.123` is "https://[bad", which is not an absolute URL',
    ]);
  });

  test("`*` must stand alone; unknown keys and bad paths are refused", () => {
    assert.match(problemsOf({ ...BASE, livekit: { ...LK, full_access_homeservers: ["*", "a.org"] } }).join(), /only entry/);
    assert.match(problemsOf({ ...BASE, livekit: { ...LK, secret: "x" } }).join(), /livekit\.secret/);
    assert.match(problemsOf({ ...BASE, livekit: { ...LK, path: "/livekit/jwt/" } }).join(), /livekit\.path/);
  });

  test("the secret never shows in the config's JSON or inspect output", () => {
    const { config } = configFromObject({ ...BASE, livekit: LK });
    assert.ok(!JSON.stringify(config).includes(LK_SECRET));
    assert.ok(!inspect(config, { depth: 10 }).includes(LK_SECRET));
    assert.ok(!String(config.livekit!.apiSecret).includes(LK_SECRET));
  });
});

describe("the advertised transport", () => {
  const CONFIGURED = { type: "livekit", livekit_service_url: "https://other-jwt.example.org" };

  test("the bundled service goes first, then the configured transports", async () => {
    const server = await startLiveKitServer({ public_baseurl: "https://matrix.example.org/", matrix_rtc: { transports: [CONFIGURED] } });
    try {
      const alice = await registerUser(server.baseUrl, "alice");
      const res = await request(server.baseUrl, "GET", TRANSPORTS, { token: alice.access_token });
      assert.deepEqual(res.body.rtc_transports, [
        // Both the SFU (for MSC4195's homeserver flow) and the bundled service (for OpenID clients).
        { type: "livekit", url: "ws://127.0.0.1:7880", livekit_service_url: "https://matrix.example.org/livekit/jwt" },
        CONFIGURED,
      ]);
      const wk = await request(server.baseUrl, "GET", "/.well-known/matrix/client");
      assert.deepEqual(wk.body["org.matrix.msc4143.rtc_foci"], res.body.rtc_transports);
    } finally {
      await server.stop();
    }
  });

  test("not added twice when matrix_rtc.transports lists it already; the configured order stands, with the SFU's url added", async () => {
    const own = { type: "livekit", livekit_service_url: "https://matrix.example.org/livekit/jwt/" };
    const server = await startLiveKitServer({ public_baseurl: "https://matrix.example.org/", matrix_rtc: { transports: [CONFIGURED, own] } });
    try {
      const alice = await registerUser(server.baseUrl, "alice");
      const res = await request(server.baseUrl, "GET", TRANSPORTS, { token: alice.access_token });
      assert.deepEqual(res.body.rtc_transports, [CONFIGURED, { ...own, url: "ws://127.0.0.1:7880" }]);
    } finally {
      await server.stop();
    }
  });

  test("a custom path is advertised, and served there", async () => {
    const server = await startLiveKitServer({ public_baseurl: "https://matrix.example.org/", livekit: { path: "/rtc/lk" } });
    try {
      const alice = await registerUser(server.baseUrl, "alice");
      const res = await request(server.baseUrl, "GET", TRANSPORTS, { token: alice.access_token });
      assert.deepEqual(res.body.rtc_transports, [{ type: "livekit", url: "ws://127.0.0.1:7880", livekit_service_url: "https://matrix.example.org/rtc/lk" }]);
      assert.equal((await fetch(`${server.baseUrl}/rtc/lk/healthz`)).status, 200);
      assert.equal((await fetch(`${server.baseUrl}/livekit/jwt/healthz`)).status, 404);
    } finally {
      await server.stop();
    }
  });
});

describe("without livekit configured", () => {
  let server: TestServer;
  before(async () => {
    server = await startLiveKitServer({ livekit: null });
  });
  after(async () => server?.stop());

  test("the endpoints do not exist: 404 M_UNRECOGNIZED", async () => {
    const alice = await registerUser(server.baseUrl, "alice");
    for (const p of ["get_token", "delegate_delayed_leave"]) {
      const res = await request(server.baseUrl, "POST", `/_matrix/client/unstable/io.element.msc4195/rtc/livekit/${p}`, {
        token: alice.access_token,
        body: {},
      });
      assert.equal(res.status, 404);
      assert.equal(res.body.errcode, "M_UNRECOGNIZED");
    }
    assert.equal((await request(server.baseUrl, "POST", "/livekit/jwt/get_token", { body: {} })).status, 404);
    const transports = await request(server.baseUrl, "GET", TRANSPORTS, { token: alice.access_token });
    assert.deepEqual(transports.body, { rtc_transports: [] });
  });
});

describe("the API secret is never served or logged", () => {
  let server: TestServer;
  let sfu: FakeLiveKit;
  let log = "";
  before(async () => {
    sfu = new FakeLiveKit();
    const url = await sfu.start();
    const stream = new PassThrough();
    stream.on("data", (chunk: Buffer) => (log += chunk.toString("utf8")));
    server = await startLiveKitServer({ livekit: { url } }, { logStream: stream });
  });
  after(async () => {
    await server.stop();
    await sfu.stop();
  });

  test("through transports, well-known, the token service and the logs", async () => {
    const alice = await registerUser(server.baseUrl, "alice");
    const openid = await openIdToken(server.baseUrl, alice);
    const served: string[] = [];
    const grab = async (method: string, p: string, opts: Parameters<typeof request>[3] = {}) => {
      const res = await fetch(server.baseUrl + p, {
        method,
        headers: { ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}), "content-type": "application/json" },
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      });
      served.push(await res.text());
      return res;
    };
    await grab("GET", TRANSPORTS, { token: alice.access_token });
    await grab("GET", "/.well-known/matrix/client");
    const member = { id: "m1", claimed_user_id: alice.user_id, claimed_device_id: alice.device_id };
    const ok = await grab("POST", "/livekit/jwt/get_token", { body: { room_id: "!r:localhost", slot_id: "s", openid_token: openid, member } });
    assert.equal(ok.status, 200);
    await grab("POST", "/livekit/jwt/get_token", { body: { room_id: "!r:localhost", slot_id: "s", openid_token: { ...openid, access_token: "bad" }, member } });
    await grab("POST", "/livekit/jwt/sfu_webhook", { body: { event: "participant_joined" } });
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(log.includes("LiveKit authorisation service enabled"), "the service logs that it is on");
    assert.ok(log.includes("issued a LiveKit token"));
    for (const text of [...served, log]) {
      assert.ok(!text.includes(LK_SECRET), "the API secret leaked");
    }
    assert.ok(!log.includes(openid.access_token as string), "an OpenID token reached the log");
    const jwt = JSON.parse(served[2]!).jwt as string;
    assert.ok(!log.includes(jwt), "a LiveKit token reached the log");
  });
});
