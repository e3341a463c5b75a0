/** Sending messages and state, transaction IDs, content checks, power levels and redaction, over real HTTP. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { assertError, enc, ok, startWithUsers, User, type Ev } from "./helpers/rooms.js";
import { request, type TestServer } from "./helpers/server.js";

let server: TestServer;
let alice: User;
let bob: User;
let carol: User;

before(async () => {
  ({ server, users: [alice, bob, carol] } = await startWithUsers("alice", "bob", "carol"));
});
after(async () => server?.stop());

async function getEvent(user: User, roomId: string, eventId: string): Promise<Ev> {
  return ok(await user.event(roomId, eventId)) as unknown as Ev;
}

/** A private_chat room of Alice's (power level 100) that Bob (power level 0) has joined. */
async function sharedRoom(body: Record<string, unknown> = {}): Promise<string> {
  const roomId = await alice.createRoom({ invite: [bob.userId], ...body });
  await bob.join(roomId);
  return roomId;
}

describe("PUT /send and transaction IDs", () => {
  test("the same transaction ID from the same device gives the same event, once", async () => {
    const roomId = await sharedRoom();
    const content = { msgtype: "m.text", body: "once" };
    const first = ok(await alice.sendRaw(roomId, "m.room.message", content, "txn-1")).event_id as string;
    const again = ok(await alice.sendRaw(roomId, "m.room.message", content, "txn-1")).event_id as string;
    assert.match(first, /^\$/);
    assert.equal(again, first);
    const chunk = ok(await alice.messages(roomId, { dir: "b", limit: 5 })).chunk as Ev[];
    assert.equal(chunk.filter((e) => e.content.body === "once").length, 1);
    // Only the sending device sees its transaction ID.
    assert.equal((await getEvent(alice, roomId, first)).unsigned?.transaction_id, "txn-1");
    assert.equal((await getEvent(bob, roomId, first)).unsigned?.transaction_id, undefined);
    const otherDevice = await alice.newDevice();
    assert.equal((await getEvent(otherDevice, roomId, first)).unsigned?.transaction_id, undefined);
  });

  test("concurrent retries of one transaction make one event", async () => {
    const roomId = await sharedRoom();
    const content = { msgtype: "m.text", body: "racing" };
    const replies = await Promise.all(Array.from({ length: 8 }, () => alice.sendRaw(roomId, "m.room.message", content, "race")));
    const eventIds = new Set(replies.map((r) => ok(r).event_id));
    assert.equal(eventIds.size, 1);
    const chunk = ok(await alice.messages(roomId, { dir: "b", limit: 20 })).chunk as Ev[];
    assert.equal(chunk.filter((e) => e.content.body === "racing").length, 1);
  });

  test("the same transaction ID from another device, user, room or event type is a new event", async () => {
    const roomId = await sharedRoom();
    const otherRoom = await sharedRoom();
    const phone = await alice.newDevice();
    const content = { msgtype: "m.text", body: "hi" };
    const ids = new Set<string>();
    ids.add(ok(await alice.sendRaw(roomId, "m.room.message", content, "shared")).event_id as string);
    ids.add(ok(await phone.sendRaw(roomId, "m.room.message", content, "shared")).event_id as string);
    ids.add(ok(await bob.sendRaw(roomId, "m.room.message", content, "shared")).event_id as string);
    ids.add(ok(await alice.sendRaw(otherRoom, "m.room.message", content, "shared")).event_id as string);
    ids.add(ok(await alice.sendRaw(roomId, "org.example.other", content, "shared")).event_id as string);
    assert.equal(ids.size, 5);
  });

  test("a redaction reusing a send's transaction ID is a new redaction, not the message", async () => {
    const roomId = await sharedRoom();
    const message = ok(await alice.sendRaw(roomId, "m.room.message", { msgtype: "m.text", body: "x" }, "reused")).event_id as string;
    const redaction = ok(await alice.req("PUT", `/rooms/${enc(roomId)}/redact/${enc(message)}/reused`, {})).event_id as string;
    assert.notEqual(redaction, message);
    assert.equal((await getEvent(alice, roomId, redaction)).type, "m.room.redaction");
    assert.deepEqual((await getEvent(alice, roomId, message)).content, {});
  });

  test("POST /send/{type} sends without a transaction ID", async () => {
    const roomId = await sharedRoom();
    const res = ok(await alice.req("POST", `/rooms/${enc(roomId)}/send/m.room.message`, { msgtype: "m.text", body: "posted" }));
    const event = await getEvent(bob, roomId, res.event_id as string);
    assert.equal(event.type, "m.room.message");
    assert.deepEqual(event.content, { msgtype: "m.text", body: "posted" });
    assert.equal(event.sender, alice.userId);
  });

  test("a non-member, or a member who left, may not send: 403 M_FORBIDDEN", async () => {
    const roomId = await sharedRoom();
    assert.match(assertError(await carol.sendRaw(roomId, "m.room.message", { body: "x" }), 403, "M_FORBIDDEN"), /not joined/);
    ok(await bob.leave(roomId));
    assertError(await bob.sendRaw(roomId, "m.room.message", { body: "x" }), 403, "M_FORBIDDEN");
  });

  test("sending to an unknown room is 404 M_NOT_FOUND", async () => {
    assertError(await alice.sendRaw("!nowhere:localhost", "m.room.message", { body: "x" }), 404, "M_NOT_FOUND");
  });
});

