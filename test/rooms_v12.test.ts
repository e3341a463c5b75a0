/**
 * Room version 12 rooms over real HTTP: the room ID derived from the create event
 * (MSC4291), privileged creators and `additional_creators` (MSC4289), and the
 * `default_room_version` config key.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ConfigError } from "../src/config/errors.js";
import { parseConfig } from "../src/config/load.js";
import { assertError, findState, ok, startWithUsers, User, type Ev } from "./helpers/rooms.js";
import { startServer, type TestServer } from "./helpers/server.js";
import { sync } from "./helpers/sync.js";

let server: TestServer;
let alice: User;
let bob: User;
let carol: User;

before(async () => {
  ({ server, users: [alice, bob, carol] } = await startWithUsers("alice", "bob", "carol"));
});
after(async () => server?.stop());

const V12_ROOM_ID = /^![A-Za-z0-9_-]{43}$/;

function login(u: User) {
  return { user_id: u.userId, access_token: u.token, device_id: u.deviceId };
}

/** A public v12 room of Alice's with Bob and Carol joined, Carol at `carolLevel` if given. */
async function roomWithMembers(carolLevel?: number, extra: Record<string, unknown> = {}): Promise<string> {
  const roomId = await alice.createRoom({ room_version: "12", preset: "public_chat", ...extra });
  await bob.join(roomId);
  await carol.join(roomId);
  if (carolLevel !== undefined) {
    const pl = await alice.getState(roomId, "m.room.power_levels");
    await alice.putState(roomId, "m.room.power_levels", "", { ...pl, users: { [carol.userId]: carolLevel } });
  }
  return roomId;
}

describe("creating a room version 12 room", () => {
  test("the room ID is the create event's ID with !, and the create event is served with it", async () => {
    const roomId = await alice.createRoom({ room_version: "12", name: "twelve" });
    assert.match(roomId, V12_ROOM_ID);
    const state = await alice.fullState(roomId);
    const create = findState(state, "m.room.create")!;
    assert.equal(create.event_id, `$${roomId.slice(1)}`);
    assert.equal(create.room_id, roomId);
    assert.equal(create.sender, alice.userId);
    assert.equal(create.content.room_version, "12");
    assert.equal(Object.hasOwn(create.content, "creator"), false);
    for (const e of state) assert.equal(e.room_id, roomId, `${e.type} carries the room ID`);
    const fetched = ok(await alice.event(roomId, create.event_id)) as unknown as Ev;
    assert.equal(fetched.room_id, roomId);
    assert.equal(fetched.type, "m.room.create");
    assert.equal((await alice.getState(roomId, "m.room.name")).name, "twelve");
  });

  test("the creator is not in power levels' users, and m.room.tombstone needs 150", async () => {
    const roomId = await alice.createRoom({ room_version: "12" });
    const pl = await alice.getState(roomId, "m.room.power_levels");
    assert.deepEqual(pl.users, {});
    assert.equal((pl.events as Record<string, number>)["m.room.tombstone"], 150);
    assert.equal((pl.events as Record<string, number>)["m.room.power_levels"], 100);
    // With no entry, the creator still does what needs 100 (and 150).
    await alice.putState(roomId, "m.room.history_visibility", "", { history_visibility: "joined" });
    await alice.putState(roomId, "m.room.tombstone", "", { body: "moved", replacement_room: "!elsewhere" });
  });

  test("two rooms with identical create events still get different IDs", async () => {
    const ids = await Promise.all([1, 2, 3].map(() => alice.createRoom({ room_version: "12" })));
    assert.equal(new Set(ids).size, 3);
    for (const id of ids) assert.match(id, V12_ROOM_ID);
  });

  test("messages, /messages and /sync work in the room", async () => {
    const roomId = await alice.createRoom({ room_version: "12", preset: "public_chat" });
    await bob.join(roomId);
    const sent = await bob.send(roomId, "hello twelve");
    const history = ok(await alice.messages(roomId, { dir: "f", limit: 100 })).chunk as Ev[];
    assert.equal(history[0]!.type, "m.room.create");
    assert.equal(history[0]!.room_id, roomId);
    assert.ok(history.some((e) => e.event_id === sent && e.content.body === "hello twelve"));
    for (const e of history) assert.equal(e.room_id, roomId);
    const body = await sync(server.baseUrl, login(bob));
    const room = body.rooms.join[roomId];
    assert.ok(room, "the v12 room is in bob's sync");
    const all = [...room.timeline.events, ...(room.state?.events ?? [])];
    assert.ok(all.some((e) => e.event_id === sent));
    assert.ok(all.some((e) => e.type === "m.room.create" && e.event_id === `$${roomId.slice(1)}`));
  });

  test("room account data, read markers and receipts accept the new room ID form", async () => {
    const roomId = await alice.createRoom({ room_version: "12" });
    const eventId = await alice.send(roomId, "read me");
    const path = `/user/${encodeURIComponent(alice.userId)}/rooms/${encodeURIComponent(roomId)}/account_data/org.example.note`;
    ok(await alice.req("PUT", path, { note: 1 }));
    assert.deepEqual(ok(await alice.req("GET", path)), { note: 1 });
    ok(await alice.req("POST", `/rooms/${encodeURIComponent(roomId)}/read_markers`, { "m.fully_read": eventId, "m.read": eventId }));
    const body = await sync(server.baseUrl, login(alice));
    const room = body.rooms.join[roomId]!;
    assert.ok(room.account_data?.events.some((e) => e.type === "org.example.note"));
    assert.ok(room.account_data?.events.some((e) => e.type === "m.fully_read" && e.content.event_id === eventId));
  });

  test("an invitee's sync shows the create event in the invite state", async () => {
    const roomId = await alice.createRoom({ room_version: "12", invite: [carol.userId] });
    const body = await sync(server.baseUrl, login(carol));
    const events = body.rooms.invite[roomId]!.invite_state.events;
    const create = events.find((e) => e.type === "m.room.create");
    assert.ok(create, "m.room.create is in the stripped state");
    assert.equal(create.content.room_version, "12");
    await carol.join(roomId);
    assert.equal(await carol.membershipIn(roomId), "join");
  });

  test("an unknown room version is still refused; 12 is listed as stable", async () => {
    assertError(await alice.req("POST", "/createRoom", { room_version: "13" }), 400, "M_UNSUPPORTED_ROOM_VERSION");
    const caps = ok(await alice.req("GET", "/capabilities")).capabilities as Record<string, { default: string; available: Record<string, string> }>;
    assert.equal(caps["m.room_versions"]!.available["12"], "stable");
    assert.equal(caps["m.room_versions"]!.default, "11");
  });

  test("listing the creator in power_level_content_override's users is refused, and nothing is made", async () => {
    const before = (await alice.joinedRooms()).length;
    const res = await alice.req("POST", "/createRoom", {
      room_version: "12",
      power_level_content_override: { users: { [alice.userId]: 100 } },
    });
    assertError(res, 400, "M_INVALID_ROOM_STATE");
    assert.equal((await alice.joinedRooms()).length, before);
  });
});

