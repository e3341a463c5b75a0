/** `POST /createRoom`, `GET /capabilities` room versions and the room directory aliases, over real HTTP. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ROOM_VERSIONS } from "../src/events/index.js";
import { assertError, enc, findState, ok, startWithUsers, User, type Ev } from "./helpers/rooms.js";
import { request, type TestServer } from "./helpers/server.js";

let server: TestServer;
let alice: User;
let bob: User;
let carol: User;

before(async () => {
  ({ server, users: [alice, bob, carol] } = await startWithUsers("alice", "bob", "carol"));
});
after(async () => server?.stop());

/** Every event of a room, oldest first. */
async function history(user: User, roomId: string): Promise<Ev[]> {
  return ok(await user.messages(roomId, { dir: "f", limit: 100 })).chunk as Ev[];
}

describe("createRoom presets", () => {
  test("no preset and no visibility is private_chat in room version 11", async () => {
    const roomId = await alice.createRoom();
    assert.match(roomId, /^!.+:localhost$/);
    const state = await alice.fullState(roomId);
    const create = findState(state, "m.room.create")!;
    assert.equal(create.sender, alice.userId);
    assert.equal(create.content.room_version, "11");
    assert.equal(Object.hasOwn(create.content, "creator"), false, "v11 create events have no creator");
    assert.equal(findState(state, "m.room.join_rules")!.content.join_rule, "invite");
    assert.equal(findState(state, "m.room.history_visibility")!.content.history_visibility, "shared");
    assert.equal(findState(state, "m.room.guest_access")!.content.guest_access, "can_join");
    assert.equal(findState(state, "m.room.member", alice.userId)!.content.membership, "join");
    const pl = findState(state, "m.room.power_levels")!.content;
    assert.deepEqual(pl.users, { [alice.userId]: 100 });
    assert.equal(pl.invite, 0);
    assert.deepEqual(await alice.joinedRooms().then((r) => r.includes(roomId)), true);
  });

  test("public_chat: public join rule, guests forbidden, shared history, invite needs 50", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    const state = await alice.fullState(roomId);
    assert.equal(findState(state, "m.room.join_rules")!.content.join_rule, "public");
    assert.equal(findState(state, "m.room.guest_access")!.content.guest_access, "forbidden");
    assert.equal(findState(state, "m.room.history_visibility")!.content.history_visibility, "shared");
    assert.equal(findState(state, "m.room.power_levels")!.content.invite, 50);
  });

  test("visibility public without a preset means public_chat", async () => {
    const roomId = await alice.createRoom({ visibility: "public" });
    assert.equal((await alice.getState(roomId, "m.room.join_rules")).join_rule, "public");
    assert.equal((await alice.getState(roomId, "m.room.guest_access")).guest_access, "forbidden");
  });

  test("private_chat: invitees are invited at the default power level", async () => {
    const roomId = await alice.createRoom({ preset: "private_chat", invite: [bob.userId] });
    const state = await alice.fullState(roomId);
    assert.equal(findState(state, "m.room.join_rules")!.content.join_rule, "invite");
    assert.equal(findState(state, "m.room.member", bob.userId)!.content.membership, "invite");
    assert.deepEqual(findState(state, "m.room.power_levels")!.content.users, { [alice.userId]: 100 });
  });

  test("trusted_private_chat: invitees get power level 100, and is_direct is on the invite", async () => {
    const roomId = await alice.createRoom({ preset: "trusted_private_chat", invite: [bob.userId, carol.userId], is_direct: true });
    const state = await alice.fullState(roomId);
    assert.equal(findState(state, "m.room.join_rules")!.content.join_rule, "invite");
    assert.equal(findState(state, "m.room.guest_access")!.content.guest_access, "can_join");
    assert.deepEqual(findState(state, "m.room.power_levels")!.content.users, {
      [alice.userId]: 100,
      [bob.userId]: 100,
      [carol.userId]: 100,
    });
    const invite = findState(state, "m.room.member", bob.userId)!;
    assert.equal(invite.sender, alice.userId);
    assert.deepEqual(invite.content, { membership: "invite", is_direct: true });
    // The invitee can join, and has the power the preset gave.
    await bob.join(roomId);
    await bob.putState(roomId, "m.room.topic", "", { topic: "bob can do this" });
  });

  test("without is_direct the invite carries no is_direct", async () => {
    const roomId = await alice.createRoom({ invite: [bob.userId] });
    const member = await alice.getState(roomId, "m.room.member", bob.userId);
    assert.deepEqual(member, { membership: "invite" });
  });
});