describe("content checks", () => {
  test("a body that is not JSON is 400 M_NOT_JSON; JSON that is not an object is 400 M_BAD_JSON", async () => {
    const roomId = await sharedRoom();
    const path = `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/bad-json`;
    const token = alice.token;
    assertError(await request(server.baseUrl, "PUT", path, { token, body: "{not json" }), 400, "M_NOT_JSON");
    assertError(await request(server.baseUrl, "PUT", path, { token, body: "[1, 2]" }), 400, "M_BAD_JSON");
    assertError(await request(server.baseUrl, "PUT", path, { token, body: "\"text\"" }), 400, "M_BAD_JSON");
    assertError(await alice.putStateRaw(roomId, "m.room.topic", "", "{oops"), 400, "M_NOT_JSON");
  });

  test("floats and out-of-range integers are 400 M_BAD_JSON: canonical JSON has neither", async () => {
    const roomId = await sharedRoom();
    assertError(await alice.sendRaw(roomId, "m.room.message", { body: "x", ratio: 1.5 }), 400, "M_BAD_JSON");
    assertError(await alice.sendRaw(roomId, "m.room.message", { nested: { deep: [0.25] } }), 400, "M_BAD_JSON");
    assertError(await alice.sendRaw(roomId, "m.room.message", '{"big": 9007199254740992}'), 400, "M_BAD_JSON");
    assertError(await alice.putStateRaw(roomId, "org.example.state", "", { v: 0.1 }), 400, "M_BAD_JSON");
    ok(await alice.sendRaw(roomId, "m.room.message", '{"biggest": 9007199254740991, "smallest": -9007199254740991}'));
  });

  test("an event over 65536 bytes is 413 M_TOO_LARGE; just under is fine", async () => {
    const roomId = await sharedRoom();
    assertError(await alice.sendRaw(roomId, "m.room.message", { body: "x".repeat(70_000) }), 413, "M_TOO_LARGE");
    assertError(await alice.putStateRaw(roomId, "org.example.big", "", { v: "y".repeat(66_000) }), 413, "M_TOO_LARGE");
    ok(await alice.sendRaw(roomId, "m.room.message", { body: "x".repeat(60_000) }));
  });

  test("a state key over 255 bytes is 400 M_BAD_JSON in room version 11", async () => {
    const roomId = await sharedRoom();
    assertError(await alice.putStateRaw(roomId, "org.example.state", "k".repeat(256), { v: 1 }), 400, "M_BAD_JSON");
    ok(await alice.putStateRaw(roomId, "org.example.state", "k".repeat(255), { v: 1 }));
  });
});

