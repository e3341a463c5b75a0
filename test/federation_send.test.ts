/**
 * Federation transactions (issue #15): `PUT /_matrix/federation/v1/send/{txnId}` both ways,
 * between Switchboards over TLS with a test CA. Typing, read receipts, to-device messages and
 * device-list changes travel as EDUs from one server's clients to the other's `/sync`; a
 * destination that is down gets what was queued for it once it is back, across a restart of
 * the sender; hostile transactions are refused or ignored. Until federation joins exist, remote
 * memberships are written into storage directly, as a federated room would have them.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { publicKeyBase64, signJson } from "../src/events/signing.js";
import { after, before, describe, test } from "node:test";
import pino from "pino";
import { systemClock } from "../src/services/clock.js";
import { FederationService } from "../src/services/federation/service.js";
import { MAX_RETRY_INTERVAL_MS, MIN_RETRY_INTERVAL_MS, nextRetryInterval } from "../src/services/federation/sender/sender.js";
import { TEST_POSTGRES } from "./helpers/database.js";
import { signedRequest, signerOf, TestFederation, type FederatedServer } from "./helpers/federation.js";
import { enc, User } from "./helpers/rooms.js";
import { ephemeral, RestartableServers, shareRoom, syncOnce, syncUntil } from "./helpers/federation_send.js";
import { request } from "./helpers/server.js";

const SEND = "/_matrix/federation/v1/send";
const CS = "/_matrix/client/v3";


describe("federation transactions", () => {
  const fed = new TestFederation(["a.test", "b.test", "c.test", "d.test", "e.test"]);
  const servers = new RestartableServers(fed);
  let a: FederatedServer;
  let b: FederatedServer;
  let alice: User;
  let bob: User;
  let room: string;

  before(async () => {
    await fed.frontsUp();
    a = await servers.start("a.test", servers.newDir());
    b = await servers.start("b.test", servers.newDir());
    alice = await User.register(a.server.baseUrl, "alice");
    bob = await User.register(b.server.baseUrl, "bob");
    room = await alice.createRoom({});
    await shareRoom(a, b, room, alice, bob);
  });

  after(() => servers.close());

  test("typing on a.test reaches bob's /sync on b.test, and so does its end", async () => {
    const first = await syncOnce(bob);
    const put = await alice.req("PUT", `/rooms/${enc(room)}/typing/${enc(alice.userId)}`, { typing: true, timeout: 30_000 });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    const typing = await syncUntil(bob, first.next_batch, (r) => ephemeral(r, room, "m.typing").some((e) => (e.content.user_ids as string[]).includes(alice.userId)));
    const stop = await alice.req("PUT", `/rooms/${enc(room)}/typing/${enc(alice.userId)}`, { typing: false });
    assert.equal(stop.status, 200);
    await syncUntil(bob, typing.next_batch, (r) => ephemeral(r, room, "m.typing").some((e) => (e.content.user_ids as string[]).length === 0));
  });

  test("a public read receipt reaches b.test; a private one does not", async () => {
    const first = await syncOnce(bob);
    const hidden = await alice.send(room, "private");
    const eventId = await alice.send(room, "hello bob");
    assert.equal((await alice.req("POST", `/rooms/${enc(room)}/receipt/m.read.private/${enc(hidden)}`, {})).status, 200);
    assert.equal((await alice.req("POST", `/rooms/${enc(room)}/receipt/m.read/${enc(eventId)}`, {})).status, 200);
    const r = await syncUntil(bob, first.next_batch, (s) => ephemeral(s, room, "m.receipt").length > 0);
    const content = ephemeral(r, room, "m.receipt")[0]!.content;
    assert.ok((content[eventId] as Record<string, Record<string, unknown>>)["m.read"]![alice.userId], JSON.stringify(content));
    assert.equal(content[hidden], undefined, "a private receipt stays on its server");
    // Nothing about the private receipt was ever queued for b.test.
    const queued = await a.server.homeserver.storage.federationQueue.nextBatch("b.test", 50, 100);
    assert.ok(!queued.edus.some((e) => e.content.includes(hidden)));
  });

  test("a to-device message for bob's device on b.test arrives in his /sync, once", async () => {
    const first = await syncOnce(bob);
    const messages = { [bob.userId]: { [bob.deviceId]: { secret: "for bob" } } };
    const put = await alice.req("PUT", `/sendToDevice/m.test/${enc("txn-1")}`, { messages });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    // The client retries its transaction: nothing more is sent.
    assert.equal((await alice.req("PUT", `/sendToDevice/m.test/${enc("txn-1")}`, { messages })).status, 200);
    const all = await alice.req("PUT", `/sendToDevice/m.test/${enc("txn-2")}`, { messages: { [bob.userId]: { "*": { secret: "to all" } } } });
    assert.equal(all.status, 200);
    const got: { sender: string; type: string; content: Record<string, unknown> }[] = [];
    let token = first.next_batch;
    while (got.length < 2) {
      const r = await syncOnce(bob, token, 5_000);
      got.push(...(r.to_device?.events ?? []));
      token = r.next_batch;
    }
    assert.deepEqual(
      got.map((e) => [e.sender, e.type, e.content.secret]),
      [
        [alice.userId, "m.test", "for bob"],
        [alice.userId, "m.test", "to all"],
      ],
    );
    const later = await syncOnce(bob, token);
    assert.deepEqual(later.to_device?.events ?? [], []);
  });

  test("bob's new device keys on b.test show in alice's device_lists.changed on a.test", async () => {
    const first = await syncOnce(alice);
    const upload = await bob.req("POST", "/keys/upload", {
      device_keys: {
        user_id: bob.userId,
        device_id: bob.deviceId,
        algorithms: ["m.olm.v1.curve25519-aes-sha2"],
        keys: { [`curve25519:${bob.deviceId}`]: "k1", [`ed25519:${bob.deviceId}`]: "k2" },
        signatures: {},
      },
    });
    assert.equal(upload.status, 200, JSON.stringify(upload.body));
    await syncUntil(alice, first.next_batch, (r) => r.device_lists?.changed.includes(bob.userId) ?? false);
  });

  test("bob's new cross-signing keys on b.test (m.signing_key_update) show in alice's device_lists.changed too", async () => {
    const first = await syncOnce(alice);
    const master = generateKeyPairSync("ed25519").privateKey;
    const selfSigning = generateKeyPairSync("ed25519").privateKey;
    const keyObject = (usage: string, pub: string) => ({ user_id: bob.userId, usage: [usage], keys: { [`ed25519:${pub}`]: pub } });
    const masterPub = publicKeyBase64(master);
    const body = {
      master_key: keyObject("master", masterPub),
      self_signing_key: signJson(keyObject("self_signing", publicKeyBase64(selfSigning)), bob.userId, `ed25519:${masterPub}`, master),
    };
    const upload = await bob.req("POST", "/keys/device_signing/upload", body);
    assert.equal(upload.status, 200, JSON.stringify(upload.body));
    await syncUntil(alice, first.next_batch, (r) => r.device_lists?.changed.includes(bob.userId) ?? false);
  });

  test("nothing is queued for a server federation_domain_whitelist leaves out, nor for this server", async () => {
    const hs = a.server.homeserver;
    const config = { ...hs.services.config, federation: { ...hs.services.config.federation, domainWhitelist: ["zz.test"] } };
    // A second service on a.test's database, with the whitelist; it is never started, so it delivers nothing.
    const other = new FederationService({ config, storage: hs.storage, clock: systemClock, signingKey: () => hs.signingKey, logger: pino({ level: "silent" }) });
    const queue = hs.storage.federationQueue;
    await other.sender.sendEdu("c.test", "m.test", {});
    await other.sender.sendEdu("a.test", "m.test", {});
    assert.equal(await queue.hasQueued("c.test"), false);
    assert.equal(await queue.hasQueued("a.test"), false);
    // A listed server is queued for (zz.test is never claimed, so a.test's own sender leaves it be).
    await other.sender.sendEdu("zz.test", "m.whitelisted", {});
    const queued = await queue.nextBatch("zz.test", 50, 100);
    assert.deepEqual(
      queued.edus.map((e) => e.eduType),
      ["m.whitelisted"],
    );
    await queue.remove(queued.edus.map((e) => e.id));
  });

  test("the backoff starts at 10 minutes and grows fivefold (with jitter) to a day at most", () => {
    assert.equal(nextRetryInterval(0), MIN_RETRY_INTERVAL_MS);
    assert.equal(nextRetryInterval(MIN_RETRY_INTERVAL_MS, () => 0.5), 3_300_000);
    assert.equal(nextRetryInterval(MIN_RETRY_INTERVAL_MS, () => 0), 2_400_000);
    let interval = 0;
    for (let i = 0; i < 10; i++) interval = nextRetryInterval(interval);
    assert.equal(interval, MAX_RETRY_INTERVAL_MS);
    assert.equal(MAX_RETRY_INTERVAL_MS, 86_400_000);
  });

  describe("hostile or malformed transactions to b.test", () => {
    const txn = (extra: Record<string, unknown>) => ({ origin: "a.test", origin_server_ts: Date.now(), pdus: [], ...extra });

    test("a bad signature is 401 M_UNAUTHORIZED; a body from another origin 403", async () => {
      const forged = await signedRequest(b, { ...signerOf(a), privateKey: generateKeyPairSync("ed25519").privateKey }, "PUT", `${SEND}/forged`, { body: txn({}) });
      assert.equal(forged.status, 401);
      assert.equal(forged.body.errcode, "M_UNAUTHORIZED");
      const unsigned = await request(b.server.baseUrl, "PUT", `${SEND}/unsigned`, { body: txn({}) });
      assert.equal(unsigned.status, 401);
      assert.equal(unsigned.body.errcode, "M_UNAUTHORIZED");
      const other = await signedRequest(b, signerOf(a), "PUT", `${SEND}/other-origin`, { body: txn({ origin: "c.test" }) });
      assert.equal(other.status, 403);
      assert.equal(other.body.errcode, "M_FORBIDDEN");
    });

    test("51 PDUs, 101 EDUs, or fields of the wrong type: 400 M_BAD_JSON", async () => {
      for (const body of [
        txn({ pdus: Array.from({ length: 51 }, () => ({})) }),
        txn({ edus: Array.from({ length: 101 }, () => ({ edu_type: "m.unknown", content: {} })) }),
        txn({ pdus: {} }),
        txn({ origin_server_ts: "now" }),
        { origin_server_ts: 1, pdus: [] },
      ]) {
        const res = await signedRequest(b, signerOf(a), "PUT", `${SEND}/bad-${Math.random()}`, { body });
        assert.equal(res.status, 400, JSON.stringify(res.body));
        assert.equal(res.body.errcode, "M_BAD_JSON");
      }
    });

    test("a body over the largest transaction is 413 M_TOO_LARGE", async () => {
      const res = await request(b.server.baseUrl, "PUT", `${SEND}/huge`, { body: txn({ filler: "x".repeat(11 * 1024 * 1024) }) });
      assert.equal(res.status, 413);
      assert.equal(res.body.errcode, "M_TOO_LARGE");
    });

    test("a replayed transaction gets the first answer and delivers nothing twice; so does a message ID seen before", async () => {
      const first = await syncOnce(bob);
      const edu = {
        edu_type: "m.direct_to_device",
        content: { sender: alice.userId, type: "m.replay", message_id: "m1", messages: { [bob.userId]: { [bob.deviceId]: { n: 1 } } } },
      };
      const pdu = { type: "m.room.message", room_id: room, sender: alice.userId, content: { body: "hi" }, depth: 1, prev_events: [], auth_events: [], origin_server_ts: 1, hashes: { sha256: "x" }, signatures: {} };
      const body = txn({ pdus: [pdu], edus: [edu, { edu_type: "m.presence", content: { push: [] } }, { edu_type: "m.whatever" }] });
      const one = await signedRequest(b, signerOf(a), "PUT", `${SEND}/replay-1`, { body });
      assert.equal(one.status, 200, JSON.stringify(one.body));
      assert.equal(Object.keys(one.body.pdus as Record<string, unknown>).length, 1, "the PDU is answered under its event ID");
      const again = await signedRequest(b, signerOf(a), "PUT", `${SEND}/replay-1`, { body: { ...body, origin_server_ts: Date.now() + 1 } });
      assert.equal(again.status, 200);
      assert.deepEqual(again.body, one.body);
      const sameMessage = await signedRequest(b, signerOf(a), "PUT", `${SEND}/replay-2`, { body: txn({ edus: [edu] }) });
      assert.equal(sameMessage.status, 200);
      const r = await syncOnce(bob, first.next_batch);
      const replays = (r.to_device?.events ?? []).filter((e) => e.type === "m.replay");
      assert.equal(replays.length, 1, JSON.stringify(r.to_device));
      assert.deepEqual(replays[0]!.content, { n: 1 });
    });

    test("without room federation's handler, each PDU is answered with an error and the transaction succeeds", async () => {
      const hs = b.server.homeserver;
      // A receiver as a server without room federation has it: nothing set its PDU handler.
      const bare = new FederationService({ config: hs.services.config, storage: hs.storage, clock: systemClock, signingKey: () => hs.signingKey, logger: pino({ level: "silent" }) });
      const pdu = { type: "m.room.message", room_id: room, sender: alice.userId, content: { body: "hi" }, depth: 1, prev_events: [], auth_events: [], origin_server_ts: 2, hashes: { sha256: "x" }, signatures: {} };
      const answer = await bare.transactions.receive("a.test", "bare-1", txn({ pdus: [pdu, { event_id: "$v1style", room_id: room }] }));
      assert.deepEqual(Object.values(answer.pdus), [{ error: "room federation not enabled" }, { error: "room federation not enabled" }]);
      assert.deepEqual(answer.pdus.$v1style, { error: "room federation not enabled" });
    });

    test("typing, receipts and to-device messages about another server's users are ignored", async () => {
      const typing = (userId: string) => ({ edu_type: "m.typing", content: { room_id: room, user_id: userId, typing: true } });
      const receipt = { edu_type: "m.receipt", content: { [room]: { "m.read": { [bob.userId]: { event_ids: ["$forged"], data: { ts: 1 } } } } } };
      const toDevice = {
        edu_type: "m.direct_to_device",
        content: { sender: bob.userId, type: "m.forged", message_id: "f1", messages: { [bob.userId]: { [bob.deviceId]: {} } } },
      };
      const first = await syncOnce(bob);
      const res = await signedRequest(b, signerOf(a), "PUT", `${SEND}/foreign`, {
        body: txn({ edus: [typing(bob.userId), typing("@carol:c.test"), typing("@stranger:a.test"), receipt, toDevice] }),
      });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      // EDUs are handled before the answer: whatever they would change has changed by now.
      assert.deepEqual(b.server.homeserver.services.typing.snapshot(room).userIds, []);
      const r = await syncOnce(bob, first.next_batch);
      assert.deepEqual(ephemeral(r, room, "m.receipt"), []);
      assert.deepEqual((r.to_device?.events ?? []).filter((e) => e.type === "m.forged"), []);
    });
  });

  test("a destination that is down gets what was queued for it once it is back, across a restart of the sender", async () => {
    const cDir = servers.newDir();
    const dDir = servers.newDir();
    let c = await servers.start("c.test", cDir);
    let d = await servers.start("d.test", dDir);
    const carol = await User.register(c.server.baseUrl, "carol");
    const dave = await User.register(d.server.baseUrl, "dave");
    const roomCD = await carol.createRoom({});
    await shareRoom(c, d, roomCD, carol, dave);
    const first = await syncOnce(dave);
    await servers.stop(d);

    const put = await carol.req("PUT", `/sendToDevice/m.test/${enc("while-down")}`, { messages: { [dave.userId]: { [dave.deviceId]: { n: "queued" } } } });
    assert.equal(put.status, 200, "a destination being down never fails the local request");
    const queue = c.server.homeserver.storage.federationQueue;
    // The attempt fails (d.test's front answers 502) and the destination backs off, in the database.
    for (;;) {
      const state = await queue.get("d.test");
      if (state?.failingSince != null) {
        assert.ok(state.retryAt! > Date.now(), "nothing is tried again before the backoff ends");
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok(await queue.hasQueued("d.test"), "the EDU waits in the outbox");

    await servers.stop(c);
    c = await servers.start("c.test", cDir);
    assert.ok(await c.server.homeserver.storage.federationQueue.hasQueued("d.test"), "the outbox survived the restart");
    d = await servers.start("d.test", dDir);
    // The same account on the restarted server (a new port).
    const daveAgain = new User(d.server.baseUrl, dave.userId, dave.token, dave.deviceId);
    // d.test talks to c.test (a profile lookup, signed): c.test knows it is up and sends at once.
    const profile = await request(d.server.baseUrl, "GET", `${CS}/profile/${enc(carol.userId)}`, { token: dave.token });
    assert.equal(profile.status, 200, JSON.stringify(profile.body));
    const got: unknown[] = [];
    let token = first.next_batch;
    while (got.length === 0) {
      const r = await syncOnce(daveAgain, token, 5_000);
      got.push(...(r.to_device?.events ?? []).map((e) => e.content.n));
      token = r.next_batch;
    }
    assert.deepEqual(got, ["queued"]);
    // The rows go once c.test has d.test's answer, which may come just after dave's sync.
    while (await c.server.homeserver.storage.federationQueue.hasQueued("d.test")) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal((await c.server.homeserver.storage.federationQueue.get("d.test"))?.failingSince, null, "the backoff ended");
  });

  test(
    "two processes on one PostgreSQL: the one holding a destination delivers what the other queued; a dead holder's lease is taken over",
    { skip: TEST_POSTGRES ? false : "needs PostgreSQL (SWITCHBOARD_TEST_POSTGRES)" },
    async () => {
      const dir = servers.newDir();
      const one = await servers.start("e.test", dir, "w1");
      const two = await servers.start("e.test", dir, "w2");
      const erin = await User.register(one.server.baseUrl, "erin");
      const erinOnTwo = new User(two.server.baseUrl, erin.userId, erin.token, erin.deviceId);
      const roomE = await erin.createRoom({});
      await shareRoom(one, b, roomE, erin, bob);
      const first = await syncOnce(bob);
      const send = (via: User, n: string) => via.req("PUT", `/sendToDevice/m.workers/${enc(n)}`, { messages: { [bob.userId]: { [bob.deviceId]: { n } } } });
      const received: unknown[] = [];
      let token = first.next_batch;
      const awaitMessages = async (count: number) => {
        while (received.length < count) {
          const r = await syncOnce(bob, token, 5_000);
          received.push(...(r.to_device?.events ?? []).filter((e) => e.type === "m.workers").map((e) => e.content.n));
          token = r.next_batch;
        }
      };
      const queue = one.server.homeserver.storage.federationQueue;

      assert.equal((await send(erin, "via one")).status, 200);
      await awaitMessages(1);
      // Process one delivered, and still holds b.test (an idle job keeps its claim a few seconds).
      const held = await queue.get("b.test");
      assert.equal(held?.claimedBy, one.server.homeserver.storage.cluster.workerId);
      assert.equal((await send(erinOnTwo, "via two")).status, 200);
      await awaitMessages(2);
      assert.deepEqual(received, ["via one", "via two"]);

      // Process one goes; its lease is left as a process killed mid-delivery would leave it.
      await servers.stop(one);
      const claim = { worker: "w1#killed", leaseUntil: Date.now() + 60_000, live: ["w1#killed"], now: Date.now() };
      assert.ok(await two.server.homeserver.storage.federationQueue.claim("b.test", claim), "the lease is held by a process that is gone");
      assert.equal((await send(erinOnTwo, "after one died")).status, 200);
      await awaitMessages(3);
      assert.deepEqual(received, ["via one", "via two", "after one died"]);
    },
  );
});
