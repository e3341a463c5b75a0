/**
 * Knocking across two Switchboards: a user of b.test knocks on a room resident on a.test
 * (`make_knock`/`send_knock`), sees it under `rooms.knock` with the stripped state a.test sent,
 * a.test's moderator sees the knock and invites, and the user joins; a knock withdrawn from the
 * other server (room versions 11 and 12), a knock where both servers are in the room, and the
 * resident server's refusals.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { signedRequest, signerOf, startTwoServers, TestFederation, type FederatedServer } from "./helpers/federation.js";
import { assertError, enc, ok, User, type Ev } from "./helpers/rooms.js";
import { buildEvent, getRoomVersion } from "../src/events/index.js";
import { eventually } from "./helpers/server.js";

interface SyncRooms {
  join: Record<string, unknown>;
  invite: Record<string, { invite_state: { events: Ev[] } }>;
  knock: Record<string, { knock_state: { events: Ev[] } }>;
}

async function syncRooms(user: User): Promise<SyncRooms> {
  return ok(await user.req("GET", "/sync")).rooms as SyncRooms;
}

/** Waits until `viewer` sees `userId`'s membership in `roomId` become `membership`. */
function membershipBecomes(viewer: User, roomId: string, userId: string, membership: string): Promise<string> {
  return eventually(async () => ((await viewer.membershipIn(roomId, userId)) === membership ? membership : undefined));
}

const knockState = (rule = "knock") => [{ type: "m.room.join_rules", state_key: "", content: { join_rule: rule } }];