describe("state", () => {
  test("PUT and GET with a state key, and with the empty key in both path forms", async () => {
    const roomId = await sharedRoom();
    const withKey = await alice.putState(roomId, "org.example.thing", "key one", { v: 1 });
    assert.deepEqual(await bob.getState(roomId, "org.example.thing", "key one"), { v: 1 });
    const base = `/rooms/${enc(roomId)}/state/m.room.name`;
    const noKey = ok(await alice.req("PUT", base, { name: "No key" })).event_id as string;
    assert.deepEqual(ok(await bob.req("GET", base)), { name: "No key" });
    assert.deepEqual(ok(await bob.req("GET", `${base}/`)), { name: "No key" });
    const slash = ok(await alice.req("PUT", `${base}/`, { name: "Slash" })).event_id as string;
    assert.deepEqual(ok(await bob.req("GET", base)), { name: "Slash" });
    const stateEvent = await getEvent(bob, roomId, slash);
    assert.equal(stateEvent.state_key, "");
    assert.equal(stateEvent.unsigned?.replaces_state, noKey);
    assert.deepEqual(stateEvent.unsigned?.prev_content, { name: "No key" });
    assert.notEqual(withKey, noKey);
    // State keys may hold characters that need escaping in a path, slashes included.
    for (const key of ["a/b", "50%", "with space", "?q#h", "é"]) {
      await alice.putState(roomId, "org.example.thing", key, { key });
      assert.deepEqual(await bob.getState(roomId, "org.example.thing", key), { key });
    }
  });

  test("GET of state that was never set is 404 M_NOT_FOUND; a non-member gets 403 M_FORBIDDEN", async () => {
    const roomId = await sharedRoom();
    assertError(await bob.getStateRaw(roomId, "m.room.topic"), 404, "M_NOT_FOUND");
    assertError(await bob.getStateRaw(roomId, "org.example.thing", "missing"), 404, "M_NOT_FOUND");
    assertError(await carol.getStateRaw(roomId, "m.room.create"), 403, "M_FORBIDDEN");
  });

  test("a non-member setting state is 403 M_FORBIDDEN", async () => {
    const roomId = await sharedRoom();
    assertError(await carol.putStateRaw(roomId, "m.room.topic", "", { topic: "intruder" }), 403, "M_FORBIDDEN");
  });

  test("a power level 0 member setting m.room.name in a private_chat room is 403 M_FORBIDDEN, saying why", async () => {
    const roomId = await sharedRoom();
    const error = assertError(await bob.putStateRaw(roomId, "m.room.name", "", { name: "mine" }), 403, "M_FORBIDDEN");
    assert.match(error, /power level too low to send m\.room\.name \(needs 50, has 0\)/);
    // Messages need only events_default (0).
    await bob.send(roomId, "but I can talk");
  });

  test("power level changes: a member cannot raise themselves, nor change someone above them", async () => {
    const roomId = await sharedRoom({ power_level_content_override: { events: { "m.room.power_levels": 50 } } });
    const pl = await alice.getState(roomId, "m.room.power_levels");
    ok(await alice.putStateRaw(roomId, "m.room.power_levels", "", { ...pl, users: { [alice.userId]: 100, [bob.userId]: 50 } }));
    const current = await bob.getState(roomId, "m.room.power_levels");
    const raise = { ...current, users: { [alice.userId]: 100, [bob.userId]: 75 } };
    assert.match(assertError(await bob.putStateRaw(roomId, "m.room.power_levels", "", raise), 403, "M_FORBIDDEN"), /above/);
    const demote = { ...current, users: { [alice.userId]: 0, [bob.userId]: 50 } };
    assert.match(assertError(await bob.putStateRaw(roomId, "m.room.power_levels", "", demote), 403, "M_FORBIDDEN"), /not below/);
    const badShape = { ...current, ban: "50" };
    assertError(await alice.putStateRaw(roomId, "m.room.power_levels", "", badShape), 403, "M_FORBIDDEN");
  });

  test("in room version 11, a state key that is another user's ID belongs to that user", async () => {
    const roomId = await sharedRoom({ power_level_content_override: { events: { "org.example.owned": 0 } } });
    ok(await bob.putStateRaw(roomId, "org.example.owned", bob.userId, { mine: true }));
    const error = assertError(await bob.putStateRaw(roomId, "org.example.owned", alice.userId, { mine: true }), 403, "M_FORBIDDEN");
    assert.match(error, /belongs to another user/);
    // Without MSC3757, not even a higher power level may write it.
    assertError(await alice.putStateRaw(roomId, "org.example.owned", bob.userId, { mine: false }), 403, "M_FORBIDDEN");
  });

  test("m.room.create cannot be sent again", async () => {
    const roomId = await sharedRoom();
    assertError(await alice.putStateRaw(roomId, "m.room.create", "", { room_version: "11" }), 403, "M_FORBIDDEN");
  });

  test("PUT state m.room.member works as a membership change", async () => {
    const roomId = await sharedRoom();
    ok(await alice.putStateRaw(roomId, "m.room.member", carol.userId, { membership: "invite" }));
    assert.equal(await bob.membershipIn(roomId, carol.userId), "invite");
    assertError(await bob.putStateRaw(roomId, "m.room.member", carol.userId, { membership: "join" }), 403, "M_FORBIDDEN");
  });
});

