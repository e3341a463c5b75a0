/**
 * Where federation connects, and where it refuses to: server discovery by the spec (IP literals,
 * `.well-known/matrix/server` with its caching rules, SRV, port 8448), TLS verified against the
 * server name, and the address policy (SSRF protection): private and loopback addresses are
 * refused unless `ip_range_whitelist` allows them, `federation_ip_range_blacklist` adds ranges.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { FederationError } from "../src/services/federation/client.js";
import { wellKnownLifetimeMs } from "../src/services/federation/discovery.js";
import { TransportError } from "../src/services/federation/transport.js";
import { TestFederation, type FederatedServer } from "./helpers/federation.js";

const VERSION = { method: "GET" as const, path: "/_matrix/federation/v1/version" };

function failsWith(kind: string, transportKind?: string) {
  return (err: unknown) => {
    assert.ok(err instanceof FederationError, String(err));
    assert.equal(err.kind, kind);
    if (transportKind) {
      assert.ok(err.cause instanceof TransportError, String(err.cause));
      assert.equal(err.cause.kind, transportKind);
    }
    return true;
  };
}

describe("federation discovery, TLS and the address policy", () => {
  const fed = new TestFederation(["a.test", "b.test", "srv.test", "deleg.test", "old.test"]);
  let a: FederatedServer;
  let b: FederatedServer;

  before(async () => {
    await fed.frontsUp();
    const aFront = fed.fronts.get("a.test")!;
    // deleg.test's https://deleg.test/ (port 443) is a.test's front, whose well-known names a.test:443.
    fed.extraAddresses["deleg.test:443"] = { address: "127.0.0.1", port: aFront.port };
    fed.extraAddresses["a.test:443"] = { address: "127.0.0.1", port: aFront.port };
    fed.extraAddresses["impostor.test:8448"] = { address: "127.0.0.1", port: aFront.port };
    fed.extraAddresses["target.test"] = { address: "127.0.0.1" };
    fed.extraAddresses["public.test:8448"] = { address: "1.2.3.4" };
    fed.extraAddresses["also-public.test:8448"] = { address: "5.6.7.8" };
    fed.srv["_matrix-fed._tcp.srv.test"] = [{ name: "target.test", port: aFront.port, priority: 10, weight: 5 }];
    // old.test has only the deprecated record; its lower-priority target is never reached.
    fed.srv["_matrix._tcp.old.test"] = [
      { name: "nowhere.test", port: 1, priority: 20, weight: 0 },
      { name: "target.test", port: aFront.port, priority: 10, weight: 0 },
    ];
    a = await fed.start("a.test", { serve_server_wellknown: true });
    b = await fed.start("b.test", { federation_ip_range_blacklist: ["1.2.3.0/24"], ip_range_blacklist: ["5.6.7.8"] });
  });
  after(() => fed.close());

  const client = () => b.server.homeserver.services.federation.client;

  test("no well-known and no SRV: port 8448, TLS checked for the server name", async () => {
    const res = await client().request("a.test", VERSION);
    assert.equal(res.status, 200);
    assert.equal((res.json.server as Record<string, unknown>).name, "Switchboard");
  });

  test("SRV _matrix-fed._tcp: the target's address and port, the certificate of the server name", async () => {
    const front = fed.fronts.get("a.test")!;
    const seen = front.requests.length;
    const res = await client().request("srv.test", VERSION);
    assert.equal(res.status, 200);
    assert.deepEqual(front.requests.slice(seen), ["GET /_matrix/federation/v1/version"]);
  });

  test("the deprecated SRV _matrix._tcp, when there is no _matrix-fed._tcp; targets in priority order", async () => {
    const front = fed.fronts.get("a.test")!;
    const seen = front.requests.length;
    assert.equal((await client().request("old.test", VERSION)).status, 200);
    assert.deepEqual(front.requests.slice(seen), ["GET /_matrix/federation/v1/version"]);
  });

  test(".well-known/matrix/server delegates, and is cached", async () => {
    const front = fed.fronts.get("a.test")!;
    const seen = front.requests.length;
    assert.equal((await client().request("deleg.test", VERSION)).status, 200);
    assert.deepEqual(front.requests.slice(seen), ["GET /.well-known/matrix/server", "GET /_matrix/federation/v1/version"]);
    assert.equal((await client().request("deleg.test", VERSION)).status, 200);
    assert.deepEqual(front.requests.slice(seen + 2), ["GET /_matrix/federation/v1/version"], "the well-known answer was cached");
  });

  test("well-known cache lifetimes follow the headers: default 24 h, at most 48 h", () => {
    const now = Date.now();
    const h = 3_600_000;
    assert.equal(wellKnownLifetimeMs({}, now), 24 * h);
    assert.equal(wellKnownLifetimeMs({ "cache-control": "max-age=600" }, now), 600_000);
    assert.equal(wellKnownLifetimeMs({ "cache-control": "public, max-age=999999999" }, now), 48 * h);
    assert.equal(wellKnownLifetimeMs({ "cache-control": "no-store" }, now), 0);
    assert.equal(wellKnownLifetimeMs({ expires: new Date(now + 2 * h).toUTCString() }, now) <= 2 * h, true);
  });

  test("a certificate that does not name the server is refused before any request", async () => {
    const front = fed.fronts.get("a.test")!;
    const seen = front.requests.length;
    await assert.rejects(client().request("impostor.test", VERSION), failsWith("unreachable", "network"));
    assert.equal(front.requests.length, seen);
  });

  test("without the test CA nothing is trusted; federation_verify_certificates: false trusts anything", async () => {
    const untrusting = await fed.start("srv.test", { federation_custom_ca_list: [] });
    const front = fed.fronts.get("a.test")!;
    const seen = front.requests.length;
    await assert.rejects(untrusting.server.homeserver.services.federation.client.request("a.test", VERSION), failsWith("unreachable", "network"));
    assert.equal(front.requests.length, seen, "no request got past the TLS handshake");
    const careless = await fed.start("srv.test", { federation_custom_ca_list: [], federation_verify_certificates: false });
    assert.equal((await careless.server.homeserver.services.federation.client.request("a.test", VERSION)).status, 200);
  });

  test("SSRF: loopback and private addresses are refused by default, before connecting", async () => {
    // A server without `ip_range_whitelist`: the names resolve to loopback, as an attacker's DNS might.
    const strict = await fed.start("deleg.test", { ip_range_whitelist: [] });
    const fedClient = strict.server.homeserver.services.federation.client;
    const front = fed.fronts.get("a.test")!;
    const seen = front.requests.length;
    await assert.rejects(fedClient.request("a.test", VERSION), failsWith("unreachable", "blocked_address"));
    for (const literal of [`127.0.0.1:${front.port}`, "[::1]:8448", "10.0.0.1", "169.254.169.254", "192.168.1.1:8448", "[::ffff:127.0.0.1]:8448", "[fd00::1]"]) {
      await assert.rejects(fedClient.request(literal, VERSION), failsWith("unreachable", "blocked_address"), literal);
    }
    assert.equal(front.requests.length, seen, "nothing reached the front");
    // Nor can a key fetch be pointed there.
    assert.equal(await strict.server.homeserver.services.federation.keys.verifyKey("a.test", a.server.homeserver.signingKey.keyId, Date.now()), undefined);
    assert.equal(front.requests.length, seen);
  });

  test("federation_ip_range_blacklist and ip_range_blacklist add ranges", async () => {
    await assert.rejects(client().request("public.test", VERSION), failsWith("unreachable", "blocked_address"));
    await assert.rejects(client().request("also-public.test", VERSION), failsWith("unreachable", "blocked_address"));
  });

  test("this server itself and names that are not server names are refused", async () => {
    await assert.rejects(client().request("b.test", VERSION), failsWith("forbidden_destination"));
    await assert.rejects(client().request("not a name", VERSION), failsWith("unreachable"));
  });
});
