/**
 * Server identity: `/_matrix/key/v2/server` (signed, with old keys), other servers' keys fetched
 * over TLS directly or through a notary and cached in the database by validity, and the notary
 * endpoints `/_matrix/key/v2/query`. Three Switchboards with names of their own federate through
 * HTTPS fronts with a test CA.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, before, describe, test } from "node:test";
import pino from "pino";
import { systemClock } from "../src/services/clock.js";
import { FederationService } from "../src/services/federation/service.js";
import { publicKeyBase64, verifyJsonSignature, verifyKeyFromBase64 } from "../src/events/signing.js";
import { TestFederation, type FederatedServer } from "./helpers/federation.js";
import { request } from "./helpers/server.js";

const OLD_KEY = publicKeyBase64(generateKeyPairSync("ed25519").privateKey);

describe("federation signing keys", () => {
  const fed = new TestFederation(["a.test", "b.test", "c.test"]);
  let a: FederatedServer;
  let b: FederatedServer;
  let c: FederatedServer;

  before(async () => {
    await fed.frontsUp();
    a = await fed.start("a.test", { old_signing_keys: { "ed25519:old1": { key: OLD_KEY, expired_ts: 1_600_000_000_000 } }, key_refresh_interval: "2h" });
    b = await fed.start("b.test");
    // c asks b, as its notary, before anyone directly.
    c = await fed.start("c.test", { trusted_key_servers: [{ server_name: "b.test" }] });
  });
  after(() => fed.close());

  test("GET /_matrix/key/v2/server: the current key, old keys, a validity, signed by the key", async () => {
    const before = Date.now();
    const res = await request(a.server.baseUrl, "GET", "/_matrix/key/v2/server");
    assert.equal(res.status, 200);
    const key = a.server.homeserver.signingKey;
    assert.equal(res.body.server_name, "a.test");
    assert.deepEqual(res.body.verify_keys, { [key.keyId]: { key: key.publicKeyBase64 } });
    assert.deepEqual(res.body.old_verify_keys, { "ed25519:old1": { key: OLD_KEY, expired_ts: 1_600_000_000_000 } });
    const until = res.body.valid_until_ts as number;
    assert.ok(until >= before + 2 * 3_600_000 && until <= Date.now() + 2 * 3_600_000, `valid_until_ts ${until} is key_refresh_interval ahead`);
    assert.ok(verifyJsonSignature(res.body, "a.test", key.keyId, verifyKeyFromBase64(key.publicKeyBase64)));
  });

  test("another server fetches the key over TLS once, then from its database", async () => {
    const keyId = a.server.homeserver.signingKey.keyId;
    const seen = a.front.requests.length;
    const key = await b.server.homeserver.services.federation.keys.verifyKey("a.test", keyId, Date.now());
    assert.ok(key, "the key was found");
    assert.equal(publicKeyBase64(key), a.server.homeserver.signingKey.publicKeyBase64);
    assert.deepEqual(a.front.requests.slice(seen), ["GET /_matrix/key/v2/server"]);
    const stored = await b.server.homeserver.storage.serverKeys.get("a.test", keyId);
    assert.equal(stored?.verifyKey, a.server.homeserver.signingKey.publicKeyBase64);
    assert.ok(stored!.validUntilTs > Date.now());
    // The old key came along, usable only for what it signed before it expired.
    const old = await b.server.homeserver.storage.serverKeys.get("a.test", "ed25519:old1");
    assert.equal(old?.expiredTs, 1_600_000_000_000);
    assert.equal(await b.server.homeserver.services.federation.keys.verifyKey("a.test", "ed25519:old1", Date.now()), undefined);
    assert.ok(await b.server.homeserver.services.federation.keys.verifyKey("a.test", "ed25519:old1", 1_500_000_000_000));
    // Cached: no second request.
    assert.ok(await b.server.homeserver.services.federation.keys.verifyKey("a.test", keyId, Date.now()));
    assert.equal(a.front.requests.length, seen + 1);
  });

  test("the cache is the database: another process on it (a fresh service) asks nobody", async () => {
    const hs = b.server.homeserver;
    const other = new FederationService({
      config: hs.services.config,
      storage: hs.storage,
      clock: systemClock,
      signingKey: () => hs.signingKey,
      logger: pino({ level: "silent" }),
      dialer: fed.dialer(),
    });
    const seen = a.front.requests.length;
    const key = await other.keys.verifyKey("a.test", a.server.homeserver.signingKey.keyId, Date.now());
    assert.equal(key && publicKeyBase64(key), a.server.homeserver.signingKey.publicKeyBase64);
    assert.equal(a.front.requests.length, seen);
  });

  test("a key that does not exist is undefined, and is not asked for again at once", async () => {
    const keys = b.server.homeserver.services.federation.keys;
    const seen = a.front.requests.length;
    assert.equal(await keys.verifyKey("a.test", "ed25519:nope", Date.now()), undefined);
    assert.equal(await keys.verifyKey("a.test", "ed25519:nope2", Date.now()), undefined);
    assert.ok(a.front.requests.length - seen <= 1, "at most one fetch for repeated unknown keys");
  });

  test("POST /_matrix/key/v2/query: the notary returns the server's own response, countersigned", async () => {
    const res = await request(b.server.baseUrl, "POST", "/_matrix/key/v2/query", { body: { server_keys: { "a.test": {} } } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const entries = res.body.server_keys as Record<string, unknown>[];
    assert.equal(entries.length, 1);
    const entry = entries[0]!;
    assert.equal(entry.server_name, "a.test");
    const aKey = a.server.homeserver.signingKey;
    const bKey = b.server.homeserver.signingKey;
    assert.ok(verifyJsonSignature(entry, "a.test", aKey.keyId, verifyKeyFromBase64(aKey.publicKeyBase64)), "signed by the server");
    assert.ok(verifyJsonSignature(entry, "b.test", bKey.keyId, verifyKeyFromBase64(bKey.publicKeyBase64)), "countersigned by the notary");
  });

  test("GET /_matrix/key/v2/query/{serverName}, and the notary's own keys", async () => {
    const res = await request(b.server.baseUrl, "GET", "/_matrix/key/v2/query/a.test");
    assert.equal(res.status, 200);
    assert.equal((res.body.server_keys as unknown[]).length, 1);
    const future = await request(b.server.baseUrl, "GET", `/_matrix/key/v2/query/a.test?minimum_valid_until_ts=${Date.now() + 30 * 86_400_000}`);
    assert.deepEqual(future.body.server_keys, []);
    const own = await request(b.server.baseUrl, "POST", "/_matrix/key/v2/query", { body: { server_keys: { "b.test": {} } } });
    assert.equal((own.body.server_keys as Record<string, unknown>[])[0]!.server_name, "b.test");
  });

  test("bad queries: 400, never 500", async () => {
    const notJson = await request(b.server.baseUrl, "POST", "/_matrix/key/v2/query", { body: "{" });
    assert.equal(notJson.status, 400);
    assert.equal(notJson.body.errcode, "M_NOT_JSON");
    const wrongShape = await request(b.server.baseUrl, "POST", "/_matrix/key/v2/query", { body: { server_keys: [] } });
    assert.equal(wrongShape.status, 400);
    assert.equal(wrongShape.body.errcode, "M_BAD_JSON");
    const tooMany: Record<string, object> = {};
    for (let i = 0; i < 101; i++) tooMany[`s${i}.test`] = {};
    const many = await request(b.server.baseUrl, "POST", "/_matrix/key/v2/query", { body: { server_keys: tooMany } });
    assert.equal(many.status, 400);
    assert.equal(many.body.errcode, "M_INVALID_PARAM");
    const notAName = await request(b.server.baseUrl, "POST", "/_matrix/key/v2/query", { body: { server_keys: { "not a name!": {} } } });
    assert.equal(notAName.status, 200);
    assert.deepEqual(notAName.body.server_keys, []);
  });

  test("through a notary: c learns a.test's key from b.test without asking a.test", async () => {
    const keyId = a.server.homeserver.signingKey.keyId;
    const aSeen = a.front.requests.length;
    const bSeen = b.front.requests.length;
    const key = await c.server.homeserver.services.federation.keys.verifyKey("a.test", keyId, Date.now());
    assert.ok(key);
    assert.equal(publicKeyBase64(key), a.server.homeserver.signingKey.publicKeyBase64);
    assert.deepEqual(a.front.requests.slice(aSeen), [], "a.test was not asked");
    // b's own key (to check its countersignature) and the query.
    assert.deepEqual(b.front.requests.slice(bSeen).sort(), ["GET /_matrix/key/v2/server", "POST /_matrix/key/v2/query"]);
  });

  test("a notary whose signature does not match its configured key is not believed: the key comes directly", async () => {
    const wrongNotaryKey = publicKeyBase64(generateKeyPairSync("ed25519").privateKey);
    const d = await fed.start("c.test", {
      trusted_key_servers: [{ server_name: "b.test", verify_keys: { [b.server.homeserver.signingKey.keyId]: wrongNotaryKey } }],
    }).catch((err: unknown) => err as Error);
    // c.test's front now points at this server; it is a fresh database either way.
    assert.ok(!(d instanceof Error), String(d));
    const keyId = a.server.homeserver.signingKey.keyId;
    const aSeen = a.front.requests.length;
    const key = await d.server.homeserver.services.federation.keys.verifyKey("a.test", keyId, Date.now());
    assert.ok(key);
    assert.deepEqual(a.front.requests.slice(aSeen), ["GET /_matrix/key/v2/server"], "fetched from a.test itself");
  });
});
