/** Every error a user can hit in `/sync`, filters, account data, typing, receipts, read markers and push rules. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { registerUser, request, startServer, type TestServer } from "./helpers/server.js";
import { createRoom, sendMessage, type Login } from "./helpers/sync.js";

const C = "/_matrix/client/v3";
const enc = encodeURIComponent;

describe("sync and user-data errors", () => {
  let server: TestServer;
  let base: string;
  let alice: Login;
  let bob: Login;
  let roomId: string;
  let eventId: string;

  const call = (method: string, path: string, opts: { user?: Login | null; body?: unknown } = {}) =>
    request(base, method, C + path, { token: opts.user === null ? undefined : (opts.user ?? alice).access_token, body: opts.body });

  async function expectError(res: Promise<{ status: number; body: Record<string, unknown> }>, status: number, errcode: string) {
    const r = await res;
    assert.equal(r.status, status, JSON.stringify(r.body));
    assert.equal(r.body.errcode, errcode, JSON.stringify(r.body));
    assert.equal(typeof r.body.error, "string");
  }

  before(async () => {
    server = await startServer();
    base = server.baseUrl;
    alice = await registerUser(base, "erralice");
    bob = await registerUser(base, "errbob");
    roomId = await createRoom(base, alice);
    eventId = await sendMessage(base, alice, roomId, "x");
  });
  after(async () => server?.stop());

  test("/sync", async () => {
    await expectError(call("GET", "/sync", { user: null }), 401, "M_MISSING_TOKEN");
    await expectError(request(base, "GET", `${C}/sync`, { token: "nope" }), 401, "M_UNKNOWN_TOKEN");
    await expectError(call("GET", "/sync?since=garbage"), 400, "M_INVALID_PARAM");
    await expectError(call("GET", "/sync?timeout=soon"), 400, "M_INVALID_PARAM");
    await expectError(call("GET", "/sync?timeout=-1"), 400, "M_INVALID_PARAM");
    await expectError(call("GET", "/sync?full_state=maybe"), 400, "M_INVALID_PARAM");
    await expectError(call("GET", "/sync?filter=12345"), 404, "M_NOT_FOUND");
    await expectError(call("GET", `/sync?filter=${enc("{not json")}`), 400, "M_NOT_JSON");
    await expectError(call("GET", `/sync?filter=${enc(JSON.stringify({ room: { timeline: { limit: -1 } } }))}`), 400, "M_BAD_JSON");
    // Another user's filter ID is not yours.
    const created = await call("POST", `/user/${enc(bob.user_id)}/filter`, { user: bob, body: {} });
    assert.equal(created.status, 200);
    const other = await call("POST", `/user/${enc(alice.user_id)}/filter`, { body: { room: { timeline: { limit: 1 } } } });
    assert.notEqual(created.body.filter_id, undefined);
    await expectError(call("GET", `/sync?filter=${enc(String(Number(other.body.filter_id) + 100))}`), 404, "M_NOT_FOUND");
  });

  test("filters", async () => {
    const mine = `/user/${enc(alice.user_id)}/filter`;
    await expectError(call("POST", mine, { user: null, body: {} }), 401, "M_MISSING_TOKEN");
    await expectError(call("POST", `/user/${enc(bob.user_id)}/filter`, { body: {} }), 403, "M_FORBIDDEN");
    await expectError(call("POST", mine, { body: { room: { timeline: { types: "m.room.message" } } } }), 400, "M_BAD_JSON");
    await expectError(call("POST", mine, { body: { event_format: "xml" } }), 400, "M_BAD_JSON");
    await expectError(call("POST", mine, { body: [1, 2] }), 400, "M_BAD_JSON");
    await expectError(call("POST", mine, { body: "{oops" }), 400, "M_NOT_JSON");
    await expectError(call("POST", mine), 400, "M_NOT_JSON");
    await expectError(call("GET", `${mine}/999`), 404, "M_NOT_FOUND");
    await expectError(call("GET", `${mine}/not-a-number`), 404, "M_NOT_FOUND");
    const created = await call("POST", mine, { body: {} });
    await expectError(call("GET", `/user/${enc(alice.user_id)}/filter/${created.body.filter_id as string}`, { user: bob }), 403, "M_FORBIDDEN");
  });

  test("account data", async () => {
    const own = `/user/${enc(alice.user_id)}`;
    await expectError(call("GET", `${own}/account_data/org.example.x`, { user: null }), 401, "M_MISSING_TOKEN");
    await expectError(call("GET", `${own}/account_data/org.example.unset`), 404, "M_NOT_FOUND");
    await expectError(call("GET", `${own}/rooms/${enc(roomId)}/account_data/org.example.unset`), 404, "M_NOT_FOUND");
    await expectError(call("GET", `${own}/account_data/org.example.x`, { user: bob }), 403, "M_FORBIDDEN");
    await expectError(call("PUT", `${own}/account_data/org.example.x`, { user: bob, body: {} }), 403, "M_FORBIDDEN");
    await expectError(call("PUT", `${own}/rooms/${enc(roomId)}/account_data/org.example.x`, { user: bob, body: {} }), 403, "M_FORBIDDEN");
    await expectError(call("GET", `${own}/rooms/${enc(roomId)}/account_data/org.example.x`, { user: bob }), 403, "M_FORBIDDEN");
    await expectError(call("PUT", `${own}/account_data/m.fully_read`, { body: { event_id: eventId } }), 405, "M_BAD_JSON");
    await expectError(call("PUT", `${own}/rooms/${enc(roomId)}/account_data/m.fully_read`, { body: { event_id: eventId } }), 405, "M_BAD_JSON");
    await expectError(call("PUT", `${own}/account_data/m.push_rules`, { body: {} }), 405, "M_BAD_JSON");
    await expectError(call("PUT", `${own}/account_data/org.example.x`, { body: [1] }), 400, "M_BAD_JSON");
    await expectError(call("PUT", `${own}/account_data/org.example.x`, { body: "not json" }), 400, "M_NOT_JSON");
    await expectError(call("PUT", `${own}/account_data/org.example.x`), 400, "M_NOT_JSON");
    await expectError(call("PUT", `${own}/rooms/${enc("@not-a-room:localhost")}/account_data/org.example.x`, { body: {} }), 400, "M_INVALID_PARAM");
    await expectError(call("GET", `${own}/rooms/not-a-room/account_data/org.example.x`), 400, "M_INVALID_PARAM");
  });

  test("typing", async () => {
    const path = (u: Login) => `/rooms/${enc(roomId)}/typing/${enc(u.user_id)}`;
    await expectError(call("PUT", path(alice), { user: null, body: { typing: true } }), 401, "M_MISSING_TOKEN");
    await expectError(call("PUT", path(bob), { body: { typing: true, timeout: 1000 } }), 403, "M_FORBIDDEN");
    await expectError(call("PUT", path(bob), { user: bob, body: { typing: true, timeout: 1000 } }), 403, "M_FORBIDDEN");
    await expectError(call("PUT", `/rooms/${enc("!nowhere:localhost")}/typing/${enc(alice.user_id)}`, { body: { typing: true } }), 403, "M_FORBIDDEN");
    await expectError(call("PUT", path(alice), { body: {} }), 400, "M_MISSING_PARAM");
    await expectError(call("PUT", path(alice), { body: { typing: "yes" } }), 400, "M_BAD_JSON");
    await expectError(call("PUT", path(alice), { body: { typing: true, timeout: -5 } }), 400, "M_BAD_JSON");
    await expectError(call("PUT", path(alice)), 400, "M_NOT_JSON");
  });

  test("receipts", async () => {
    const path = (type: string, id = eventId) => `/rooms/${enc(roomId)}/receipt/${enc(type)}/${enc(id)}`;
    await expectError(call("POST", path("m.read"), { user: null, body: {} }), 401, "M_MISSING_TOKEN");
    await expectError(call("POST", path("m.unknown"), { body: {} }), 400, "M_INVALID_PARAM");
    await expectError(call("POST", path("m.read"), { user: bob, body: {} }), 403, "M_FORBIDDEN");
    await expectError(call("POST", path("m.read", "$missing"), { body: {} }), 404, "M_NOT_FOUND");
    await expectError(call("POST", path("m.read"), { body: { thread_id: "" } }), 400, "M_INVALID_PARAM");
    await expectError(call("POST", path("m.read"), { body: { thread_id: 7 } }), 400, "M_INVALID_PARAM");
    await expectError(call("POST", path("m.read"), { body: { thread_id: "not-a-thread" } }), 400, "M_INVALID_PARAM");
    await expectError(call("POST", path("m.fully_read"), { body: { thread_id: "main" } }), 400, "M_INVALID_PARAM");
    // A body is optional; an empty one is fine.
    assert.equal((await call("POST", path("m.read"))).status, 200);
  });

  test("read markers", async () => {
    const path = `/rooms/${enc(roomId)}/read_markers`;
    await expectError(call("POST", path, { user: null, body: {} }), 401, "M_MISSING_TOKEN");
    await expectError(call("POST", path, { user: bob, body: { "m.fully_read": eventId } }), 403, "M_FORBIDDEN");
    await expectError(call("POST", path, { body: { "m.fully_read": "$missing" } }), 404, "M_NOT_FOUND");
    await expectError(call("POST", path, { body: { "m.read": 12 } }), 400, "M_BAD_JSON");
    await expectError(call("POST", path, { body: "{" }), 400, "M_NOT_JSON");
  });

  test("push rules", async () => {
    await expectError(call("GET", "/pushrules/", { user: null }), 401, "M_MISSING_TOKEN");
    await expectError(call("GET", "/pushrules/global/override/.m.rule.nope"), 404, "M_NOT_FOUND");
    await expectError(call("GET", "/pushrules/global/nonsense/.m.rule.master"), 404, "M_NOT_FOUND");
  });
});
