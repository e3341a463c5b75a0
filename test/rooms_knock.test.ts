/**
 * Knocking on a room resident here (spec: "Knocking on rooms"), over real HTTP: the knock and
 * what the auth rules refuse, the knocker's `rooms.knock` in /sync, the members' view, an invite
 * or a moderator's kick after a knock, and a knock withdrawn by leaving.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { assertError, enc, ok, startWithUsers, User, type Ev } from "./helpers/rooms.js";
import type { Reply, TestServer } from "./helpers/server.js";

let server: TestServer;
let alice: User;
let bob: User;
let carol: User;
let dave: User;

before(async () => {
  ({ server, users: [alice, bob, carol, dave] } = await startWithUsers("alice", "bob", "carol", "dave"));
});
after(async () => server?.stop());

interface SyncRooms {
  join: Record<string, { timeline: { events: Ev[] } }>;
  invite: Record<string, { invite_state: { events: Ev[] } }>;
  leave: Record<string, { timeline: { events: Ev[] } }>;
  knock: Record<string, { knock_state: { events: Ev[] } }>;
}

async function sync(user: User, since?: string): Promise<{ next_batch: string; rooms: SyncRooms }> {
  const body = ok(await user.req("GET", `/sync${since ? `?since=${enc(since)}` : ""}`));
  return body as unknown as { next_batch: string; rooms: SyncRooms };
}

function knockRaw(user: User, roomIdOrAlias: string, body: Record<string, unknown> = {}, query = ""): Promise<Reply> {
  return user.req("POST", `/knock/${enc(roomIdOrAlias)}${query}`, body);
}

/** A room whose join rule lets users knock, created by alice. */
async function knockRoom(rule: "knock" | "knock_restricted" = "knock", extra: Record<string, unknown> = {}): Promise<string> {
  const content = rule === "knock" ? { join_rule: rule } : { join_rule: rule, allow: [] };
  return alice.createRoom({
    preset: "private_chat",
    name: "Knock here",
    topic: "ask first",
    initial_state: [{ type: "m.room.join_rules", state_key: "", content }],
    ...extra,
  });
}

describe("knock on a local room", () => {
  test("the knock is a member event with the reason, shown to the room's members", async () => {
    const roomId = await knockRoom();
    const res = await knockRaw(bob, roomId, { reason: "let me in" });
    assert.deepEqual(ok(res), { room_id: roomId });
    assert.equal(await alice.membershipIn(roomId, bob.userId), "knock");
    const member = await alice.getState(roomId, "m.room.member", bob.userId);
    assert.equal(member.membership, "knock");
    assert.equal(member.reason, "let me in");
    const timeline = (await sync(alice)).rooms.join[roomId]!.timeline.events;
    assert.ok(timeline.some((e) => e.type === "m.room.member" && e.state_key === bob.userId && e.content.membership === "knock"), JSON.stringify(timeline));
  });

  test("the knocker sees the room under rooms.knock with its stripped state and the knock", async () => {
    const roomId = await knockRoom();
    const first = await sync(carol);
    assert.equal(first.rooms.knock[roomId], undefined);
    ok(await knockRaw(carol, roomId, { reason: "hello" }));
    const next = await sync(carol, first.next_batch);
    const events = next.rooms.knock[roomId]?.knock_state.events;
    assert.ok(events, JSON.stringify(next.rooms));
    assert.equal(events.find((e) => e.type === "m.room.join_rules")?.content.join_rule, "knock");
    assert.equal(events.find((e) => e.type === "m.room.name")?.content.name, "Knock here");
    assert.equal(events.find((e) => e.type === "m.room.topic")?.content.topic, "ask first");
    assert.ok(events.some((e) => e.type === "m.room.create"));
    const own = events.find((e) => e.type === "m.room.member" && e.state_key === carol.userId);
    assert.equal(own?.content.membership, "knock");
    assert.equal(own?.content.reason, "hello");
    // No other member's event, nothing under join or invite.
    assert.ok(!events.some((e) => e.type === "m.room.member" && e.state_key === alice.userId));
    assert.equal(next.rooms.join[roomId], undefined);
    assert.equal(next.rooms.invite[roomId], undefined);
    // An initial sync shows it too; a later incremental one does not repeat it.
    assert.ok((await sync(carol)).rooms.knock[roomId]);
    assert.equal((await sync(carol, next.next_batch)).rooms.knock[roomId], undefined);
  });

  test("by alias, with via, and in a knock_restricted room", async () => {
    const roomId = await knockRoom("knock", { room_alias_name: "knockable" });
    assert.deepEqual(ok(await knockRaw(dave, "#knockable:localhost", {}, "?via=localhost&server_name=localhost")), { room_id: roomId });
    assert.equal(await alice.membershipIn(roomId, dave.userId), "knock");
    const restricted = await knockRoom("knock_restricted");
    ok(await knockRaw(dave, restricted));
    assert.equal(await alice.membershipIn(restricted, dave.userId), "knock");
  });

  test("a knock without a body, and a second knock, both succeed", async () => {
    const roomId = await knockRoom();
    ok(await bob.req("POST", `/knock/${enc(roomId)}`));
    ok(await knockRaw(bob, roomId, { reason: "again" }));
    assert.equal((await alice.getState(roomId, "m.room.member", bob.userId)).reason, "again");
  });

  test("room version 12 rooms take knocks too", async () => {
    const roomId = await knockRoom("knock", { room_version: "12" });
    ok(await knockRaw(bob, roomId));
    assert.equal(await alice.membershipIn(roomId, bob.userId), "knock");
  });
});

