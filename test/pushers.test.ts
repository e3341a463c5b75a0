/**
 * HTTP pushers: `/pushers` and `/pushers/set` as clients use them, and delivery to a recording
 * push gateway (a local HTTP server) as the Push Gateway API describes it: payloads, priority,
 * retries, rejected pushkeys, restarts, and a gateway that never answers.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, beforeEach, describe, test } from "node:test";
import { configFromObject } from "../src/config/load.js";
import type { Notified } from "../src/services/push/actions.js";
import { removeTestData, TEST_POSTGRES } from "./helpers/database.js";
import { ALLOW_LOOPBACK, Gateway, pusherBody } from "./helpers/push_gateway.js";
import { assertError, CS, ok, User } from "./helpers/rooms.js";
import { request, startServer, teardown, until, type TestServer } from "./helpers/server.js";

async function setPusher(user: User, body: Record<string, unknown>): Promise<void> {
  ok(await user.req("POST", "/pushers/set", body));
}

async function pushersOf(user: User): Promise<Record<string, unknown>[]> {
  return ok(await user.req("GET", "/pushers")).pushers as Record<string, unknown>[];
}

describe("pushers", () => {
  let server: TestServer;
  let gateway: Gateway;
  let alice: User;
  let bob: User;
  let carol: User;

  before(async () => {
    gateway = await new Gateway().start();
    server = await startServer({ ...ALLOW_LOOPBACK, allow_guest_access: true });
    alice = await User.register(server.baseUrl, "alice");
    carol = await User.register(server.baseUrl, "carol");
  });

  /** Each test pushes to a recipient of its own, so that one's leftovers never reach another. */
  let bobs = 0;
  beforeEach(async () => {
    bob = await User.register(server.baseUrl, `bob${++bobs}`);
  });
  after(() => teardown(() => server?.stop(), () => gateway?.stop()));

  /** A fresh gateway per test, so what one test's pushes do not show up in another. */
  async function freshGateway(): Promise<Gateway> {
    const g = await new Gateway().start();
    after(() => g.stop());
    return g;
  }

  test("set, list, replace, append and delete", async () => {
    const u = await User.register(server.baseUrl, "setter");
    const other = await User.register(server.baseUrl, "other");
    assert.deepEqual(await pushersOf(u), []);
    await setPusher(u, pusherBody(gateway.url, { profile_tag: "tag", data: { url: gateway.url, format: "event_id_only", extra: 1 } }));
    assert.deepEqual(await pushersOf(u), [
      {
        pushkey: "key-1",
        kind: "http",
        app_id: "org.example.app.android",
        app_display_name: "Example",
        device_display_name: "Phone",
        profile_tag: "tag",
        lang: "en",
        data: { url: gateway.url, format: "event_id_only", extra: 1 },
      },
    ]);
    // The same app ID and pushkey again: the pusher is updated, not doubled.
    await setPusher(u, pusherBody(gateway.url, { lang: "de", device_display_name: "Tablet" }));
    const [updated, ...rest] = await pushersOf(u);
    assert.equal(rest.length, 0);
    assert.equal(updated?.lang, "de");
    assert.equal(updated?.device_display_name, "Tablet");
    assert.deepEqual(updated?.data, { url: gateway.url });
    assert.equal("profile_tag" in updated!, false);
    // Another user with the same app ID and pushkey takes it over, unless it appends.
    await setPusher(other, pusherBody(gateway.url, { append: true }));
    assert.equal((await pushersOf(u)).length, 1);
    await setPusher(other, pusherBody(gateway.url));
    assert.equal((await pushersOf(u)).length, 0);
    assert.equal((await pushersOf(other)).length, 1);
    // kind null deletes; deleting what is not there is no error.
    await setPusher(other, pusherBody(gateway.url, { pushkey: "key-2" }));
    await setPusher(other, { kind: null, app_id: "org.example.app.android", pushkey: "key-1" });
    assert.deepEqual((await pushersOf(other)).map((p) => p.pushkey), ["key-2"]);
    await setPusher(other, { kind: null, app_id: "org.example.app.android", pushkey: "never-set" });
    // r0 serves the same.
    const r0 = await request(server.baseUrl, "GET", "/_matrix/client/r0/pushers", { token: other.token });
    assert.equal((ok(r0).pushers as unknown[]).length, 1);
  });

  test("every invalid request is refused with the spec's status and errcode", async () => {
    const u = await User.register(server.baseUrl, "invalid");
    const set = (body: unknown) => u.req("POST", "/pushers/set", body);
    const without = (key: string) => {
      const b = pusherBody(gateway.url);
      delete b[key];
      return b;
    };
    assertError(await set(without("kind")), 400, "M_MISSING_PARAM");
    assertError(await set(without("app_id")), 400, "M_MISSING_PARAM");
    assertError(await set(without("pushkey")), 400, "M_MISSING_PARAM");
    const missing = assertError(await set(without("lang")), 400, "M_MISSING_PARAM");
    assert.match(missing, /lang/);
    assertError(await set(without("data")), 400, "M_MISSING_PARAM");
    assertError(await set(without("app_display_name")), 400, "M_MISSING_PARAM");
    assertError(await set(without("device_display_name")), 400, "M_MISSING_PARAM");
    assertError(await set({ kind: null, app_id: "a" }), 400, "M_MISSING_PARAM");
    assertError(await set(pusherBody(gateway.url, { kind: "email" })), 400, "M_INVALID_PARAM");
    assertError(await set(pusherBody(gateway.url, { kind: "carrier-pigeon" })), 400, "M_INVALID_PARAM");
    assertError(await set(pusherBody(gateway.url, { app_id: "a".repeat(65) })), 400, "M_INVALID_PARAM");
    ok(await set(pusherBody(gateway.url, { app_id: "a".repeat(64) })));
    // 171 euro signs are 171 characters but 513 bytes.
    assertError(await set(pusherBody(gateway.url, { pushkey: "€".repeat(171) })), 400, "M_INVALID_PARAM");
    ok(await set(pusherBody(gateway.url, { pushkey: "k".repeat(512) })));
    assertError(await set(pusherBody(gateway.url, { data: {} })), 400, "M_MISSING_PARAM");
    assertError(await set(pusherBody(gateway.url, { data: { url: 42 } })), 400, "M_INVALID_PARAM");
    assertError(await set(pusherBody("/_matrix/push/v1/notify")), 400, "M_INVALID_PARAM");
    assertError(await set(pusherBody("ftp://127.0.0.1/_matrix/push/v1/notify")), 400, "M_INVALID_PARAM");
    assertError(await set(pusherBody(gateway.url.replace("/notify", "/notify/"))), 400, "M_INVALID_PARAM");
    assertError(await set(pusherBody(gateway.url.replace("/_matrix/push/v1/notify", "/push"))), 400, "M_INVALID_PARAM");
    assertError(await set(pusherBody(gateway.url, { data: { url: gateway.url, format: "full" } })), 400, "M_INVALID_PARAM");
    // Wrong types, and bodies that are not a JSON object.
    assertError(await set(pusherBody(gateway.url, { kind: 1 })), 400, "M_BAD_JSON");
    assertError(await set(pusherBody(gateway.url, { lang: ["en"] })), 400, "M_BAD_JSON");
    assertError(await set(pusherBody(gateway.url, { data: "https://example.org" })), 400, "M_BAD_JSON");
    assertError(await set(pusherBody(gateway.url, { append: "yes" })), 400, "M_BAD_JSON");
    assertError(await set([]), 400, "M_BAD_JSON");
    assertError(await set("{not json"), 400, "M_NOT_JSON");
    // Without a token, and as a guest.
    assertError(await request(server.baseUrl, "GET", `${CS}/pushers`), 401, "M_MISSING_TOKEN");
    const guest = ok(await request(server.baseUrl, "POST", `${CS}/register?kind=guest`, { body: {} }));
    const asGuest = await request(server.baseUrl, "POST", `${CS}/pushers/set`, { token: guest.access_token as string, body: pusherBody(gateway.url) });
    assertError(asGuest, 403, "M_GUEST_ACCESS_FORBIDDEN");
    assert.equal(gateway.received.length, 0);
  });

  test("a message in a room of two reaches the recipient's gateway, in full or as its ID only", async () => {
    const full = await freshGateway();
    const idOnly = await freshGateway();
    const phone = await bob.newDevice();
    // No invite: it would notify Bob too (`.m.rule.invite_for_me`), and count as unread.
    const roomId = await alice.createRoom({ preset: "public_chat", name: "Tea" });
    await bob.join(roomId);
    await setPusher(bob, pusherBody(full.url, { pushkey: "bob-full", data: { url: full.url, extra: "kept" } }));
    await setPusher(phone, pusherBody(idOnly.url, { app_id: "org.example.app.ios", pushkey: "bob-id", data: { url: idOnly.url, format: "event_id_only" } }));
    const first = await alice.send(roomId, "hello there");
    // The pushes read together carry the badge as of their read: wait for the first on its own.
    await until(() => full.accepted.length === 1 && idOnly.accepted.length === 1);
    const second = await alice.send(roomId, "are you there?");
    await until(() => full.accepted.length === 2 && idOnly.accepted.length === 2);
    assert.deepEqual(full.eventIds(), [first, second]);
    assert.deepEqual(idOnly.eventIds(), [first, second]);

    const n = full.accepted[0]!;
    const device = n.devices[0]!;
    assert.equal(typeof device.pushkey_ts, "number");
    // Seconds, not milliseconds.
    assert.ok(Math.abs(device.pushkey_ts - Date.now() / 1000) < 600, `pushkey_ts ${device.pushkey_ts}`);
    assert.deepEqual(n, {
      event_id: first,
      room_id: roomId,
      type: "m.room.message",
      sender: alice.userId,
      sender_display_name: "alice",
      room_name: "Tea",
      // `.m.rule.room_one_to_one` plays a sound: high priority.
      prio: "high",
      content: { msgtype: "m.text", body: "hello there" },
      counts: { unread: 1 },
      devices: [{ app_id: "org.example.app.android", pushkey: "bob-full", pushkey_ts: device.pushkey_ts, data: { extra: "kept" }, tweaks: { sound: "default" } }],
    });
    assert.equal(full.accepted[1]!.counts.unread, 2);

    const id = idOnly.accepted[1]!;
    assert.deepEqual(id, {
      event_id: second,
      room_id: roomId,
      prio: "high",
      counts: { unread: 2 },
      devices: [{ app_id: "org.example.app.ios", pushkey: "bob-id", pushkey_ts: id.devices[0]!.pushkey_ts, data: { format: "event_id_only" } }],
    });
    // Alice's own messages never push to her.
    assert.ok([...full.received, ...idOnly.received].every((x) => x.devices[0]!.pushkey.startsWith("bob")));
  });

  test("priority: plain group messages low; encrypted messages, rings and mentions high", async () => {
    const g = await freshGateway();
    const group = await alice.createRoom({ preset: "public_chat" });
    await bob.join(group);
    await carol.join(group);
    const dm = await alice.createRoom({ preset: "trusted_private_chat", is_direct: true, invite: [bob.userId] });
    await bob.join(dm);
    await setPusher(bob, pusherBody(g.url, { pushkey: "bob-prio" }));
    const plain = await alice.send(group, "hi all");
    // Pushes read together carry the badge as of their read: the first one on its own, so that
    // its badge counts only what came before it.
    await until(() => g.accepted.length === 1);
    const encrypted = await alice.send(group, { algorithm: "m.megolm.v1.aes-sha2", ciphertext: "xyz", session_id: "s", sender_key: "k", device_id: "D" }, "m.room.encrypted");
    const ring = await alice.send(
      group,
      { notification_type: "ring", sender_ts: Date.now(), lifetime: 30000, "m.mentions": { user_ids: [], room: true } },
      "org.matrix.msc4075.rtc.notification",
    );
    const dmEncrypted = await alice.send(dm, { algorithm: "m.megolm.v1.aes-sha2", ciphertext: "abc", session_id: "s", sender_key: "k", device_id: "D" }, "m.room.encrypted");
    await until(() => g.accepted.length === 4);
    const byId = new Map(g.accepted.map((n) => [n.event_id, n]));
    assert.deepEqual(g.eventIds(), [plain, encrypted, ring, dmEncrypted]);
    assert.equal(byId.get(plain)?.prio, "low");
    assert.equal(byId.get(plain)?.devices[0]?.tweaks, undefined);
    // Encrypted in a group: no sound, yet high, since only the device can tell what it is.
    assert.equal(byId.get(encrypted)?.prio, "high");
    assert.equal(byId.get(encrypted)?.devices[0]?.tweaks, undefined);
    const rang = byId.get(ring)!;
    assert.equal(rang.prio, "high");
    assert.equal(rang.type, "org.matrix.msc4075.rtc.notification");
    assert.deepEqual(rang.devices[0]?.tweaks, { sound: "ring" });
    const inDm = byId.get(dmEncrypted)!;
    assert.equal(inDm.prio, "high");
    assert.equal(inDm.type, "m.room.encrypted");
    // Every notification since counts, across both rooms.
    assert.equal(inDm.counts.unread, byId.get(plain)!.counts.unread + 3);
  });

  test("an invite reaches the invited user's gateway as a member event with its membership, naming them as its target", async () => {
    const g = await freshGateway();
    await setPusher(bob, pusherBody(g.url, { pushkey: "bob-invite" }));
    const roomId = await alice.createRoom({ preset: "private_chat", name: "Secret tea", invite: [bob.userId] });
    await until(() => g.accepted.some((n) => n.type === "m.room.member"));
    const n = g.accepted.find((x) => x.type === "m.room.member")! as (typeof g.accepted)[number] & { membership?: unknown; user_is_target?: unknown };
    assert.equal(n.room_id, roomId);
    assert.equal(n.sender, alice.userId);
    assert.equal(n.membership, "invite");
    assert.equal(n.user_is_target, true);
    assert.equal(n.room_name, "Secret tea");
    // `.m.rule.invite_for_me` plays the default sound.
    assert.equal(n.prio, "high");
    assert.deepEqual(n.devices[0]!.tweaks, { sound: "default" });
  });

  test("a failing gateway gets the notifications again, in order, once it recovers", async () => {
    const g = await freshGateway();
    g.answer = (_n, i) => (i < 2 ? { status: 500, body: { errcode: "M_UNKNOWN", error: "down" } } : { status: 200, body: { rejected: [] } });
    await setPusher(bob, pusherBody(g.url, { pushkey: "bob-retry" }));
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    const m1 = await alice.send(roomId, "one");
    const m2 = await alice.send(roomId, "two");
    await until(() => g.accepted.length === 2);
    assert.deepEqual(g.eventIds(), [m1, m2]);
    // The first was tried until it went through; the second only after it.
    assert.deepEqual(g.eventIds(g.received), [m1, m1, m1, m2]);
  });

  test("what the user read while the gateway was down is not pushed once it is back", async () => {
    const g = await freshGateway();
    g.answer = () => ({ status: 502 });
    await setPusher(bob, pusherBody(g.url, { pushkey: "bob-read" }));
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    const seen = await alice.send(roomId, "read on another device");
    await until(() => g.received.length >= 1);
    ok(await bob.req("POST", `/rooms/${encodeURIComponent(roomId)}/receipt/m.read/${encodeURIComponent(seen)}`, {}));
    g.answer = () => ({ status: 200, body: { rejected: [] } });
    const unseen = await alice.send(roomId, "not read yet");
    // (The receipt may also bring a badge-only push, with no event: see push_badges.test.ts.)
    const eventPushes = () => g.accepted.filter((n) => n.event_id !== undefined);
    await until(() => eventPushes().length === 1);
    assert.deepEqual(g.eventIds(eventPushes()), [unseen]);
    assert.equal(eventPushes()[0]!.counts.unread, 1);
  });

  test("a pushkey the gateway rejects loses its pusher", async () => {
    const g = await freshGateway();
    g.answer = (n) => ({ status: 200, body: { rejected: [n.devices[0]!.pushkey] } });
    await setPusher(bob, pusherBody(g.url, { pushkey: "bob-rejected" }));
    await setPusher(bob, pusherBody(gateway.url, { pushkey: "bob-kept" }));
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    await alice.send(roomId, "hello");
    await until(() => g.received.length === 1);
    let left: string[] | undefined;
    let asking = false;
    await until(() => {
      if (!asking) {
        asking = true;
        void pushersOf(bob).then((list) => {
          left = list.map((p) => p.pushkey as string);
          asking = false;
        });
      }
      return left !== undefined && !left.includes("bob-rejected");
    });
    assert.deepEqual(left, ["bob-kept"]);
  });

  test("a gateway that never answers does not hold up the sender", async () => {
    const g = await freshGateway();
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    let sendReturned = false;
    let answeredAfterSend: boolean | undefined;
    g.answer = async () => {
      await held;
      answeredAfterSend = sendReturned;
      return { status: 200, body: { rejected: [] } };
    };
    await setPusher(bob, pusherBody(g.url, { pushkey: "bob-slow" }));
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    const eventId = await alice.send(roomId, "are you awake?");
    sendReturned = true;
    await until(() => g.received.length === 1);
    assert.equal(g.received[0]!.event_id, eventId);
    release();
    await until(() => g.accepted.length === 1);
    assert.equal(answeredAfterSend, true);
    // The server was still waiting for that very answer (it did not give up on it and send again).
    const key = { appId: "org.example.app.android", pushkey: "bob-slow", userId: bob.userId };
    let succeeded = false;
    await until(() => {
      void server.homeserver.storage.pushers.get(key).then((p) => (succeeded = p?.lastSuccessTs != null));
      return succeeded;
    });
    assert.equal(g.received.length, 1);
  });

  test("a notification stored behind the pusher's position is still delivered when the pusher is told of it", async () => {
    // Notifications are stored after their event commits, so two close together can be stored
    // out of order; the one behind the position arrives as a late notice, simulated here.
    const g = await freshGateway();
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    const behind = await alice.send(roomId, "stored late");
    await setPusher(bob, pusherBody(g.url, { pushkey: "bob-late" }));
    const pdu = { type: "m.room.message", room_id: roomId, sender: alice.userId, content: {} };
    const stored = await server.homeserver.storage.rooms.getEvent(behind);
    const event = { eventId: behind, streamOrdering: stored!.streamOrdering, pdu } as unknown as Notified["event"];
    server.homeserver.services.pushers.notified([{ userId: bob.userId, event, outcome: { ruleId: ".m.rule.message", actions: ["notify"], notify: true, highlight: false } }]);
    await until(() => g.accepted.length === 1);
    assert.equal(g.accepted[0]!.event_id, behind);
    // It did not move the position back: what follows is pushed once, after it.
    const next = await alice.send(roomId, "next");
    await until(() => g.accepted.length === 2);
    assert.deepEqual(g.eventIds(), [behind, next]);
  });

  test("logging out deletes the pushers that device set", async () => {
    const phone = await bob.newDevice();
    await setPusher(phone, pusherBody(gateway.url, { pushkey: "phone" }));
    await setPusher(bob, pusherBody(gateway.url, { pushkey: "desktop" }));
    assert.deepEqual((await pushersOf(bob)).map((p) => p.pushkey).sort(), ["desktop", "phone"]);
    ok(await phone.req("POST", "/logout", {}));
    assert.deepEqual((await pushersOf(bob)).map((p) => p.pushkey), ["desktop"]);
  });
});