describe("redaction", () => {
  const redact = (user: User, roomId: string, eventId: string, txnId: string, body: Record<string, unknown> = {}) =>
    user.req("PUT", `/rooms/${enc(roomId)}/redact/${enc(eventId)}/${enc(txnId)}`, body);

  test("a user may redact their own event; content is stripped and redacted_because says by what", async () => {
    const roomId = await sharedRoom();
    const message = await bob.send(roomId, "regrettable");
    const redaction = ok(await redact(bob, roomId, message, "r1", { reason: "oops" })).event_id as string;
    assert.equal(ok(await redact(bob, roomId, message, "r1", { reason: "oops" })).event_id, redaction, "idempotent");
    const redacted = await getEvent(alice, roomId, message);
    assert.deepEqual(redacted.content, {});
    assert.equal(redacted.type, "m.room.message");
    assert.equal(redacted.sender, bob.userId);
    const because = redacted.unsigned?.redacted_because as Ev;
    assert.equal(because.event_id, redaction);
    assert.equal(because.type, "m.room.redaction");
    const redactionEvent = await getEvent(alice, roomId, redaction);
    assert.equal(redactionEvent.redacts, message);
    assert.deepEqual(redactionEvent.content, { redacts: message, reason: "oops" });
  });

  test("redacting another user's event needs the redact power level", async () => {
    const roomId = await sharedRoom();
    const alices = await alice.send(roomId, "admin words");
    const bobs = await bob.send(roomId, "spam");
    assert.match(assertError(await redact(bob, roomId, alices, "r2"), 403, "M_FORBIDDEN"), /redact/);
    assert.equal((await getEvent(bob, roomId, alices)).content.body, "admin words");
    ok(await redact(alice, roomId, bobs, "r3"));
    assert.deepEqual((await getEvent(bob, roomId, bobs)).content, {});
  });

  test("an m.room.redaction sent through /send is held to the same rule", async () => {
    const roomId = await sharedRoom();
    const alices = await alice.send(roomId, "keep me");
    const bobs = await bob.send(roomId, "remove me");
    const error = assertError(await bob.sendRaw(roomId, "m.room.redaction", { redacts: alices }), 403, "M_FORBIDDEN");
    assert.match(error, /redact/);
    assert.equal((await getEvent(bob, roomId, alices)).content.body, "keep me");
    ok(await bob.sendRaw(roomId, "m.room.redaction", { redacts: bobs }));
    assert.deepEqual((await getEvent(alice, roomId, bobs)).content, {});
  });

  test("redacting an event of another room is 400 M_INVALID_PARAM; an unknown event ID redacts nothing", async () => {
    const roomId = await sharedRoom();
    const elsewhere = await sharedRoom();
    const message = await alice.send(elsewhere, "other room");
    assertError(await redact(alice, roomId, message, "cross"), 400, "M_INVALID_PARAM");
    assert.equal((await getEvent(alice, elsewhere, message)).content.body, "other room");
    ok(await redact(bob, roomId, "$unknown", "unknown-target"));
  });

  test("in room version 10, content.redacts of a sent m.room.redaction redacts nothing", async () => {
    const roomId = await sharedRoom({ room_version: "10" });
    const message = await bob.send(roomId, "stays");
    ok(await bob.sendRaw(roomId, "m.room.redaction", { redacts: message }));
    assert.equal((await getEvent(alice, roomId, message)).content.body, "stays");
  });

  test("a non-member cannot redact", async () => {
    const roomId = await sharedRoom();
    const message = await alice.send(roomId, "x");
    assertError(await redact(carol, roomId, message, "r4"), 403, "M_FORBIDDEN");
  });

  test("redaction follows the room version's algorithm: v10 strips power levels' invite, v11 keeps it", async () => {
    for (const version of ["10", "11"]) {
      const roomId = await sharedRoom({ room_version: version });
      const plId = await alice.putState(roomId, "m.room.power_levels", "", {
        ...(await alice.getState(roomId, "m.room.power_levels")),
        invite: 0,
        historical: 100,
      });
      const memberId = await bob.putState(roomId, "m.room.member", bob.userId, { membership: "join", displayname: "B" });
      ok(await redact(alice, roomId, plId, `pl-${version}`));
      ok(await redact(bob, roomId, memberId, `m-${version}`));
      const pl = (await getEvent(bob, roomId, plId)).content;
      assert.equal(pl.invite, version === "11" ? 0 : undefined, `invite in v${version}`);
      assert.equal(pl.historical, undefined);
      assert.deepEqual(pl.users, { [alice.userId]: 100 });
      assert.deepEqual((await getEvent(bob, roomId, memberId)).content, { membership: "join" });
      // The redacted state is the room's current state.
      assert.deepEqual(await bob.getState(roomId, "m.room.member", bob.userId), { membership: "join" });
    }
  });

  test("in room version 10 the redaction's redacts is at the top level", async () => {
    const roomId = await sharedRoom({ room_version: "10" });
    const message = await bob.send(roomId, "old-style");
    const redaction = ok(await redact(bob, roomId, message, "r10")).event_id as string;
    const event = await getEvent(alice, roomId, redaction);
    assert.equal(event.redacts, message);
    assert.deepEqual((await getEvent(alice, roomId, message)).content, {});
  });
});

