/** Joining, inviting, leaving, forgetting, kicking and banning, over real HTTP. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { assertError, enc, ok, startWithUsers, User, type Ev } from "./helpers/rooms.js";
import type { TestServer } from "./helpers/server.js";

let server: TestServer;
let alice: User;
let bob: User;
let carol: User;

before(async () => {
  ({ server, users: [alice, bob, carol] } = await startWithUsers("alice", "bob", "carol"));
});
after(async () => server?.stop());

async function memberEvent(viewer: User, roomId: string, userId: string): Promise<Ev> {
  const state = (await viewer.fullState(roomId)).find((e) => e.type === "m.room.member" && e.state_key === userId);
  assert.ok(state, `no member event for ${userId}`);
  return state;
}

describe("join", () => {
  test("by room ID, by alias and through /rooms/{roomId}/join, in a public room", async () => {
    const res = ok(await alice.req("POST", "/createRoom", { preset: "public_chat", room_alias_name: "joinable" }));
    const roomId = res.room_id as string;
    assert.equal(await bob.join(roomId), roomId);
    assert.equal(await carol.join("#joinable:localhost"), roomId);
    const viaRooms = await alice.createRoom({ preset: "public_chat" });
    assert.deepEqual(ok(await bob.req("POST", `/rooms/${enc(viaRooms)}/join`, {})), { room_id: viaRooms });
    assert.equal(await alice.membershipIn(roomId, bob.userId), "join");
    assert.equal(await alice.membershipIn(roomId, carol.userId), "join");
    assert.ok((await bob.joinedRooms()).includes(roomId));
    assert.ok((await bob.joinedRooms()).includes(viaRooms));
  });

  test("a join without a body, and a second join, both succeed", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    ok(await bob.req("POST", `/join/${enc(roomId)}`));
    ok(await bob.req("POST", `/join/${enc(roomId)}`));
    assert.equal(await alice.membershipIn(roomId, bob.userId), "join");
  });

  test("the join carries the reason and the joiner's display name", async () => {
    ok(await carol.req("PUT", `/profile/${enc(carol.userId)}/displayname`, { displayname: "Carol C" }));
    const roomId = await alice.createRoom({ preset: "public_chat" });
    ok(await carol.joinRaw(roomId, { reason: "curious" }));
    const member = await memberEvent(alice, roomId, carol.userId);
    assert.deepEqual(member.content, { membership: "join", displayname: "Carol C", reason: "curious" });
  });

  test("an invite-only room without an invite is 403 M_FORBIDDEN naming the join rule", async () => {
    const roomId = await alice.createRoom({ preset: "private_chat" });
    const error = assertError(await bob.joinRaw(roomId), 403, "M_FORBIDDEN");
    assert.match(error, /join rule/);
    assert.match(error, /invite/);
    assert.equal(await alice.membershipIn(roomId, bob.userId), undefined);
  });

  test("an unknown room or alias is 404 M_NOT_FOUND", async () => {
    assertError(await bob.joinRaw("!nowhere:localhost"), 404, "M_NOT_FOUND");
    assertError(await bob.joinRaw("#nowhere:localhost"), 404, "M_NOT_FOUND");
    assertError(await bob.req("POST", `/rooms/${enc("!nowhere:localhost")}/join`, {}), 404, "M_NOT_FOUND");
  });

  test("something that is neither a room ID nor an alias is 400 M_INVALID_PARAM", async () => {
    assertError(await bob.joinRaw("lobby"), 400, "M_INVALID_PARAM");
  });
});

describe("invite", () => {
  test("an invited user can join an invite-only room, and the invite carries the reason", async () => {
    const roomId = await alice.createRoom({ preset: "private_chat" });
    ok(await alice.act("invite", roomId, bob.userId, "come along"));
    const invite = await memberEvent(alice, roomId, bob.userId);
    assert.equal(invite.sender, alice.userId);
    assert.deepEqual(invite.content, { membership: "invite", reason: "come along" });
    assert.equal(await bob.join(roomId), roomId);
    assert.equal(await alice.membershipIn(roomId, bob.userId), "join");
  });

  test("an invitee may reject the invite by leaving", async () => {
    const roomId = await alice.createRoom();
    ok(await alice.act("invite", roomId, bob.userId));
    ok(await bob.leave(roomId));
    assert.equal(await alice.membershipIn(roomId, bob.userId), "leave");
    assertError(await bob.joinRaw(roomId), 403, "M_FORBIDDEN");
  });

  test("an unknown local user is 404 M_NOT_FOUND; a user of a server that cannot be reached 502 M_UNKNOWN", async () => {
    const roomId = await alice.createRoom();
    assertError(await alice.act("invite", roomId, "@ghost:localhost"), 404, "M_NOT_FOUND");
    // `.example` never resolves: the invite cannot be delivered, so it does not enter the room.
    assertError(await alice.act("invite", roomId, "@someone:elsewhere.example"), 502, "M_UNKNOWN");
    assert.equal(await alice.membershipIn(roomId, "@someone:elsewhere.example"), undefined);
    assertError(await alice.act("invite", roomId, "not-a-user"), 400, "M_INVALID_PARAM");
  });

  test("a non-member, an under-powered member, or an invite of a joined user is 403 M_FORBIDDEN", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    assert.match(assertError(await bob.act("invite", roomId, carol.userId), 403, "M_FORBIDDEN"), /not joined/);
    await bob.join(roomId);
    // public_chat needs power level 50 to invite.
    assert.match(assertError(await bob.act("invite", roomId, carol.userId), 403, "M_FORBIDDEN"), /power level/);
    assertError(await alice.act("invite", roomId, bob.userId), 403, "M_FORBIDDEN");
  });

  test("a missing user_id is 400 M_MISSING_PARAM", async () => {
    const roomId = await alice.createRoom();
    assertError(await alice.req("POST", `/rooms/${enc(roomId)}/invite`, {}), 400, "M_MISSING_PARAM");
  });
});

describe("leave and forget", () => {
  test("leaving removes the room from joined_rooms and stops the user sending", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    await bob.send(roomId, "bye");
    ok(await bob.leave(roomId));
    assert.equal(await alice.membershipIn(roomId, bob.userId), "leave");
    assert.ok(!(await bob.joinedRooms()).includes(roomId));
    assertError(await bob.sendRaw(roomId, "m.room.message", { msgtype: "m.text", body: "ghost" }), 403, "M_FORBIDDEN");
    // Public room: leaving does not stop a later rejoin.
    await bob.join(roomId);
    assert.equal(await alice.membershipIn(roomId, bob.userId), "join");
  });

  test("leaving an unknown room is 404 M_NOT_FOUND", async () => {
    assertError(await bob.leave("!nowhere:localhost"), 404, "M_NOT_FOUND");
  });

  test("forget: 400 while joined, fine after leaving", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    assertError(await bob.req("POST", `/rooms/${enc(roomId)}/forget`, {}), 400, "M_UNKNOWN");
    ok(await bob.leave(roomId));
    ok(await bob.req("GET", `/rooms/${enc(roomId)}/messages?dir=b`));
    assert.deepEqual(ok(await bob.req("POST", `/rooms/${enc(roomId)}/forget`, {})), {});
    assert.deepEqual(ok(await bob.req("POST", `/rooms/${enc(roomId)}/forget`)), {});
    // A forgotten room's history is no longer the user's to read, until they join again.
    assertError(await bob.req("GET", `/rooms/${enc(roomId)}/messages?dir=b`), 403, "M_FORBIDDEN");
    await bob.join(roomId);
    ok(await bob.req("GET", `/rooms/${enc(roomId)}/messages?dir=b`));
  });
});

describe("kick, ban and unban", () => {
  test("kicking needs power; an admin can kick, with a reason", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    await carol.join(roomId);
    const error = assertError(await bob.act("kick", roomId, carol.userId), 403, "M_FORBIDDEN");
    assert.match(error, /power level too low to kick/);
    assert.match(assertError(await bob.act("kick", roomId, alice.userId), 403, "M_FORBIDDEN"), /power level/);
    ok(await alice.act("kick", roomId, carol.userId, "spam"));
    const member = await memberEvent(alice, roomId, carol.userId);
    assert.equal(member.sender, alice.userId);
    assert.deepEqual(member.content, { membership: "leave", reason: "spam" });
    assert.ok(!(await carol.joinedRooms()).includes(roomId));
    // A kick is not a ban: the public room can be joined again.
    await carol.join(roomId);
  });

  test("kicking someone who is not in the room is 403 M_FORBIDDEN", async () => {
    const roomId = await alice.createRoom();
    assertError(await alice.act("kick", roomId, carol.userId), 403, "M_FORBIDDEN");
  });

  test("an unknown room is 404 M_NOT_FOUND and a target that is not a user ID 400 M_INVALID_PARAM", async () => {
    const roomId = await alice.createRoom();
    for (const action of ["invite", "kick", "ban", "unban"] as const) {
      assertError(await alice.act(action, "!nowhere:localhost", carol.userId), 404, "M_NOT_FOUND");
    }
    for (const action of ["kick", "ban", "unban"] as const) {
      assertError(await alice.act(action, roomId, "carol"), 400, "M_INVALID_PARAM");
    }
  });

  test("a moderator cannot kick someone at or above their own level", async () => {
    const roomId = await alice.createRoom({
      preset: "public_chat",
      power_level_content_override: { users: { [alice.userId]: 100, [bob.userId]: 50, [carol.userId]: 50 } },
    });
    await bob.join(roomId);
    await carol.join(roomId);
    const error = assertError(await bob.act("kick", roomId, carol.userId), 403, "M_FORBIDDEN");
    assert.match(error, /not below/);
  });

  test("a banned user cannot join, even a public room; unban lets them back", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await carol.join(roomId);
    ok(await alice.act("ban", roomId, carol.userId, "rude"));
    const member = await memberEvent(alice, roomId, carol.userId);
    assert.deepEqual(member.content, { membership: "ban", reason: "rude" });
    assert.ok(!(await carol.joinedRooms()).includes(roomId));
    assert.match(assertError(await carol.joinRaw(roomId), 403, "M_FORBIDDEN"), /banned/);
    // A ban also blocks an invite.
    assert.match(assertError(await alice.act("invite", roomId, carol.userId), 403, "M_FORBIDDEN"), /banned/);
    ok(await alice.act("unban", roomId, carol.userId));
    assert.equal(await alice.membershipIn(roomId, carol.userId), "leave");
    await carol.join(roomId);
  });

  test("a user who never joined can be banned pre-emptively", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    ok(await alice.act("ban", roomId, carol.userId));
    assertError(await carol.joinRaw(roomId), 403, "M_FORBIDDEN");
  });

  test("banning and unbanning need power", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    await carol.join(roomId);
    assert.match(assertError(await bob.act("ban", roomId, carol.userId), 403, "M_FORBIDDEN"), /power level too low to ban/);
    ok(await alice.act("ban", roomId, carol.userId));
    assert.match(assertError(await bob.act("unban", roomId, carol.userId), 403, "M_FORBIDDEN"), /power level too low to unban/);
    assertError(await alice.act("unban", roomId, bob.userId), 403, "M_FORBIDDEN");
  });
});

describe("GET /joined_rooms", () => {
  test("lists the rooms a user is joined to, and not those they are invited to or left", async () => {
    const dave = await User.register(server.baseUrl, "dave");
    assert.deepEqual(await dave.joinedRooms(), []);
    const joined = await dave.createRoom();
    const invited = await alice.createRoom({ invite: [dave.userId] });
    const left = await dave.createRoom();
    ok(await dave.leave(left));
    assert.deepEqual(await dave.joinedRooms(), [joined]);
    await dave.join(invited);
    assert.deepEqual((await dave.joinedRooms()).sort(), [joined, invited].sort());
  });
});

describe("profile changes", () => {
  test("a new display name or avatar reaches the member event of every joined room, and no other room", async () => {
    const dave = await User.register(server.baseUrl, "dave_profile");
    const joined = [await alice.createRoom({ preset: "public_chat" }), await alice.createRoom({ preset: "public_chat" })];
    for (const roomId of joined) await dave.join(roomId);
    const left = await alice.createRoom({ preset: "public_chat" });
    await dave.join(left);
    ok(await dave.req("POST", `/rooms/${enc(left)}/leave`, {}));
    const invited = await alice.createRoom({ preset: "private_chat", invite: [dave.userId] });

    ok(await dave.req("PUT", `/profile/${enc(dave.userId)}/displayname`, { displayname: "Dave D" }));
    ok(await dave.req("PUT", `/profile/${enc(dave.userId)}/avatar_url`, { avatar_url: "mxc://localhost/daveavatar" }));
    for (const roomId of joined) {
      assert.deepEqual((await memberEvent(alice, roomId, dave.userId)).content, {
        membership: "join",
        displayname: "Dave D",
        avatar_url: "mxc://localhost/daveavatar",
      });
    }
    assert.equal((await memberEvent(alice, left, dave.userId)).content.membership, "leave");
    assert.deepEqual((await memberEvent(alice, invited, dave.userId)).content, { membership: "invite" });
    // Cleared: gone from the member events too.
    ok(await dave.req("PUT", `/profile/${enc(dave.userId)}/avatar_url`, { avatar_url: null }));
    assert.deepEqual((await memberEvent(alice, joined[0]!, dave.userId)).content, { membership: "join", displayname: "Dave D" });
  });
});