describe("createRoom content", () => {
  test("events come in the spec's order: create, join, power levels, alias, preset, initial_state, name, topic, invites", async () => {
    const roomId = await alice.createRoom({
      room_alias_name: "ordering",
      name: "The name",
      topic: "The topic",
      invite: [bob.userId],
      initial_state: [{ type: "org.example.initial", state_key: "k", content: { v: 1 } }],
    });
    const types = (await history(alice, roomId)).map((e) => (e.state_key ? `${e.type}/${e.state_key}` : e.type));
    assert.deepEqual(types, [
      "m.room.create",
      `m.room.member/${alice.userId}`,
      "m.room.power_levels",
      "m.room.canonical_alias",
      "m.room.join_rules",
      "m.room.history_visibility",
      "m.room.guest_access",
      "org.example.initial/k",
      "m.room.name",
      "m.room.topic",
      `m.room.member/${bob.userId}`,
    ]);
  });

  test("initial_state overrides the preset's events, and name/topic override initial_state", async () => {
    const roomId = await alice.createRoom({
      preset: "public_chat",
      name: "Named",
      topic: "From the topic key",
      initial_state: [
        { type: "m.room.join_rules", content: { join_rule: "invite" } },
        { type: "m.room.history_visibility", state_key: "", content: { history_visibility: "joined" } },
        { type: "m.room.topic", content: { topic: "from initial_state" } },
      ],
    });
    const state = await alice.fullState(roomId);
    assert.equal(findState(state, "m.room.join_rules")!.content.join_rule, "invite");
    assert.equal(findState(state, "m.room.history_visibility")!.content.history_visibility, "joined");
    assert.equal(findState(state, "m.room.guest_access")!.content.guest_access, "forbidden");
    assert.equal(findState(state, "m.room.name")!.content.name, "Named");
    assert.deepEqual(findState(state, "m.room.topic")!.content, {
      topic: "From the topic key",
      "m.topic": { "m.text": [{ mimetype: "text/plain", body: "From the topic key" }] },
    });
    // The preset's join rule was replaced, not sent as well.
    const joinRules = (await history(alice, roomId)).filter((e) => e.type === "m.room.join_rules");
    assert.equal(joinRules.length, 1);
    assertError(await bob.joinRaw(roomId), 403, "M_FORBIDDEN");
  });

  test("power_level_content_override is applied on top of the defaults", async () => {
    const roomId = await alice.createRoom({
      power_level_content_override: { users: { [alice.userId]: 100, [bob.userId]: 50 }, events_default: 10 },
    });
    const pl = await alice.getState(roomId, "m.room.power_levels");
    assert.deepEqual(pl.users, { [alice.userId]: 100, [bob.userId]: 50 });
    assert.equal(pl.events_default, 10);
    assert.equal(pl.state_default, 50);
    assert.equal(pl.ban, 50);
  });

  test("creation_content is kept, except creator and room_version which the server sets", async () => {
    const roomId = await alice.createRoom({
      room_version: "11",
      creation_content: { "m.federate": false, type: "org.example.kind", creator: bob.userId, room_version: "10" },
    });
    const create = await alice.getState(roomId, "m.room.create");
    assert.deepEqual(create, { "m.federate": false, type: "org.example.kind", room_version: "11" });
    const v10 = await alice.createRoom({ room_version: "10", creation_content: { creator: bob.userId } });
    assert.deepEqual(await alice.getState(v10, "m.room.create"), { creator: alice.userId, room_version: "10" });
  });

  test("room versions 10, 11 and the MSC3757 versions all work; only v10-based create events name a creator", async () => {
    for (const version of ["10", "11", "org.matrix.msc3757.10", "org.matrix.msc3757.11"]) {
      const roomId = await alice.createRoom({ room_version: version, name: `v${version}` });
      const create = await alice.getState(roomId, "m.room.create");
      assert.equal(create.room_version, version);
      if (version.endsWith("10")) assert.equal(create.creator, alice.userId, version);
      else assert.equal(Object.hasOwn(create, "creator"), false, version);
      await alice.send(roomId, "hello");
      assert.equal((await alice.getState(roomId, "m.room.name")).name, `v${version}`);
    }
  });

  test("an unsupported room version is 400 M_UNSUPPORTED_ROOM_VERSION and creates nothing", async () => {
    const before = (await alice.joinedRooms()).length;
    for (const version of ["9", "foo", "13", "org.matrix.msc3757.9", ""]) {
      assertError(await alice.req("POST", "/createRoom", { room_version: version }), 400, "M_UNSUPPORTED_ROOM_VERSION");
    }
    assert.equal((await alice.joinedRooms()).length, before);
  });

  test("inviting an unknown local user is 404 M_NOT_FOUND and makes no room", async () => {
    const before = (await alice.joinedRooms()).length;
    assertError(await alice.req("POST", "/createRoom", { invite: ["@nobody:localhost"] }), 404, "M_NOT_FOUND");
    assert.equal((await alice.joinedRooms()).length, before);
  });

  test("a user of a server that cannot be reached: the room is made, and the answer is 502 M_UNKNOWN naming the invite", async () => {
    // As in Synapse, users of other servers are invited once the room exists.
    const before = (await alice.joinedRooms()).length;
    const res = await alice.req("POST", "/createRoom", { invite: ["@someone:elsewhere.example"] });
    assert.match(assertError(res, 502, "M_UNKNOWN"), /@someone:elsewhere\.example/);
    assert.equal((await alice.joinedRooms()).length, before + 1);
  });

  test("initial state the rules would reject is 400 M_INVALID_ROOM_STATE, and no room is made", async () => {
    const before = (await alice.joinedRooms()).length;
    const bobBefore = (await bob.joinedRooms()).length;
    // The creator's own power level set below what naming the room needs.
    const lowered = await alice.req("POST", "/createRoom", {
      name: "Unnameable",
      power_level_content_override: { users: { [alice.userId]: 10 }, events: { "m.room.name": 50 }, state_default: 0 },
    });
    assert.match(assertError(lowered, 400, "M_INVALID_ROOM_STATE"), /m\.room\.name \(needs 50, has 10\)/);
    const noInvite = await alice.req("POST", "/createRoom", {
      invite: [bob.userId],
      power_level_content_override: { invite: 101 },
    });
    assert.match(assertError(noInvite, 400, "M_INVALID_ROOM_STATE"), /invite/);
    const secondCreate = await alice.req("POST", "/createRoom", { initial_state: [{ type: "m.room.create", content: {} }] });
    assertError(secondCreate, 400, "M_INVALID_ROOM_STATE");
    const float = await alice.req("POST", "/createRoom", { initial_state: [{ type: "org.example.f", content: { v: 0.5 } }] });
    assertError(float, 400, "M_BAD_JSON");
    assert.equal((await alice.joinedRooms()).length, before);
    assert.equal((await bob.joinedRooms()).length, bobBefore);
  });

  test("a body that breaks the schema is 400 M_BAD_JSON", async () => {
    assertError(await alice.req("POST", "/createRoom", { preset: "everyone_chat" }), 400, "M_BAD_JSON");
    assertError(await alice.req("POST", "/createRoom", { invite: "@bob:localhost" }), 400, "M_BAD_JSON");
  });
});