describe("deeply nested JSON", () => {
  test("a body nesting past 100 levels is 400 M_BAD_JSON on send, state, filters and account data, and nothing is stored", async () => {
    const roomId = await sharedRoom();
    const nested = (levels: number) => "[".repeat(levels) + "]".repeat(levels);
    const deep = `{"msgtype":"m.text","body":"x","deep":${nested(10_000)}}`;
    const uid = enc(alice.userId);
    const calls: [string, string][] = [
      ["PUT", `/rooms/${enc(roomId)}/send/m.room.message/deep1`],
      ["PUT", `/rooms/${enc(roomId)}/state/org.example.deep/`],
      ["POST", `/user/${uid}/filter`],
      ["PUT", `/user/${uid}/account_data/org.example.deep`],
      ["PUT", `/user/${uid}/rooms/${enc(roomId)}/account_data/org.example.deep`],
    ];
    for (const [method, path] of calls) {
      assertError(await request(server.baseUrl, method, `/_matrix/client/v3${path}`, { token: alice.token, body: deep }), 400, "M_BAD_JSON");
    }
    // Brackets inside strings are text, not nesting.
    const eventId = ok(await alice.req("PUT", `/rooms/${enc(roomId)}/send/m.room.message/deep2`, { msgtype: "m.text", body: nested(500) })).event_id as string;
    assert.equal((await getEvent(bob, roomId, eventId)).content.body, nested(500));
    // Nothing of the refused ones is there.
    assertError(await alice.req("GET", `/rooms/${enc(roomId)}/state/org.example.deep/`), 404, "M_NOT_FOUND");
    assertError(await alice.req("GET", `/user/${uid}/account_data/org.example.deep`), 404, "M_NOT_FOUND");
    // A filter given inline on /sync or /messages, nested past the limit, is refused too (not as
    // deep as the bodies: a query string that long would pass Node's header size limit).
    const inline = encodeURIComponent(`{"room":{"timeline":{"x":${nested(1_000)}}}}`);
    assertError(await alice.req("GET", `/sync?filter=${inline}`), 400, "M_BAD_JSON");
    assertError(await alice.req("GET", `/rooms/${enc(roomId)}/messages?dir=b&filter=${encodeURIComponent(`{"x":${nested(1_000)}}`)}`), 400, "M_INVALID_PARAM");
  });
});
