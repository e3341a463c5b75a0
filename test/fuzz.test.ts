/**
 * Bad input never costs a 500 (issue 16 §3). Every route of the real server, with every
 * listener resource and the LiveKit service on, gets random and hostile requests: broken and
 * deep JSON, wrong types, NUL and lone surrogates, odd content types, long, empty and
 * badly encoded path parameters, missing, unknown and malformed credentials. Every answer must
 * come, be below 500 and carry the CORS headers; every 4xx must be a Matrix error envelope;
 * and a route whose requests were all refused must have left the user's data as it was.
 *
 * Seeded: the seed is printed, and FUZZ_SEED repeats a run. FUZZ_ITERATIONS sets the cases
 * per route (a few here; `npm run fuzz` runs many), FUZZ_ROUTE keeps routes whose path
 * contains it.
 */
import assert from "node:assert/strict";
import { createHmac, randomInt } from "node:crypto";
import { after, before, describe, test } from "node:test";
import FindMyWay, { type HTTPMethod } from "find-my-way";
import { LISTENER_RESOURCES } from "../src/config/sections/server.js";
import { closeFuzzAgent, collectRoutes, describeCase, fillPath, livekitWithoutCors, makeCase, problemWith, send, type RouteInfo, type Tokens } from "./helpers/fuzz.js";
import { Rng, type KnownIds } from "./helpers/fuzz_inputs.js";
import { TEST_POSTGRES } from "./helpers/database.js";
import { LK_KEY, LK_SECRET } from "./helpers/livekit.js";
import { NO_LIMIT, registerUser, request, startServer, type TestServer } from "./helpers/server.js";

const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : randomInt(2 ** 31);
const ITERATIONS = Number(process.env.FUZZ_ITERATIONS ?? 3);
const ONLY = process.env.FUZZ_ROUTE;
const BODY_LIMIT = 64 * 1024;
const SECRET = "fuzz-shared-secret";
const LIVEKIT = "/livekit/jwt/";
const C = "/_matrix/client/v3";

let server: TestServer;
let routes: RouteInfo[];
let ids: KnownIds;
let tokens: Tokens;
let alice: { user_id: string; access_token: string; device_id: string };

/** A user made an admin through the shared-secret registration, for the admin API. */
async function registerAdmin(baseUrl: string, username: string): Promise<string> {
  const nonce = (await request(baseUrl, "GET", "/_synapse/admin/v1/register")).body.nonce as string;
  const password = "correct horse battery staple";
  const mac = createHmac("sha1", SECRET).update(`${nonce}\0${username}\0${password}\0admin`).digest("hex");
  const res = await request(baseUrl, "POST", "/_synapse/admin/v1/register", { body: { nonce, username, password, admin: true, mac } });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.access_token as string;
}

