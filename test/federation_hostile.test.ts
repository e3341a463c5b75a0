/**
 * Hostile or broken peers, as the key fetcher and the federation client meet them: key responses
 * for another server, unsigned or wrongly signed, expired, oversized, or not JSON at all. None
 * of them yields a key, and none breaks the server.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { publicKeyBase64, signJson } from "../src/events/signing.js";
import { FederationError } from "../src/services/federation/client.js";
import { TransportError } from "../src/services/federation/transport.js";
import { TestFederation, type FederatedServer } from "./helpers/federation.js";

const KEY_ID = "ed25519:evil";

describe("hostile peers", () => {
  const fed = new TestFederation(["b.test", "evil.test"]);
  const evilKey: KeyObject = generateKeyPairSync("ed25519").privateKey;
  let answer: (path: string) => { status: number; body: string } = () => ({ status: 404, body: "{}" });
  let evil: https.Server;
  let b: FederatedServer;

  const keyResponse = (overrides: Record<string, unknown> = {}, signer: KeyObject = evilKey) =>
    signJson(
      { server_name: "evil.test", verify_keys: { [KEY_ID]: { key: publicKeyBase64(evilKey) } }, old_verify_keys: {}, valid_until_ts: Date.now() + 3_600_000, ...overrides },
      "evil.test",
      KEY_ID,
      signer,
    );

  before(async () => {
    evil = https.createServer({ key: fed.pki.key, cert: fed.pki.cert }, (req, res) => {
      const { status, body } = answer(req.url ?? "/");
      res.writeHead(status, { "content-type": "application/json" });
      res.end(body);
    });
    await new Promise<void>((resolve) => evil.listen(0, "127.0.0.1", resolve));
    await fed.frontsUp();
    // evil.test is not a Switchboard: its port 8448 is the hostile server above.
    fed.extraAddresses["evil.test:8448"] = { address: "127.0.0.1", port: (evil.address() as AddressInfo).port };
    b = await fed.start("b.test");
  });
  after(async () => {
    await fed.close();
    await new Promise<void>((resolve) => {
      evil.close(() => resolve());
      evil.closeAllConnections();
    });
  });

  /** A fresh lookup each time: the remembered failure would otherwise hold off the next fetch. */
  async function lookup(respond: (path: string) => { status: number; body: string }) {
    answer = respond;
    return b.server.homeserver.services.federation.keys.fetchDirect("evil.test").then(
      () => "accepted",
      (err: Error) => err.message,
    );
  }

  test("a valid response is accepted (the control case)", async () => {
    assert.equal(await lookup(() => ({ status: 200, body: JSON.stringify(keyResponse()) })), "accepted");
  });

  test("a response naming another server is refused", async () => {
    const other = signJson({ ...keyResponse(), server_name: "b.test", signatures: undefined }, "b.test", KEY_ID, evilKey);
    assert.match(await lookup(() => ({ status: 200, body: JSON.stringify(other) })), /not valid: it is for "b\.test"/);
  });

  test("an unsigned response, or one signed by another key, is refused", async () => {
    const { signatures: _s, ...unsigned } = keyResponse() as Record<string, unknown>;
    assert.match(await lookup(() => ({ status: 200, body: JSON.stringify(unsigned) })), /not signed/);
    const forged = keyResponse({}, generateKeyPairSync("ed25519").privateKey);
    assert.match(await lookup(() => ({ status: 200, body: JSON.stringify(forged) })), /signature by ed25519:evil is not valid/);
  });

  test("a response without valid_until_ts or verify_keys is refused", async () => {
    assert.match(await lookup(() => ({ status: 200, body: JSON.stringify(keyResponse({ valid_until_ts: "soon" })) })), /valid_until_ts/);
    assert.match(await lookup(() => ({ status: 200, body: JSON.stringify(keyResponse({ verify_keys: [] })) })), /verify_keys/);
  });

  test("an oversized answer is cut off; a non-JSON one is a bad response", async () => {
    answer = () => ({ status: 200, body: JSON.stringify({ pad: "x".repeat(2 * 1024 * 1024) }) });
    await assert.rejects(b.server.homeserver.services.federation.client.request("evil.test", { method: "GET", path: "/_matrix/key/v2/server" }), (err: unknown) => {
      assert.ok(err instanceof FederationError);
      assert.ok(err.cause instanceof TransportError);
      assert.equal(err.cause.kind, "too_large");
      return true;
    });
    answer = () => ({ status: 200, body: "<html>hello</html>" });
    await assert.rejects(b.server.homeserver.services.federation.client.request("evil.test", { method: "GET", path: "/_matrix/key/v2/server" }), (err: unknown) => {
      assert.ok(err instanceof FederationError);
      assert.equal(err.kind, "bad_response");
      return true;
    });
  });

  test("an expired key stays unusable for requests made now", async () => {
    assert.equal(await lookup(() => ({ status: 200, body: JSON.stringify(keyResponse({ valid_until_ts: Date.now() - 1000 })) })), "accepted");
    const stored = await b.server.homeserver.storage.serverKeys.get("evil.test", KEY_ID);
    // The earlier, longer-lived answer is kept: a shorter one never replaces it.
    assert.ok(stored!.validUntilTs > Date.now());
  });
});