describe("pusher addresses", () => {
  test("a gateway on a refused address is not accepted and never contacted", async () => {
    const gateway = await new Gateway().start();
    const server = await startServer({ ip_range_blacklist: ["198.51.99.0/24"] });
    try {
      const u = await User.register(server.baseUrl, "dave");
      // Public addresses are fine unless configured away (setting one contacts nothing).
      ok(await u.req("POST", "/pushers/set", pusherBody("https://198.51.98.7/_matrix/push/v1/notify", { pushkey: "public" })));
      const configured = assertError(await u.req("POST", "/pushers/set", pusherBody("https://198.51.99.7/_matrix/push/v1/notify")), 400, "M_INVALID_PARAM");
      assert.match(configured, /blacklist/);
      ok(await u.req("POST", "/pushers/set", { kind: null, app_id: "org.example.app.android", pushkey: "public" }));
      const literal = assertError(await u.req("POST", "/pushers/set", pusherBody(gateway.url)), 400, "M_INVALID_PARAM");
      assert.match(literal, /127\.0\.0\.1/);
      const named = assertError(await u.req("POST", "/pushers/set", pusherBody(gateway.url.replace("127.0.0.1", "localhost"))), 400, "M_INVALID_PARAM");
      assert.match(named, /localhost/);
      assertError(await u.req("POST", "/pushers/set", pusherBody("https://[::1]/_matrix/push/v1/notify")), 400, "M_INVALID_PARAM");
      assertError(await u.req("POST", "/pushers/set", pusherBody("https://169.254.169.254/_matrix/push/v1/notify")), 400, "M_INVALID_PARAM");
      assert.deepEqual(await pushersOf(u), []);
      assert.equal(gateway.received.length, 0);
    } finally {
      await teardown(() => server.stop(), () => gateway.stop());
    }
  });

  test("address ranges that are not CIDR are refused at start, naming the key", async () => {
    assert.throws(() => configFromObject({ server_name: "localhost", ip_range_blacklist: ["10.0.0.0/33"] }), /ip_range_blacklist.*not an address range/s);
    assert.throws(() => configFromObject({ server_name: "localhost", ip_range_whitelist: ["localhost"] }), /ip_range_whitelist.*not an address range/s);
    assert.throws(() => configFromObject({ server_name: "localhost", push: { enabled: "yes" } }), /push\.enabled/);
    const { config } = configFromObject({ server_name: "localhost", ip_range_whitelist: ["fd00::/8"] });
    assert.deepEqual(config.outbound, { ipRangeBlacklist: [], ipRangeWhitelist: ["fd00::/8"] });
    assert.deepEqual(config.push, { enabled: true, includeContent: true });
  });

  test("push.include_content off leaves the content out", async () => {
    const gateway = await new Gateway().start();
    const server = await startServer({ ...ALLOW_LOOPBACK, push: { include_content: false } });
    try {
      const a = await User.register(server.baseUrl, "erin");
      const b = await User.register(server.baseUrl, "frank");
      await setPusher(b, pusherBody(gateway.url));
      const roomId = await a.createRoom({ preset: "public_chat" });
      await b.join(roomId);
      const eventId = await a.send(roomId, "secret");
      await until(() => gateway.accepted.length === 1);
      assert.equal(gateway.accepted[0]!.event_id, eventId);
      assert.equal(gateway.accepted[0]!.type, "m.room.message");
      assert.equal("content" in gateway.accepted[0]!, false);
    } finally {
      await teardown(() => server.stop(), () => gateway.stop());
    }
  });
});

