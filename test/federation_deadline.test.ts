/**
 * A peer that never finishes answering (issue #15, hostile peers: "a peer that never answers"):
 * the outbound transport gives a request an overall deadline besides its inactivity timeout, so
 * a peer that trickles a byte at a time cannot hold it; and the outbox keeps delivering to other
 * servers while one destination hangs. The slow peers are TLS servers with the test CA's
 * certificate, reached under made-up names as any other server.
 */
import assert from "node:assert/strict";
import http from "node:http";
import tls from "node:tls";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { AddressPolicy } from "../src/services/outbound/address_policy.js";
import { FederationTransport, TransportError } from "../src/services/federation/transport.js";
import { TestFederation, type FederatedServer } from "./helpers/federation.js";
import { makeTestCa, testDialer } from "./helpers/livekit.js";
import { enc, ok, User, type Ev } from "./helpers/rooms.js";
import { eventually, request } from "./helpers/server.js";

/** A TLS server that answers every connection with `head`, then one byte every 20 ms, for ever. */
async function tricklingPeer(pki: { key: string; cert: string }, head: string): Promise<{ port: number; connections: () => number; close: () => Promise<void> }> {
  let connections = 0;
  const server = tls.createServer({ key: pki.key, cert: pki.cert }, (socket) => {
    connections++;
    socket.on("error", () => undefined);
    socket.write(head);
    const drip = setInterval(() => socket.write("a"), 20);
    socket.on("close", () => clearInterval(drip));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => connections,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe("a federation request has a deadline", () => {
  const pki = makeTestCa(["slow.test"]);
  const target = { tlsName: "slow.test", hostHeader: "slow.test", connectHost: "slow.test", port: 8448 };
  const transport = (port: number, deadlineMs?: number) =>
    new FederationTransport({
      policy: new AddressPolicy({ allow: ["127.0.0.1"] }),
      dialer: testDialer({ "slow.test:8448": { address: "127.0.0.1", port } }),
      ca: [pki.ca],
      verifyCertificates: true,
      deadlineMs,
    });
  const isTimeout = (err: unknown) => err instanceof TransportError && err.kind === "timeout";

  for (const [what, head] of [
    ["headers that never end", "HTTP/1.1 200 OK\r\nX-Slow: "],
    ["a body that never ends", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"],
  ] as const) {
    test(`a peer trickling ${what}, a byte well within the inactivity timeout, fails at the deadline`, async () => {
      const peer = await tricklingPeer(pki, head);
      try {
        // The inactivity timeout (30 s) never fires: only the deadline ends the request.
        await assert.rejects(transport(peer.port, 300).request({ method: "GET", target, path: "/_matrix/federation/v1/version" }), isTimeout);
        assert.equal(peer.connections(), 1);
      } finally {
        await peer.close();
      }
    });
  }

  test("a request's own timeout (a client's, for key queries) caps the deadline", async () => {
    const peer = await tricklingPeer(pki, "HTTP/1.1 200 OK\r\nX-Slow: ");
    try {
      await assert.rejects(transport(peer.port).request({ method: "POST", target, path: "/_matrix/federation/v1/user/keys/query", body: "{}", timeoutMs: 300 }), isTimeout);
    } finally {
      await peer.close();
    }
  });
});

describe("the outbox while a destination hangs", () => {
  const fed = new TestFederation(["a.test", "b.test", "c.test"]);
  let a: FederatedServer;
  let alice: User;
  let bob: User;
  let roomId: string;
  /** Where c.test's front sends requests once c.test "hangs": answers begun and never finished. */
  let hanging: http.Server;
  const held: { url: string; open: boolean }[] = [];

  before(async () => {
    await fed.frontsUp();
    a = await fed.start("a.test");
    const b = await fed.start("b.test");
    const c = await fed.start("c.test");
    alice = await User.register(a.server.baseUrl, "alice");
    bob = await User.register(b.server.baseUrl, "bob");
    const carol = await User.register(c.server.baseUrl, "carol");
    roomId = await alice.createRoom({ preset: "public_chat" });
    for (const [user, server] of [[bob, b], [carol, c]] as const) {
      const res = await request(server.server.baseUrl, "POST", `/_matrix/client/v3/join/${enc(roomId)}?via=a.test`, { token: user.token, body: {} });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      await eventually(async () => ((await alice.membershipIn(roomId, user.userId)) === "join" ? true : undefined));
    }
    hanging = http.createServer((req, res) => {
      const entry = { url: `${req.method} ${req.url}`, open: true };
      held.push(entry);
      res.writeHead(200, { "content-type": "application/json", "content-length": "1000000" });
      const drip = setInterval(() => res.write(" "), 200);
      res.on("close", () => {
        entry.open = false;
        clearInterval(drip);
      });
    });
    await new Promise<void>((resolve) => hanging.listen(0, "127.0.0.1", resolve));
    fed.fronts.get("c.test")!.target = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}`;
  });
  after(async () => {
    hanging.closeAllConnections();
    hanging.close();
    await fed.close();
  });

  const bobSees = (body: string) =>
    eventually(async () => ((ok(await bob.messages(roomId, { dir: "b", limit: 20 })).chunk as Ev[]).some((e) => e.content.body === body) ? true : undefined));

  test("b.test gets the room's events while c.test holds its transaction open", async () => {
    await alice.send(roomId, "first while c hangs");
    const txn = await eventually(async () => held.find((h) => h.url.startsWith("PUT /_matrix/federation/v1/send/")));
    await bobSees("first while c hangs");
    await alice.send(roomId, "second while c hangs");
    await bobSees("second while c hangs");
    assert.equal(txn.open, true, "c.test's transaction is still being answered");
  });
});