describe("createRoom aliases and the directory", () => {
  test("room_alias_name makes an alias that resolves, and sets the canonical alias", async () => {
    const res = ok(await alice.req("POST", "/createRoom", { room_alias_name: "lobby", preset: "public_chat" }));
    assert.equal(res.room_alias, "#lobby:localhost");
    const roomId = res.room_id as string;
    const resolved = await request(server.baseUrl, "GET", `/_matrix/client/v3/directory/room/${enc("#lobby:localhost")}`);
    assert.deepEqual(ok(resolved), { room_id: roomId, servers: ["localhost"] });
    assert.deepEqual(await alice.getState(roomId, "m.room.canonical_alias"), { alias: "#lobby:localhost" });
    assert.deepEqual(ok(await alice.req("GET", `/rooms/${enc(roomId)}/aliases`)).aliases, ["#lobby:localhost"]);
    assert.equal(await bob.join("#lobby:localhost"), roomId);
  });

  test("a taken alias is 400 M_ROOM_IN_USE and no room is made; a malformed one 400 M_INVALID_PARAM", async () => {
    await alice.createRoom({ room_alias_name: "taken" });
    const before = (await bob.joinedRooms()).length;
    assertError(await bob.req("POST", "/createRoom", { room_alias_name: "taken" }), 400, "M_ROOM_IN_USE");
    assertError(await bob.req("POST", "/createRoom", { room_alias_name: "bad:name" }), 400, "M_INVALID_PARAM");
    assert.equal((await bob.joinedRooms()).length, before);
  });

  test("PUT, GET and DELETE /directory/room/{alias}", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    const alias = "#extra:localhost";
    const path = `/directory/room/${enc(alias)}`;
    ok(await alice.req("PUT", path, { room_id: roomId }));
    assert.equal(ok(await alice.req("GET", path)).room_id, roomId);
    // Taken: 409 with M_UNKNOWN, as the spec's example has it.
    assertError(await alice.req("PUT", path, { room_id: roomId }), 409, "M_UNKNOWN");
    assertError(await alice.req("PUT", `/directory/room/${enc("#other:elsewhere.example")}`, { room_id: roomId }), 400, "M_INVALID_PARAM");
    assertError(await alice.req("PUT", `/directory/room/${enc("notanalias")}`, { room_id: roomId }), 400, "M_INVALID_PARAM");
    // Bob joins at power level 0: he may not delete Alice's alias.
    await bob.join(roomId);
    assertError(await bob.req("DELETE", path), 403, "M_FORBIDDEN");
    ok(await alice.req("DELETE", path));
    assertError(await alice.req("GET", path), 404, "M_NOT_FOUND");
    assertError(await alice.req("DELETE", path), 404, "M_NOT_FOUND");
    assert.deepEqual(ok(await alice.req("GET", `/rooms/${enc(roomId)}/aliases`)).aliases, []);
  });

  test("the alias creator may delete it, and so may a room admin", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    ok(await bob.req("PUT", `/directory/room/${enc("#bobs:localhost")}`, { room_id: roomId }));
    ok(await bob.req("PUT", `/directory/room/${enc("#bobs2:localhost")}`, { room_id: roomId }));
    ok(await alice.req("PUT", `/directory/room/${enc("#alices:localhost")}`, { room_id: roomId }));
    assert.deepEqual(ok(await bob.req("GET", `/rooms/${enc(roomId)}/aliases`)).aliases, [
      "#alices:localhost",
      "#bobs2:localhost",
      "#bobs:localhost",
    ]);
    ok(await bob.req("DELETE", `/directory/room/${enc("#bobs:localhost")}`));
    ok(await alice.req("DELETE", `/directory/room/${enc("#bobs2:localhost")}`));
    assertError(await bob.req("DELETE", `/directory/room/${enc("#alices:localhost")}`), 403, "M_FORBIDDEN");
    assert.deepEqual(ok(await bob.req("GET", `/rooms/${enc(roomId)}/aliases`)).aliases, ["#alices:localhost"]);
  });

  test("aliases: a non-member may not add one, nor list them; GET of an unknown alias is 404", async () => {
    const roomId = await alice.createRoom();
    assertError(await carol.req("PUT", `/directory/room/${enc("#carols:localhost")}`, { room_id: roomId }), 403, "M_FORBIDDEN");
    assertError(await carol.req("GET", `/rooms/${enc(roomId)}/aliases`), 403, "M_FORBIDDEN");
    assertError(await carol.req("GET", `/directory/room/${enc("#never:localhost")}`), 404, "M_NOT_FOUND");
    assertError(await carol.req("PUT", `/directory/room/${enc("#ghost:localhost")}`, { room_id: "!missing:localhost" }), 404, "M_NOT_FOUND");
  });

  test("anyone may list the aliases of a world-readable room", async () => {
    const res = ok(
      await alice.req("POST", "/createRoom", {
        room_alias_name: "readable",
        initial_state: [{ type: "m.room.history_visibility", content: { history_visibility: "world_readable" } }],
      }),
    );
    assert.deepEqual(ok(await carol.req("GET", `/rooms/${enc(res.room_id as string)}/aliases`)).aliases, ["#readable:localhost"]);
  });
});