describe("restarts", () => {
  test("notifications a gateway missed before a restart are delivered after it", async () => {
    const gateway = await new Gateway().start();
    gateway.answer = () => ({ status: 503 });
    const dir = mkdtempSync(path.join(tmpdir(), "switchboard-pushers-"));
    let server = await startServer(ALLOW_LOOPBACK, { dir });
    try {
      const a = await User.register(server.baseUrl, "gina");
      const b = await User.register(server.baseUrl, "hank");
      await setPusher(b, pusherBody(gateway.url));
      const roomId = await a.createRoom({ preset: "public_chat" });
      await b.join(roomId);
      const m1 = await a.send(roomId, "first");
      const m2 = await a.send(roomId, "second");
      await until(() => gateway.received.length >= 1);
      await server.stop();
      gateway.answer = () => ({ status: 200, body: { rejected: [] } });
      server = await startServer(ALLOW_LOOPBACK, { dir });
      await until(() => gateway.accepted.length === 2);
      assert.deepEqual(gateway.eventIds(), [m1, m2]);
      // Nothing was lost or doubled by the handover.
      assert.ok(gateway.eventIds(gateway.received).every((id) => id === m1 || id === m2));
    } finally {
      await teardown(() => server.stop(), () => gateway.stop(), () => removeTestData(dir));
    }
  });
});