describe("knocks the auth rules refuse", () => {
  test("a room whose join rule is not knock is 403 M_FORBIDDEN naming the join rule", async () => {
    const invite = await alice.createRoom({ preset: "private_chat" });
    assert.match(assertError(await knockRaw(bob, invite), 403, "M_FORBIDDEN"), /join rule/);
    const publicRoom = await alice.createRoom({ preset: "public_chat" });
    assertError(await knockRaw(bob, publicRoom), 403, "M_FORBIDDEN");
    assert.equal(await alice.membershipIn(invite, bob.userId), undefined);
    assert.equal(await alice.membershipIn(publicRoom, bob.userId), undefined);
  });

  test("a banned user is 403 M_FORBIDDEN", async () => {
    const roomId = await knockRoom();
    ok(await alice.act("ban", roomId, carol.userId));
    assertError(await knockRaw(carol, roomId), 403, "M_FORBIDDEN");
    assert.equal(await alice.membershipIn(roomId, carol.userId), "ban");
  });

  test("a joined user is 403 M_FORBIDDEN", async () => {
    const roomId = await knockRoom();
    assertError(await knockRaw(alice, roomId), 403, "M_FORBIDDEN");
    assert.equal(await alice.membershipIn(roomId), "join");
  });

  test("an invited user is 403 M_FORBIDDEN", async () => {
    const roomId = await knockRoom();
    ok(await alice.act("invite", roomId, dave.userId));
    assertError(await knockRaw(dave, roomId), 403, "M_FORBIDDEN");
    assert.equal(await alice.membershipIn(roomId, dave.userId), "invite");
  });

  test("an unknown room or alias is 404 M_NOT_FOUND, a bad ID 400", async () => {
    assertError(await knockRaw(bob, "#nowhere:localhost"), 404, "M_NOT_FOUND");
    const unknown = await knockRaw(bob, "!nowhere:localhost");
    assert.equal(unknown.status, 404, JSON.stringify(unknown.body));
    assert.equal(unknown.body.errcode, "M_NOT_FOUND");
    assertError(await knockRaw(bob, "nowhere"), 400, "M_INVALID_PARAM");
  });

  test("no access token is 401", async () => {
    const res = await knockRaw(new User(server.baseUrl, "@x:localhost", "not-a-token", "D"), "!x:localhost");
    assert.equal(res.status, 401);
  });
});

describe("after a knock", () => {
  test("a moderator's invite moves the knocker to rooms.invite, and they join", async () => {
    const roomId = await knockRoom();
    const erin = await User.register(server.baseUrl, "erin");
    ok(await knockRaw(erin, roomId));
    const knocked = await sync(erin);
    assert.ok(knocked.rooms.knock[roomId]);
    ok(await alice.act("invite", roomId, erin.userId));
    const invited = await sync(erin, knocked.next_batch);
    assert.ok(invited.rooms.invite[roomId], JSON.stringify(invited.rooms));
    assert.equal(invited.rooms.knock[roomId], undefined);
    assert.equal(await erin.join(roomId), roomId);
    assert.equal(await alice.membershipIn(roomId, erin.userId), "join");
    const joined = await sync(erin, invited.next_batch);
    assert.ok(joined.rooms.join[roomId]);
    assert.equal(joined.rooms.knock[roomId], undefined);
  });

  test("joining directly while knocking is still refused by an invite-only knock rule", async () => {
    const roomId = await knockRoom();
    const frank = await User.register(server.baseUrl, "frank");
    ok(await knockRaw(frank, roomId));
    assertError(await frank.joinRaw(roomId), 403, "M_FORBIDDEN");
    assert.equal(await alice.membershipIn(roomId, frank.userId), "knock");
  });

  test("leaving withdraws the knock; the knocker sees the leave and may knock again", async () => {
    const roomId = await knockRoom();
    const gina = await User.register(server.baseUrl, "gina");
    ok(await knockRaw(gina, roomId));
    const knocked = await sync(gina);
    ok(await gina.leave(roomId));
    assert.equal(await alice.membershipIn(roomId, gina.userId), "leave");
    const left = await sync(gina, knocked.next_batch);
    assert.equal(left.rooms.knock[roomId], undefined);
    const own = left.rooms.leave[roomId]?.timeline.events ?? [];
    assert.ok(own.some((e) => e.type === "m.room.member" && e.content.membership === "leave"), JSON.stringify(left.rooms));
    // Only their own event: nothing of the room's history.
    assert.ok(own.every((e) => e.state_key === gina.userId));
    ok(await knockRaw(gina, roomId));
    assert.equal(await alice.membershipIn(roomId, gina.userId), "knock");
  });

  test("a moderator refuses a knock by kicking", async () => {
    const roomId = await knockRoom();
    const hank = await User.register(server.baseUrl, "hank");
    ok(await knockRaw(hank, roomId));
    ok(await alice.act("kick", roomId, hank.userId, "not now"));
    assert.equal(await alice.membershipIn(roomId, hank.userId), "leave");
    // A member without the power to kick cannot refuse one.
    const ivy = await User.register(server.baseUrl, "ivy");
    ok(await knockRaw(ivy, roomId));
    ok(await alice.act("invite", roomId, bob.userId));
    await bob.join(roomId);
    assertError(await bob.act("kick", roomId, ivy.userId), 403, "M_FORBIDDEN");
    assert.equal(await alice.membershipIn(roomId, ivy.userId), "knock");
  });
});