describe("creators' power", () => {
  test("the creator can set and clear any level; an admin cannot touch the creator or raise past itself", async () => {
    const roomId = await roomWithMembers(2 ** 53 - 1);
    // Even the highest level is below the creator's.
    await alice.putState(roomId, "m.room.power_levels", "", { users: { [carol.userId]: 0 } });
    await alice.putState(roomId, "m.room.power_levels", "", { users: { [carol.userId]: 100, [bob.userId]: 100 } });
    // An admin cannot list the creator, nor lower another admin.
    assertError(
      await carol.putStateRaw(roomId, "m.room.power_levels", "", { users: { [carol.userId]: 100, [bob.userId]: 100, [alice.userId]: 0 } }),
      403,
      "M_FORBIDDEN",
    );
    assertError(
      await carol.putStateRaw(roomId, "m.room.power_levels", "", { users: { [carol.userId]: 100, [bob.userId]: 50 } }),
      403,
      "M_FORBIDDEN",
    );
    // Nor may the creator list itself.
    assertError(
      await alice.putStateRaw(roomId, "m.room.power_levels", "", { users: { [alice.userId]: 100 } }),
      403,
      "M_FORBIDDEN",
    );
    await alice.putState(roomId, "m.room.power_levels", "", { users: { [carol.userId]: 100, [bob.userId]: 50 } });
    assert.deepEqual((await alice.getState(roomId, "m.room.power_levels")).users, { [carol.userId]: 100, [bob.userId]: 50 });
  });

  test("the creator kicks and bans an admin; the admin cannot kick the creator", async () => {
    const roomId = await roomWithMembers(100);
    assertError(await carol.act("kick", roomId, alice.userId), 403, "M_FORBIDDEN");
    assertError(await carol.act("ban", roomId, alice.userId), 403, "M_FORBIDDEN");
    ok(await alice.act("kick", roomId, carol.userId));
    assert.equal(await alice.membershipIn(roomId, carol.userId), "leave");
    ok(await alice.act("ban", roomId, carol.userId));
    assert.equal(await alice.membershipIn(roomId, carol.userId), "ban");
    assertError(await carol.joinRaw(roomId), 403, "M_FORBIDDEN");
    ok(await alice.act("unban", roomId, carol.userId));
    await carol.join(roomId);
  });

  test("the creator may notify the whole room with @room without a power levels entry; a member at 0 may not", async () => {
    const roomId = await roomWithMembers();
    const unread = async () => {
      const body = ok(await bob.req("GET", "/sync")) as { rooms: { join: Record<string, { unread_notifications: Record<string, number> }> } };
      return body.rooms.join[roomId]!.unread_notifications;
    };
    await carol.send(roomId, { msgtype: "m.text", body: "@room hi", "m.mentions": { room: true } });
    assert.deepEqual(await unread(), { notification_count: 1, highlight_count: 0 });
    await alice.send(roomId, { msgtype: "m.text", body: "@room hi", "m.mentions": { room: true } });
    assert.deepEqual(await unread(), { notification_count: 2, highlight_count: 1 });
  });

  test("the creator redacts another user's message", async () => {
    const roomId = await roomWithMembers();
    const eventId = await bob.send(roomId, "to be redacted");
    ok(await alice.req("PUT", `/rooms/${encodeURIComponent(roomId)}/redact/${encodeURIComponent(eventId)}/r1`, { reason: "no" }));
    const redacted = ok(await alice.event(roomId, eventId)) as unknown as Ev;
    assert.deepEqual(redacted.content, {});
  });
});