describe("several processes on one database", { skip: TEST_POSTGRES ? false : "needs SWITCHBOARD_TEST_POSTGRES" }, () => {
  test("each notification is pushed once, in order, whichever process stored it; a stopped holder's pusher is taken over", async () => {
    const gateway = await new Gateway().start();
    const dir = mkdtempSync(path.join(tmpdir(), "switchboard-pushers-cluster-"));
    const a = await startServer(ALLOW_LOOPBACK, { dir, homeserver: { workerId: "pa" } });
    const b = await startServer(ALLOW_LOOPBACK, { dir, homeserver: { workerId: "pb" } });
    try {
      const onA = await User.register(a.baseUrl, "ivy");
      const bobA = await User.register(a.baseUrl, "jack");
      const onB = new User(b.baseUrl, onA.userId, onA.token, onA.deviceId);
      await setPusher(bobA, pusherBody(gateway.url));
      const roomId = await onA.createRoom({ preset: "public_chat" });
      await bobA.join(roomId);
      const sent: string[] = [];
      for (let i = 0; i < 6; i++) sent.push(await (i % 2 === 0 ? onA : onB).send(roomId, `message ${i}`));
      await until(() => gateway.accepted.length === 6);
      assert.deepEqual(gateway.eventIds(), sent);
      assert.deepEqual(gateway.eventIds(gateway.received), sent);

      gateway.answer = () => ({ status: 500 });
      const failing = await onB.send(roomId, "while the gateway is down");
      await until(() => gateway.received.length > 6);
      // Whichever process holds the pusher, stopping `a` leaves `b` to deliver.
      await a.stop();
      gateway.answer = () => ({ status: 200, body: { rejected: [] } });
      await until(() => gateway.accepted.length === 7);
      assert.equal(gateway.accepted[6]!.event_id, failing);
    } finally {
      await teardown(() => a.stop(), () => b.stop(), () => gateway.stop(), () => removeTestData(dir));
    }
  });
});
