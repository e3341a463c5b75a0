/**
 * Request authentication: every incoming `/_matrix/federation/*` request must carry the origin's
 * valid X-Matrix signature for this destination (401 `M_UNAUTHORIZED` otherwise; 403 for an
 * origin `federation_domain_whitelist` refuses), checked here with forged signatures, a wrong
 * destination, a tampered body, and the real thing. Also `/query/profile` both ways and `/version`.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { FederationError } from "../src/services/federation/client.js";
import { authorizationHeader } from "../src/services/federation/x_matrix.js";
import { signedRequest, signerOf, TestFederation, type FederatedServer } from "./helpers/federation.js";
import { User } from "./helpers/rooms.js";
import { request } from "./helpers/server.js";

const PROFILE = "/_matrix/federation/v1/query/profile";

describe("federation request authentication", () => {
  const fed = new TestFederation(["a.test", "b.test", "walled.test"]);
  let a: FederatedServer;
  let b: FederatedServer;
  let walled: FederatedServer;
  let alice: User;
  const q = (userId: string, extra = "") => `${PROFILE}?user_id=${encodeURIComponent(userId)}${extra}`;

  before(async () => {
    await fed.frontsUp();
    a = await fed.start("a.test");
    b = await fed.start("b.test");
    walled = await fed.start("walled.test", { federation_domain_whitelist: ["b.test"] });
    alice = await User.register(a.server.baseUrl, "alice");
    const set = await request(a.server.baseUrl, "PUT", `/_matrix/client/v3/profile/${encodeURIComponent(alice.userId)}/displayname`, {
      token: alice.token,
      body: { displayname: "Alice A" },
    });
    assert.equal(set.status, 200);
  });
  after(() => fed.close());

  test("a request signed by its origin is accepted: /query/profile", async () => {
    const res = await signedRequest(a, signerOf(b), "GET", q(alice.userId));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, { displayname: "Alice A" });
    const field = await signedRequest(a, signerOf(b), "GET", q(alice.userId, "&field=avatar_url"));
    assert.deepEqual(field.body, {});
  });

  test("no Authorization header, or not an X-Matrix one: 401 M_UNAUTHORIZED", async () => {
    const none = await request(a.server.baseUrl, "GET", q(alice.userId));
    assert.equal(none.status, 401);
    assert.equal(none.body.errcode, "M_UNAUTHORIZED");
    const bearer = await signedRequest(a, signerOf(b), "GET", q(alice.userId), { authorization: "Bearer abc" });
    assert.equal(bearer.status, 401);
    assert.equal(bearer.body.errcode, "M_UNAUTHORIZED");
    const partial = await signedRequest(a, signerOf(b), "GET", q(alice.userId), { authorization: 'X-Matrix origin="b.test"' });
    assert.equal(partial.status, 401);
    assert.equal(partial.body.errcode, "M_UNAUTHORIZED");
  });

  test("a forged signature (another key under the origin's key ID): 401", async () => {
    const forger = { ...signerOf(b), privateKey: generateKeyPairSync("ed25519").privateKey };
    const res = await signedRequest(a, forger, "GET", q(alice.userId));
    assert.equal(res.status, 401);
    assert.equal(res.body.errcode, "M_UNAUTHORIZED");
  });

  test("a key ID the origin does not have: 401", async () => {
    const res = await signedRequest(a, { ...signerOf(b), keyId: "ed25519:made_up" }, "GET", q(alice.userId));
    assert.equal(res.status, 401);
    assert.equal(res.body.errcode, "M_UNAUTHORIZED");
  });

  test("signed for another destination: 401, whether the header names it or only the signature", async () => {
    const named = await signedRequest(a, signerOf(b), "GET", q(alice.userId), { destination: "c.test" });
    assert.equal(named.status, 401);
    assert.equal(named.body.errcode, "M_UNAUTHORIZED");
    // The header names us, but the signature was made for c.test.
    const header = authorizationHeader(signerOf(b), "GET", q(alice.userId), "c.test", undefined).replace('destination="c.test"', 'destination="a.test"');
    const swapped = await signedRequest(a, signerOf(b), "GET", q(alice.userId), { authorization: header });
    assert.equal(swapped.status, 401);
    assert.equal(swapped.body.errcode, "M_UNAUTHORIZED");
  });

  test("a different path or body than the one signed: 401", async () => {
    const header = authorizationHeader(signerOf(b), "GET", q("@bob:a.test"), "a.test", undefined);
    const res = await signedRequest(a, signerOf(b), "GET", q(alice.userId), { authorization: header });
    assert.equal(res.status, 401);
    assert.equal(res.body.errcode, "M_UNAUTHORIZED");
  });

  test("a request claiming to come from this very server: 401", async () => {
    const res = await signedRequest(a, signerOf(a), "GET", q(alice.userId));
    assert.equal(res.status, 401);
    assert.equal(res.body.errcode, "M_UNAUTHORIZED");
  });

  test("federation_domain_whitelist: other origins get 403 M_FORBIDDEN, and nothing is sent to them", async () => {
    const res = await signedRequest(walled, signerOf(a), "GET", q("@x:walled.test"));
    assert.equal(res.status, 403);
    assert.equal(res.body.errcode, "M_FORBIDDEN");
    const seen = a.front.requests.length;
    await assert.rejects(walled.server.homeserver.services.federation.client.request("a.test", { method: "GET", path: "/_matrix/federation/v1/version" }), (err: unknown) => {
      assert.ok(err instanceof FederationError);
      assert.equal(err.kind, "forbidden_destination");
      return true;
    });
    assert.equal(a.front.requests.length, seen);
    // The whitelisted server is served.
    const allowed = await signedRequest(walled, signerOf(b), "GET", q("@x:walled.test"));
    assert.equal(allowed.status, 404);
    assert.equal(allowed.body.errcode, "M_NOT_FOUND");
  });

  test("/query/profile errors: unknown user 404, foreign user or bad field 400, missing user_id 400", async () => {
    const unknown = await signedRequest(a, signerOf(b), "GET", q("@nobody:a.test"));
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.errcode, "M_NOT_FOUND");
    const foreign = await signedRequest(a, signerOf(b), "GET", q("@bob:b.test"));
    assert.equal(foreign.status, 400);
    assert.equal(foreign.body.errcode, "M_INVALID_PARAM");
    const notUser = await signedRequest(a, signerOf(b), "GET", q("nobody"));
    assert.equal(notUser.status, 400);
    assert.equal(notUser.body.errcode, "M_INVALID_PARAM");
    const field = await signedRequest(a, signerOf(b), "GET", q(alice.userId, "&field=password"));
    assert.equal(field.status, 400);
    assert.equal(field.body.errcode, "M_INVALID_PARAM");
    const missing = await signedRequest(a, signerOf(b), "GET", PROFILE);
    assert.equal(missing.status, 400);
    assert.equal(missing.body.errcode, "M_MISSING_PARAM");
  });

  test("outgoing /query/profile: a remote user's profile comes from their server, signed by us", async () => {
    const profiles = b.server.homeserver.services.federation.profiles;
    const seen = a.front.requests.length;
    assert.deepEqual(await profiles.fetch(alice.userId), { displayname: "Alice A" });
    assert.deepEqual(a.front.requests.slice(seen), [`GET ${PROFILE}`]);
    await assert.rejects(profiles.fetch("@nobody:a.test"), (err: { status?: number; errcode?: string }) => err.status === 404 && err.errcode === "M_NOT_FOUND");
    await assert.rejects(profiles.fetch("@x:unreachable.test"), (err: { status?: number; errcode?: string }) => err.status === 502 && err.errcode === "M_UNKNOWN");
  });

  test("a client of one server reads a remote user's profile: GET /profile/{userId} and /displayname", async () => {
    const reader = await User.register(b.server.baseUrl, "reader");
    const whole = await request(b.server.baseUrl, "GET", `/_matrix/client/v3/profile/${encodeURIComponent(alice.userId)}`, { token: reader.token });
    assert.equal(whole.status, 200, JSON.stringify(whole.body));
    assert.deepEqual(whole.body, { displayname: "Alice A" });
    const name = await request(b.server.baseUrl, "GET", `/_matrix/client/v3/profile/${encodeURIComponent(alice.userId)}/displayname`);
    assert.deepEqual(name.body, { displayname: "Alice A" });
    const avatar = await request(b.server.baseUrl, "GET", `/_matrix/client/v3/profile/${encodeURIComponent(alice.userId)}/avatar_url`);
    assert.equal(avatar.status, 404);
    assert.equal(avatar.body.errcode, "M_NOT_FOUND");
    const nobody = await request(b.server.baseUrl, "GET", `/_matrix/client/v3/profile/${encodeURIComponent("@nobody:a.test")}`);
    assert.equal(nobody.status, 404);
    assert.equal(nobody.body.errcode, "M_NOT_FOUND");
    const unreachable = await request(b.server.baseUrl, "GET", `/_matrix/client/v3/profile/${encodeURIComponent("@x:gone.test")}`);
    assert.equal(unreachable.status, 502);
    assert.equal(unreachable.body.errcode, "M_UNKNOWN");
  });

  test("GET /_matrix/federation/v1/version needs no signature", async () => {
    const res = await request(a.server.baseUrl, "GET", "/_matrix/federation/v1/version");
    assert.equal(res.status, 200);
    assert.equal((res.body.server as Record<string, unknown>).name, "Switchboard");
    assert.match(String((res.body.server as Record<string, unknown>).version), /^\d+\.\d+\.\d+/);
  });

  test("an unknown federation endpoint is 404 M_UNRECOGNIZED", async () => {
    const res = await signedRequest(a, signerOf(b), "GET", "/_matrix/federation/v1/no_such_thing");
    assert.equal(res.status, 404);
    assert.equal(res.body.errcode, "M_UNRECOGNIZED");
  });
});