describe("room directory visibility", () => {
  const path = (roomId: string) => `/directory/list/room/${enc(roomId)}`;

  test("createRoom's visibility publishes the room (or not); admins may change it, others not", async () => {
    const published = await alice.createRoom({ visibility: "public" });
    const unlisted = await alice.createRoom({ preset: "public_chat" });
    const anonymous = (roomId: string) => request(server.baseUrl, "GET", `/_matrix/client/v3${path(roomId)}`);
    assert.deepEqual(ok(await anonymous(published)), { visibility: "public" });
    assert.deepEqual(ok(await anonymous(unlisted)), { visibility: "private" });
    await bob.join(unlisted);
    assertError(await bob.req("PUT", path(unlisted), { visibility: "public" }), 403, "M_FORBIDDEN");
    assertError(await carol.req("PUT", path(unlisted), { visibility: "public" }), 403, "M_FORBIDDEN");
    ok(await alice.req("PUT", path(unlisted), {}));
    assert.deepEqual(ok(await anonymous(unlisted)), { visibility: "public" });
    ok(await alice.req("PUT", path(unlisted), { visibility: "private" }));
    assert.deepEqual(ok(await anonymous(unlisted)), { visibility: "private" });
    assertError(await alice.req("PUT", path(unlisted), { visibility: "hidden" }), 400, "M_BAD_JSON");
    assertError(await anonymous("!unknown:localhost"), 404, "M_NOT_FOUND");
  });
});

describe("GET /capabilities", () => {
  test("m.room_versions lists exactly the supported versions, default 11", async () => {
    const caps = ok(await alice.req("GET", "/capabilities")).capabilities as Record<string, unknown>;
    assert.deepEqual(caps["m.room_versions"], {
      default: "11",
      available: {
        "10": "stable",
        "11": "stable",
        "12": "stable",
        "org.matrix.msc3757.10": "unstable",
        "org.matrix.msc3757.11": "unstable",
      },
    });
    const available = (caps["m.room_versions"] as { available: Record<string, string> }).available;
    assert.deepEqual(Object.keys(available).sort(), Object.keys(ROOM_VERSIONS).sort());
    // Every listed version can be created.
    for (const version of Object.keys(available)) await alice.createRoom({ room_version: version });
  });

  test("requires an access token", async () => {
    const res = await request(server.baseUrl, "GET", "/_matrix/client/v3/capabilities");
    assertError(res, 401, "M_MISSING_TOKEN");
  });
});