describe("knocking across two Switchboards", () => {
  const fed = new TestFederation(["a.test", "b.test"]);
  let a: FederatedServer;
  let b: FederatedServer;
  let alice: User;
  let bob: User;
  let carol: User;
  let dave: User;
  let roomId: string;

  before(async () => {
    ({ a, b, users: { alice, bob, carol, dave } } = await startTwoServers(fed, { a: ["alice"], b: ["bob", "carol", "dave"] }));
    roomId = await alice.createRoom({ room_version: "11", name: "Knock across", room_alias_name: "knockacross", initial_state: knockState() });
  });
  after(() => fed.close());

  test("a user of another server knocks, and sees the room under rooms.knock", async () => {
    const res = await bob.req("POST", `/knock/${enc(roomId)}?via=a.test`, { reason: "may I?" });
    assert.deepEqual(ok(res), { room_id: roomId });
    const rooms = await syncRooms(bob);
    const events = rooms.knock[roomId]?.knock_state.events;
    assert.ok(events, JSON.stringify(rooms));
    assert.equal(events.find((e) => e.type === "m.room.name")?.content.name, "Knock across");
    assert.equal(events.find((e) => e.type === "m.room.join_rules")?.content.join_rule, "knock");
    assert.equal(events.find((e) => e.type === "m.room.create")?.sender, alice.userId);
    const own = events.find((e) => e.type === "m.room.member" && e.state_key === bob.userId);
    assert.equal(own?.content.membership, "knock");
    assert.equal(own?.content.reason, "may I?");
    assert.equal(rooms.join[roomId], undefined);
  });

  test("the resident server's moderator sees the knock, invites, and the knocker joins", async () => {
    assert.equal(await membershipBecomes(alice, roomId, bob.userId, "knock"), "knock");
    assert.equal((await alice.getState(roomId, "m.room.member", bob.userId)).reason, "may I?");
    ok(await alice.act("invite", roomId, bob.userId));
    const invite = await eventually(async () => (await syncRooms(bob)).invite[roomId]);
    assert.ok(invite.invite_state.events.some((e) => e.type === "m.room.member" && e.content.membership === "invite"));
    assert.equal((await syncRooms(bob)).knock[roomId], undefined);
    assert.equal(await bob.join(roomId), roomId);
    assert.equal(await membershipBecomes(alice, roomId, bob.userId, "join"), "join");
    assert.equal(await bob.membershipIn(roomId), "join");
  });

  test("with both servers in the room, a knock from either reaches the other", async () => {
    // b.test is in the room now (bob): dave's knock is a local event there, sent to a.test.
    assert.deepEqual(ok(await dave.req("POST", `/knock/${enc(roomId)}`, {})), { room_id: roomId });
    assert.equal(await membershipBecomes(alice, roomId, dave.userId, "knock"), "knock");
    const erin = await User.register(a.server.baseUrl, "erin");
    ok(await erin.req("POST", `/knock/${enc(roomId)}`, {}));
    assert.equal(await membershipBecomes(bob, roomId, erin.userId, "knock"), "knock");
  });

  for (const version of ["11", "12"]) {
    test(`a knock by alias is withdrawn from the other server (room version ${version})`, async () => {
      const other = await alice.createRoom({ room_version: version, room_alias_name: `withdraw${version}`, initial_state: knockState("knock_restricted") });
      assert.deepEqual(ok(await carol.req("POST", `/knock/${enc(`#withdraw${version}:a.test`)}`, {})), { room_id: other });
      assert.ok((await syncRooms(carol)).knock[other]);
      assert.equal(await membershipBecomes(alice, other, carol.userId, "knock"), "knock");
      // Leaving goes through the servers the knock's answer named (a version 12 room ID names none).
      ok(await carol.leave(other));
      assert.equal(await membershipBecomes(alice, other, carol.userId, "leave"), "leave");
      assert.equal((await syncRooms(carol)).knock[other], undefined);
    });
  }

  test("a knock on a room of the other server that does not take knocks is 403 M_FORBIDDEN", async () => {
    const closed = await alice.createRoom({ preset: "private_chat" });
    assert.match(assertError(await carol.req("POST", `/knock/${enc(closed)}?via=a.test`, {}), 403, "M_FORBIDDEN"), /join rule/);
    assert.equal((await syncRooms(carol)).knock[closed], undefined);
    assert.equal(await alice.membershipIn(closed, carol.userId), undefined);
  });

  test("make_knock refuses a user of another server, a room not taking knocks, an unknown room and unsupported versions", async () => {
    const path = (room: string, user: string, ver = "?ver=10&ver=11&ver=12") => `/_matrix/federation/v1/make_knock/${enc(room)}/${enc(user)}${ver}`;
    const wrongServer = await signedRequest(a, signerOf(b), "GET", path(roomId, "@zed:a.test"));
    assert.equal(wrongServer.status, 403, JSON.stringify(wrongServer.body));
    assert.equal(wrongServer.body.errcode, "M_FORBIDDEN");
    const closed = await alice.createRoom({ preset: "public_chat" });
    const notKnock = await signedRequest(a, signerOf(b), "GET", path(closed, "@zed:b.test"));
    assert.equal(notKnock.status, 403, JSON.stringify(notKnock.body));
    assert.equal(notKnock.body.errcode, "M_FORBIDDEN");
    const unknown = await signedRequest(a, signerOf(b), "GET", path("!nowhere:a.test", "@zed:b.test"));
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.errcode, "M_NOT_FOUND");
    const incompatible = await signedRequest(a, signerOf(b), "GET", path(roomId, "@zed:b.test", "?ver=9"));
    assert.equal(incompatible.status, 400);
    assert.equal(incompatible.body.errcode, "M_INCOMPATIBLE_ROOM_VERSION");
    const good = await signedRequest(a, signerOf(b), "GET", path(roomId, "@zed:b.test"));
    assert.equal(good.status, 200, JSON.stringify(good.body));
    assert.equal(good.body.room_version, "11");
    assert.equal((good.body.event as { content: { membership: string } }).content.membership, "knock");
  });

  test("send_knock refuses an event that is not the one named, not a knock, or from another server", async () => {
    const version = getRoomVersion("11")!;
    const event = (sender: string, membership: string, signer = b) =>
      buildEvent(
        { version, roomId, sender, type: "m.room.member", stateKey: sender, content: { membership }, prevEvents: [], authEvents: [], depth: 5, originServerTs: Date.now() },
        signerOf(signer),
      );
    const send = (id: string, pdu: unknown) =>
      signedRequest(a, signerOf(b), "PUT", `/_matrix/federation/v1/send_knock/${enc(roomId)}/${enc(id)}`, { body: pdu as Record<string, unknown> });
    const knock = event("@zed:b.test", "knock");
    const wrongId = await send("$other", knock.pdu);
    assert.equal(wrongId.status, 400);
    assert.equal(wrongId.body.errcode, "M_BAD_JSON");
    const join = event("@zed:b.test", "join");
    const notKnock = await send(join.eventId, join.pdu);
    assert.equal(notKnock.status, 400);
    assert.equal(notKnock.body.errcode, "M_BAD_JSON");
    // Signed by its sender's server (a.test), but b.test may not knock for a.test's users.
    const forged = event("@zed:a.test", "knock", a);
    const wrongOrigin = await send(forged.eventId, forged.pdu);
    assert.equal(wrongOrigin.status, 403);
    assert.equal(wrongOrigin.body.errcode, "M_FORBIDDEN");
    assert.equal(await alice.membershipIn(roomId, "@zed:b.test"), undefined);
    assert.equal(await alice.membershipIn(roomId, "@zed:a.test"), undefined);
  });
});