function ok(res: { status: number; body: Record<string, unknown> }, what: string): Record<string, unknown> {
  assert.equal(res.status, 200, `${what}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

/** Values that change without anyone writing: clocks, tokens, and ephemeral state such as typing. */
const VOLATILE = new Set(["next_batch", "age", "last_seen_ts", "last_seen_ip", "last_seen_user_agent", "ephemeral", "presence", "prev_batch"]);

function normalise(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalise);
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) if (!VOLATILE.has(key)) out[key] = normalise((value as Record<string, unknown>)[key]);
  return out;
}

/** What alice can see of her stored data: her full sync, devices, pushers, key backup, delayed events, profile, alias. */
async function snapshot(): Promise<string> {
  const get = async (path: string) => {
    const res = await request(server.baseUrl, "GET", path, { token: alice.access_token });
    return { status: res.status, body: res.body };
  };
  const parts = await Promise.all([
    get(`${C}/sync?timeout=0`),
    get(`${C}/devices`),
    get(`${C}/pushers`),
    get(`${C}/room_keys/version`),
    get("/_matrix/client/v1/delayed_events"),
    get(`${C}/profile/${encodeURIComponent(alice.user_id)}`),
    get(`${C}/directory/room/${encodeURIComponent(ids.alias!)}`),
    get(`${C}/user/${encodeURIComponent(alice.user_id)}/filter/${ids.filterId}`),
  ]);
  return JSON.stringify(normalise(parts));
}

/** A snapshot taken once it holds still: effects a server applies just after answering have landed. */
async function settledSnapshot(): Promise<string> {
  let last = await snapshot();
  for (let i = 0; i < 20; i++) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    const next = await snapshot();
    if (next === last) return next;
    last = next;
  }
  return last;
}

before(async () => {
  server = await startServer({
    listeners: [{ port: 0, bind_addresses: ["127.0.0.1"], resources: [{ names: [...LISTENER_RESOURCES] }] }],
    max_request_body_size: "64K",
    registration_shared_secret: SECRET,
    // No request may make the server reach out to a made-up server name.
    federation_domain_whitelist: ["localhost"],
    livekit: { url: "ws://127.0.0.1:9", api_key: LK_KEY, api_secret: LK_SECRET },
    rc_rtc_transports: NO_LIMIT,
    rc_media_create: NO_LIMIT,
  });
  const base = server.baseUrl;
  alice = await registerUser(base, "alice");
  const bob = await registerUser(base, "bob");
  const carol = await registerUser(base, "carol");
  const admin = await registerAdmin(base, "root");
  const token = alice.access_token;
  const room = ok(await request(base, "POST", `${C}/createRoom`, { token, body: { preset: "public_chat", room_alias_name: "fz", name: "fuzz" } }), "createRoom");
  const roomId = room.room_id as string;
  ok(await request(base, "POST", `${C}/join/${encodeURIComponent(roomId)}`, { token: bob.access_token, body: {} }), "join");
  const sent = ok(await request(base, "PUT", `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t1`, { token, body: { msgtype: "m.text", body: "hi" } }), "send");
  ok(await request(base, "PUT", `${C}/user/${encodeURIComponent(alice.user_id)}/account_data/m.fuzz`, { token, body: { a: 1 } }), "account data");
  const filter = ok(await request(base, "POST", `${C}/user/${encodeURIComponent(alice.user_id)}/filter`, { token, body: { room: { timeline: { limit: 5 } } } }), "filter");
  const backup = ok(
    await request(base, "POST", `${C}/room_keys/version`, { token, body: { algorithm: "m.megolm_backup.v1.curve25519-aes-sha2", auth_data: { public_key: "abc" } } }),
    "backup",
  );
  const upload = await fetch(`${base}/_matrix/media/v3/upload?filename=f.txt`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "text/plain" }, body: "hello" });
  const mxc = ((await upload.json()) as { content_uri: string }).content_uri;
  const keys = ok(await request(base, "GET", "/_matrix/key/v2/server"), "server keys");
  ids = {
    userId: alice.user_id,
    roomId,
    roomIdOrAlias: "#fz:localhost",
    alias: "#fz:localhost",
    eventId: sent.event_id as string,
    deviceId: alice.device_id,
    eventType: "m.room.message",
    stateKey: "",
    txnId: "txn1",
    delayId: "syd_nosuchdelay",
    filterId: filter.filter_id as string,
    type: "m.fuzz",
    receiptType: "m.read",
    kind: "override",
    ruleId: ".m.rule.master",
    version: backup.version as string,
    sessionId: "session1",
    serverName: "localhost",
    mediaId: mxc.split("/").pop()!,
    fileName: "f.txt",
    keyId: Object.keys(keys.verify_keys as object)[0]!,
    token: "abcd",
  };
  tokens = {
    valid: token,
    // Succeeding, these would end alice's session or membership and so the rest of the run's reach.
    throwaway: (route) => {
      if (/\/logout(\/all)?$/.test(route.url)) return carol.access_token;
      if (/\/rooms\/:roomId\/(leave|forget)$/.test(route.url)) return bob.access_token;
      if (route.url.startsWith("/_synapse/admin/")) return admin;
      return undefined;
    },
  };
  routes = await collectRoutes(server.homeserver.services, new Set(LISTENER_RESOURCES), LIVEKIT);
  if (ONLY) routes = routes.filter((r) => r.url.includes(ONLY));
});

after(async () => {
  closeFuzzAgent();
  await server?.stop();
});

describe("fuzz", () => {
  test("the route table covers every API area", () => {
    const prefixes = ["/_matrix/client/v3/", "/_matrix/client/r0/", "/_matrix/federation/", "/_matrix/key/v2/", "/_matrix/media/", "/_synapse/admin/", "/.well-known/matrix/", LIVEKIT];
    if (!ONLY) for (const p of prefixes) assert.ok(routes.some((r) => r.url.startsWith(p)), `no route under ${p}`);
  });

  test(`random and hostile requests to every route (seed ${SEED}, ${ITERATIONS} per route)`, async (t) => {
    t.diagnostic(`FUZZ_SEED=${SEED} FUZZ_ITERATIONS=${ITERATIONS} repeats this run`);
    const rng = new Rng(SEED);
    const failures: string[] = [];
    let baseline = await settledSnapshot();
    // The comparison means something only if the snapshot holds alice's room and account data.
    assert.ok(baseline.includes(ids.roomId!) && baseline.includes("m.fuzz"), baseline.slice(0, 500));
    let sent = 0;
    const statuses = new Map<number, number>();
    for (const route of routes) {
      const cases = Array.from({ length: ITERATIONS }, () => makeCase(rng, route, ids, tokens, BODY_LIMIT));
      const answers = await Promise.all(
        cases.map((c) => send(server.baseUrl, c.method, c.path, c.headers, c.body).catch((err: Error) => err)),
      );
      sent += cases.length;
      let changed = false;
      let refused = false;
      answers.forEach((a, i) => {
        const c = cases[i]!;
        const problem = a instanceof Error ? `no answer: ${a.message}` : problemWith(c, a, LIVEKIT);
        if (problem) failures.push(`${route.method} ${route.url}: ${problem}\n    ${describeCase(c)}`);
        if (a instanceof Error) return;
        statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
        if (a.status < 400 && c.method !== "GET" && c.method !== "HEAD") changed = true;
        if (a.status >= 400) refused = true;
      });
      if (route.method === "GET") continue;
      if (changed) baseline = await settledSnapshot();
      else if (refused) {
        const now = await snapshot();
        if (now !== baseline) {
          failures.push(`${route.method} ${route.url}: refused requests changed stored data\n    before ${baseline}\n    after  ${now}`);
          baseline = await settledSnapshot();
        }
      }
    }
    t.diagnostic(`${sent} requests to ${routes.length} routes; answers: ${[...statuses].sort(([a], [b]) => a - b).map(([s, n]) => `${s}×${n}`).join(" ")}`);
    assert.deepEqual(failures.slice(0, 30), [], `seed ${SEED}: ${failures.length} failures`);
  });

  test("every known path answers another method with 405 M_UNRECOGNIZED, CORS headers on", async () => {
    const router = FindMyWay({ ignoreTrailingSlash: false, maxParamLength: 1000 });
    for (const r of routes) router.on(r.method as HTTPMethod, r.url, () => {});
    const failures: string[] = [];
    const paths = [...new Set(routes.map((r) => fillPath(r.url, (name) => encodeURIComponent(ids[name] ?? "x"))))];
    await Promise.all(
      paths.map(async (path) => {
        for (const method of ["GET", "PUT", "POST", "DELETE", "PATCH"]) {
          if (router.find(method as HTTPMethod, path)) continue;
          const a = await send(server.baseUrl, method, path, { authorization: `Bearer ${alice.access_token}`, "content-type": "application/json" }, "{}");
          // The LiveKit service answers as lk-jwt-service does: an empty 405 with its own CORS headers.
          const livekit = path.startsWith(LIVEKIT);
          const body = livekit ? { errcode: undefined } : (JSON.parse(a.text || "{}") as { errcode?: string });
          if (a.status !== 405 || body.errcode !== (livekit ? undefined : "M_UNRECOGNIZED")) failures.push(`${method} ${path}: ${a.status} ${a.text}`);
          else if (!(livekit && livekitWithoutCors(path.slice(LIVEKIT.length))) && a.headers["access-control-allow-origin"] !== "*") {
            failures.push(`${method} ${path}: no CORS header`);
          }
        }
      }),
    );
    assert.deepEqual(failures, []);
  });

  test("unknown paths are 404 M_UNRECOGNIZED for every method, CORS headers on", async () => {
    const failures: string[] = [];
    const unknown = ["/", "/nowhere", `${C}/nowhere`, `${C}/rooms`, "/_matrix/federation/v1/nowhere", "/_matrix/media/v3/nowhere", "/_matrix/key/v2/nowhere", "/_synapse/admin/v1/nowhere", "/.well-known/matrix/nowhere", "/_matrix/client/v3/%E0%A4%A", "/_matrix/%00"];
    for (const path of unknown) {
      for (const method of ["GET", "PUT", "POST", "DELETE", "PATCH"]) {
        const a = await send(server.baseUrl, method, path, { "content-type": "application/json" }, "{}");
        const body = JSON.parse(a.text || "{}") as { errcode?: string };
        if (![400, 404].includes(a.status) || !body.errcode?.startsWith("M_")) failures.push(`${method} ${path}: ${a.status} ${a.text}`);
        else if (a.status === 404 && body.errcode !== "M_UNRECOGNIZED") failures.push(`${method} ${path}: ${a.status} ${a.text}`);
        else if (a.headers["access-control-allow-origin"] !== "*") failures.push(`${method} ${path}: no CORS header`);
      }
    }
    assert.deepEqual(failures, []);
  });

  describe("what the fuzz found, pinned", () => {
    const envelope = (a: { status: number; headers: Record<string, unknown>; text: string }, status: number, errcode: string) => {
      assert.equal(a.status, status, a.text);
      assert.equal((JSON.parse(a.text) as { errcode: string }).errcode, errcode);
      assert.equal(a.headers["access-control-allow-origin"], "*");
    };

    test("a request Node's parser refuses (a raw non-ASCII byte in the path) is 400 M_UNKNOWN in the envelope, CORS headers on", async () => {
      envelope(await send(server.baseUrl, "GET", `${C}/profile/\u00e9`, {}, undefined), 400, "M_UNKNOWN");
      // A HEAD's answer has no body, or the client would read it as the start of another answer.
      const head = await send(server.baseUrl, "HEAD", `${C}/profile/\u00e9`, {}, undefined);
      assert.equal(head.status, 400);
      assert.equal(head.text, "");
    });

    test("headers past Node's limit are 431 M_TOO_LARGE, CORS headers on", async () => {
      envelope(await send(server.baseUrl, "GET", `${C}/profile/${"a".repeat(20_000)}`, {}, undefined), 431, "M_TOO_LARGE");
    });

    test("a NUL in a path or query parameter is 400 M_INVALID_PARAM, on PostgreSQL too", async () => {
      const auth = { authorization: `Bearer ${alice.access_token}` };
      envelope(await send(server.baseUrl, "GET", `${C}/profile/a%00b`, auth, undefined), 400, "M_INVALID_PARAM");
      envelope(await send(server.baseUrl, "GET", `${C}/rooms/%00/state/m.room.name`, auth, undefined), 400, "M_INVALID_PARAM");
      envelope(await send(server.baseUrl, "GET", `${C}/sync?since=%00`, auth, undefined), 400, "M_INVALID_PARAM");
    });

    test("a NUL in a stored body string is 400 M_BAD_JSON on PostgreSQL, which cannot store it, and kept on SQLite", async () => {
      const token = alice.access_token;
      const rename = await request(server.baseUrl, "PUT", `${C}/devices/${alice.device_id}`, { token, body: { display_name: "a\u0000b" } });
      const backup = await request(server.baseUrl, "POST", `${C}/room_keys/version`, { token, body: { algorithm: "a\u0000b", auth_data: {} } });
      for (const res of [rename, backup]) {
        if (TEST_POSTGRES) {
          assert.equal(res.status, 400, JSON.stringify(res.body));
          assert.equal(res.body.errcode, "M_BAD_JSON");
        } else assert.equal(res.status, 200, JSON.stringify(res.body));
      }
    });

    test("an oversized body to a LiveKit token endpoint is 413 with lk-jwt-service's CORS headers", async () => {
      const a = await send(server.baseUrl, "POST", `${LIVEKIT}get_token`, { "content-type": "application/json" }, JSON.stringify({ a: "z".repeat(BODY_LIMIT) }));
      assert.equal(a.status, 413);
      assert.equal(a.headers["access-control-allow-origin"], "*");
      assert.equal(a.headers["access-control-allow-methods"], "POST");
    });

    test("keys/signatures/upload for users named constructor or __proto__ lists failures, and pollutes nothing", async () => {
      const body = '{"constructor":{"prototype":{"polluted":true}},"__proto__":{"polluted":{"signatures":{}}}}';
      const res = await request(server.baseUrl, "POST", `${C}/keys/signatures/upload`, { token: alice.access_token, body });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const failures = res.body.failures as Record<string, Record<string, { errcode: string }>>;
      assert.equal(Object.getOwnPropertyDescriptor(failures, "constructor")?.value.prototype.errcode, "M_INVALID_SIGNATURE");
      assert.equal(Object.getOwnPropertyDescriptor(failures, "__proto__")?.value.polluted.errcode, "M_INVALID_SIGNATURE");
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
    });
  });
});