describe("additional_creators", () => {
  test("from creation_content: listed in the create event, with the creator's power once joined", async () => {
    const roomId = await alice.createRoom({
      room_version: "12",
      preset: "public_chat",
      creation_content: { additional_creators: [bob.userId] },
    });
    const create = findState(await alice.fullState(roomId), "m.room.create")!;
    assert.deepEqual(create.content.additional_creators, [bob.userId]);
    await bob.join(roomId);
    await carol.join(roomId);
    await bob.putState(roomId, "m.room.power_levels", "", { users: { [carol.userId]: 100 } });
    assertError(await carol.act("kick", roomId, bob.userId), 403, "M_FORBIDDEN");
    ok(await bob.act("kick", roomId, carol.userId));
    // Creators are equals: neither can kick the other.
    assertError(await bob.act("kick", roomId, alice.userId), 403, "M_FORBIDDEN");
    assertError(await bob.putStateRaw(roomId, "m.room.power_levels", "", { users: { [bob.userId]: 1 } }), 403, "M_FORBIDDEN");
  });

  test("trusted_private_chat makes the invitees additional creators, and lists nobody in users", async () => {
    const roomId = await alice.createRoom({
      room_version: "12",
      preset: "trusted_private_chat",
      invite: [bob.userId],
      is_direct: true,
      creation_content: { additional_creators: [carol.userId, bob.userId] },
    });
    const state = await alice.fullState(roomId);
    assert.deepEqual(findState(state, "m.room.create")!.content.additional_creators, [carol.userId, bob.userId]);
    assert.deepEqual(findState(state, "m.room.power_levels")!.content.users, {});
    await bob.join(roomId);
    await bob.putState(roomId, "m.room.power_levels", "", { users: {}, state_default: 100 });
  });

  test("a value that is not a list of user IDs is 400 M_BAD_JSON and makes no room", async () => {
    const before = (await alice.joinedRooms()).length;
    for (const bad of ["@bob:localhost", [1], ["bob"], [bob.userId, "@:x"]]) {
      const res = await alice.req("POST", "/createRoom", { room_version: "12", creation_content: { additional_creators: bad } });
      assertError(res, 400, "M_BAD_JSON");
    }
    assert.equal((await alice.joinedRooms()).length, before);
  });
});

describe("default_room_version", () => {
  test("createRoom without room_version uses it, and /capabilities advertises it", async () => {
    const other = await startServer({ default_room_version: "12" });
    try {
      const dana = await User.register(other.baseUrl, "dana");
      const roomId = await dana.createRoom();
      assert.match(roomId, V12_ROOM_ID);
      assert.equal(findState(await dana.fullState(roomId), "m.room.create")!.content.room_version, "12");
      const v11 = await dana.createRoom({ room_version: "11" });
      assert.match(v11, /^!.+:localhost$/);
      const caps = ok(await dana.req("GET", "/capabilities")).capabilities as Record<string, { default: string }>;
      assert.equal(caps["m.room_versions"]!.default, "12");
    } finally {
      await other.stop();
    }
  });

  test("an unsupported value stops the config loading, naming the key and its line", () => {
    const text = "server_name: example.org\nlisteners:\n  - port: 0\ndefault_room_version: \"9\"\n";
    assert.throws(
      () => parseConfig(text, "/srv/switchboard.yaml"),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.problems.length === 1 &&
        /line 4: `default_room_version` is "9", which is not allowed: expected one of 10, 11, 12/.test(err.problems[0]!),
    );
    assert.equal(parseConfig("server_name: example.org\n").config.defaultRoomVersion, "11");
    assert.equal(parseConfig("server_name: example.org\ndefault_room_version: \"12\"\n").config.defaultRoomVersion, "12");
    // Unquoted, YAML reads a number; Synapse takes it as the version, and so does Switchboard.
    assert.equal(parseConfig("server_name: example.org\ndefault_room_version: 12\n").config.defaultRoomVersion, "12");
    assert.throws(
      () => parseConfig("server_name: example.org\ndefault_room_version: 9\n"),
      (err: unknown) => err instanceof ConfigError && /line 2: `default_room_version` is 9/.test(err.problems[0]!),
    );
  });
});
