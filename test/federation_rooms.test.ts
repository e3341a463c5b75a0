/**
 * Rooms across two Switchboards (issue #15): joining a room resident on the other server by
 * room ID and by alias, messages and state both ways through transactions, a remote invite
 * accepted and one rejected, a leave, and what another server may read of a room. Two servers
 * with their own names over TLS with a test CA.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { signedRequest, signerOf, startTwoServers, TestFederation, type FederatedServer } from "./helpers/federation.js";
import { enc, ok, User } from "./helpers/rooms.js";
import { eventually, request } from "./helpers/server.js";
import { buildEvent, getRoomVersion } from "../src/events/index.js";

async function timelineBodies(user: User, roomId: string): Promise<string[]> {
  const res = ok(await user.messages(roomId, { dir: "b", limit: 50 }));
  return (res.chunk as { type: string; content: { body?: string } }[])
    .filter((e) => e.type === "m.room.message")
    .map((e) => e.content.body ?? "")
    .reverse();
}

describe("federated rooms between two Switchboards", () => {
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
    roomId = await alice.createRoom({ preset: "public_chat", name: "Across", room_alias_name: "across" });
    await alice.send(roomId, "before bob");
  });
  after(() => fed.close());

  test("a user joins a room on another server by room ID, and sees its state and history", async () => {
    const res = await request(b.server.baseUrl, "POST", `/_matrix/client/v3/join/${enc(roomId)}?via=a.test`, { token: bob.token, body: {} });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.room_id, roomId);
    assert.equal(await bob.membershipIn(roomId), "join");
    const name = await bob.getState(roomId, "m.room.name");
    assert.equal(name.name, "Across");
    // The resident server has bob's join too.
    assert.equal(await eventually(async () => ((await alice.membershipIn(roomId, bob.userId)) === "join" ? "join" : undefined)), "join");
  });

  test("messages go both ways", async () => {
    await alice.send(roomId, "hello bob");
    assert.ok(await eventually(async () => ((await timelineBodies(bob, roomId)).includes("hello bob") ? true : undefined)));
    await bob.send(roomId, "hello alice");
    assert.ok(await eventually(async () => ((await timelineBodies(alice, roomId)).includes("hello alice") ? true : undefined)));
  });

  test("state set on one server is current state on the other", async () => {
    await bob.putState(roomId, "m.room.topic", "", { topic: "set by nobody" }).catch(() => undefined);
    await alice.putState(roomId, "m.room.topic", "", { topic: "calls" });
    assert.equal(await eventually(async () => {
      const topic = await bob.getState(roomId, "m.room.topic").catch(() => undefined);
      return topic?.topic === "calls" ? "calls" : undefined;
    }), "calls");
  });

  test("joining by an alias of the other server", async () => {
    const joined = await dave.join("#across:a.test");
    assert.equal(joined, roomId);
    assert.equal(await dave.membershipIn(roomId), "join");
  });

  test("an invite to another server's user reaches them, and they join through it", async () => {
    const res = await alice.act("invite", roomId, carol.userId);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const sync = await eventually(async () => {
      const s = await request(b.server.baseUrl, "GET", "/_matrix/client/v3/sync", { token: carol.token });
      const invites = (s.body.rooms as { invite?: Record<string, unknown> } | undefined)?.invite ?? {};
      return roomId in invites ? invites : undefined;
    });
    // The invitee's server shows the stripped state the inviting server sent with it.
    const preview = (sync[roomId] as { invite_state: { events: { type: string; content: Record<string, unknown> }[] } }).invite_state.events;
    assert.equal(preview.find((e) => e.type === "m.room.name")?.content.name, "Across");
    assert.ok(preview.some((e) => e.type === "m.room.member" && e.content.membership === "invite"));
    assert.equal(await carol.join(roomId), roomId);
    assert.equal(await eventually(async () => ((await alice.membershipIn(roomId, carol.userId)) === "join" ? "join" : undefined)), "join");
  });

  test("a direct chat created with another server's user invites them over federation, marked direct", async () => {
    const dm = await alice.createRoom({ preset: "trusted_private_chat", is_direct: true, invite: [dave.userId] });
    const invite = await eventually(async () => {
      const s = await request(b.server.baseUrl, "GET", "/_matrix/client/v3/sync", { token: dave.token });
      const invites = (s.body.rooms as { invite?: Record<string, { invite_state: { events: { type: string; state_key?: string; content: Record<string, unknown> }[] } }> } | undefined)?.invite ?? {};
      return invites[dm];
    });
    const own = invite.invite_state.events.find((e) => e.type === "m.room.member" && e.state_key === dave.userId);
    assert.equal(own?.content.membership, "invite");
    assert.equal(own?.content.is_direct, true);
    assert.equal(await dave.join(dm), dm);
    assert.equal(await eventually(async () => ((await alice.membershipIn(dm, dave.userId)) === "join" ? "join" : undefined)), "join");
    // trusted_private_chat: the invitee got the creator's power level.
    const levels = await alice.getState(dm, "m.room.power_levels");
    assert.equal((levels.users as Record<string, number>)[dave.userId], 100);
  });

  test("createRoom with an invite to a server that cannot be reached answers 502, naming no success", async () => {
    const res = await request(a.server.baseUrl, "POST", "/_matrix/client/v3/createRoom", {
      token: alice.token,
      body: { invite: ["@nobody:nowhere.test"] },
    });
    assert.equal(res.status, 502, JSON.stringify(res.body));
    assert.equal(res.body.errcode, "M_UNKNOWN");
  });

  test("an invite can be rejected from the other server", async () => {
    const other = await alice.createRoom({ preset: "private_chat" });
    const erin = await User.register(b.server.baseUrl, "erin");
    assert.equal((await alice.act("invite", other, erin.userId)).status, 200);
    assert.equal(await erin.membershipIn(other).catch(() => undefined) ?? "invite", "invite");
    const res = await erin.leave(other);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(await eventually(async () => ((await alice.membershipIn(other, erin.userId)) === "leave" ? "leave" : undefined)), "leave");
  });

  test("a leave reaches the resident server", async () => {
    assert.equal((await bob.leave(roomId)).status, 200);
    assert.equal(await eventually(async () => ((await alice.membershipIn(roomId, bob.userId)) === "leave" ? "leave" : undefined)), "leave");
  });

  test("another server reads state and events only while it has a member in the room", async () => {
    const event = await alice.send(roomId, "readable");
    const stateIds = await signedRequest(a, signerOf(b), "GET", `/_matrix/federation/v1/state_ids/${enc(roomId)}?event_id=${enc(event)}`);
    assert.equal(stateIds.status, 200, JSON.stringify(stateIds.body));
    assert.ok((stateIds.body.pdu_ids as string[]).length > 3);
    assert.ok((stateIds.body.auth_chain_ids as string[]).length > 0);
    const got = await signedRequest(a, signerOf(b), "GET", `/_matrix/federation/v1/event/${enc(event)}`);
    assert.equal(got.status, 200);
    assert.equal((got.body.pdus as { content: { body: string } }[])[0]!.content.body, "readable");
    const lonely = await alice.createRoom({});
    const refused = await signedRequest(a, signerOf(b), "GET", `/_matrix/federation/v1/state_ids/${enc(lonely)}?event_id=${enc(event)}`);
    assert.equal(refused.status, 403);
    assert.equal(refused.body.errcode, "M_FORBIDDEN");
    const unknown = await signedRequest(a, signerOf(b), "GET", `/_matrix/federation/v1/event/${enc("$nope")}`);
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.errcode, "M_NOT_FOUND");
  });

  test("make_join refuses a user of another server and an unsupported room version list", async () => {
    const wrongUser = await signedRequest(a, signerOf(b), "GET", `/_matrix/federation/v1/make_join/${enc(roomId)}/${enc(alice.userId)}?ver=11`);
    assert.equal(wrongUser.status, 403);
    assert.equal(wrongUser.body.errcode, "M_FORBIDDEN");
    const incompatible = await signedRequest(a, signerOf(b), "GET", `/_matrix/federation/v1/make_join/${enc(roomId)}/${enc("@zed:b.test")}?ver=1`);
    assert.equal(incompatible.status, 400);
    assert.equal(incompatible.body.errcode, "M_INCOMPATIBLE_ROOM_VERSION");
  });

  /** An invite event signed by b.test, as b.test's server would send it. */
  function inviteFromB(target: string, room = roomId) {
    return buildEvent(
      {
        version: getRoomVersion("11")!,
        roomId: room,
        sender: "@mallory:b.test",
        type: "m.room.member",
        stateKey: target,
        content: { membership: "invite" },
        prevEvents: [],
        authEvents: [],
        depth: 5,
        originServerTs: Date.now(),
      },
      signerOf(b),
    );
  }

  test("invite v2: an unknown user, an unsupported version, a mismatched ID and a forged sender are refused", async () => {
    const path = (id: string, room = "!elsewhere:b.test") => `/_matrix/federation/v2/invite/${enc(room)}/${enc(id)}`;
    const unknown = inviteFromB("@nobody:a.test", "!elsewhere:b.test");
    const noUser = await signedRequest(a, signerOf(b), "PUT", path(unknown.eventId), { body: { event: unknown.pdu, room_version: "11" } });
    assert.equal(noUser.status, 404);
    assert.equal(noUser.body.errcode, "M_NOT_FOUND");
    const forAlice = inviteFromB(alice.userId, "!elsewhere:b.test");
    const badVersion = await signedRequest(a, signerOf(b), "PUT", path(forAlice.eventId), { body: { event: forAlice.pdu, room_version: "1" } });
    assert.equal(badVersion.status, 400);
    assert.equal(badVersion.body.errcode, "M_INCOMPATIBLE_ROOM_VERSION");
    const mismatch = await signedRequest(a, signerOf(b), "PUT", path("$notthisone"), { body: { event: forAlice.pdu, room_version: "11" } });
    assert.equal(mismatch.status, 400);
    assert.equal(mismatch.body.errcode, "M_BAD_JSON");
    // b.test may not invite on behalf of a user of another server.
    const forged = buildEvent(
      { version: getRoomVersion("11")!, roomId: "!elsewhere:b.test", sender: "@x:c.test", type: "m.room.member", stateKey: alice.userId, content: { membership: "invite" }, prevEvents: [], authEvents: [], depth: 5, originServerTs: Date.now() },
      signerOf(b),
    );
    const wrongOrigin = await signedRequest(a, signerOf(b), "PUT", path(forged.eventId), { body: { event: forged.pdu, room_version: "11" } });
    // c.test never signed it: the signature check refuses it before any other.
    assert.equal(wrongOrigin.status, 400, JSON.stringify(wrongOrigin));
    assert.equal(wrongOrigin.body.errcode, "M_BAD_JSON");
  });

  test("send_join refuses an event that is not the one named, or not a join", async () => {
    const notJoin = inviteFromB("@zed:b.test");
    const wrongId = await signedRequest(a, signerOf(b), "PUT", `/_matrix/federation/v2/send_join/${enc(roomId)}/${enc("$other")}`, { body: notJoin.pdu as unknown as Record<string, unknown> });
    assert.equal(wrongId.status, 400);
    assert.equal(wrongId.body.errcode, "M_BAD_JSON");
    const notAJoin = await signedRequest(a, signerOf(b), "PUT", `/_matrix/federation/v2/send_join/${enc(roomId)}/${enc(notJoin.eventId)}`, { body: notJoin.pdu as unknown as Record<string, unknown> });
    assert.equal(notAJoin.status, 400);
    assert.equal(notAJoin.body.errcode, "M_BAD_JSON");
  });

  test("a PDU that fails the auth rules is answered with an error and never shown", async () => {
    // mallory@b.test was never in the room: a message from them fails the auth rules.
    const version = getRoomVersion("11")!;
    const tipRes = ok(await alice.messages(roomId, { dir: "b", limit: 1 }));
    const tip = (tipRes.chunk as { event_id: string }[])[0]!.event_id;
    const state = await alice.fullState(roomId);
    const authIds = state.filter((e) => ["m.room.create", "m.room.power_levels"].includes(e.type)).map((e) => e.event_id);
    const bad = buildEvent(
      { version, roomId, sender: "@mallory:b.test", type: "m.room.message", content: { msgtype: "m.text", body: "intruder" }, prevEvents: [tip], authEvents: authIds, depth: 1000, originServerTs: Date.now() },
      signerOf(b),
    );
    const res = await signedRequest(a, signerOf(b), "PUT", `/_matrix/federation/v1/send/${enc(`hostile-${Date.now()}`)}`, {
      body: { origin: "b.test", origin_server_ts: Date.now(), pdus: [bad.pdu], edus: [] },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const results = res.body.pdus as Record<string, { error?: string }>;
    assert.ok(results[bad.eventId]?.error, JSON.stringify(results));
    assert.ok(!(await timelineBodies(alice, roomId)).includes("intruder"));
  });

  test("make_leave, /state, /event_auth and send_join refuse what they must", async () => {
    const fedGet = (path: string) => signedRequest(a, signerOf(b), "GET", path);
    const wrongUser = await fedGet(`/_matrix/federation/v1/make_leave/${enc(roomId)}/${enc(alice.userId)}`);
    assert.equal(wrongUser.status, 403);
    assert.equal(wrongUser.body.errcode, "M_FORBIDDEN");
    const unknownRoom = await fedGet(`/_matrix/federation/v1/make_leave/${enc("!nowhere:a.test")}/${enc("@zed:b.test")}`);
    assert.equal(unknownRoom.status, 404);
    assert.equal(unknownRoom.body.errcode, "M_NOT_FOUND");
    const lonely = await alice.createRoom({});
    const lonelyEvent = await alice.send(lonely, "private");
    for (const path of [`/_matrix/federation/v1/state/${enc(lonely)}?event_id=${enc(lonelyEvent)}`, `/_matrix/federation/v1/event_auth/${enc(lonely)}/${enc(lonelyEvent)}`]) {
      const refused = await fedGet(path);
      assert.equal(refused.status, 403, path);
      assert.equal(refused.body.errcode, "M_FORBIDDEN");
    }
    const noEvent = await fedGet(`/_matrix/federation/v1/event_auth/${enc(roomId)}/${enc("$unknown")}`);
    assert.equal(noEvent.status, 404);
    assert.equal(noEvent.body.errcode, "M_NOT_FOUND");
    const join = inviteFromB("@zed:b.test", "!nowhere:a.test");
    const notHere = await signedRequest(a, signerOf(b), "PUT", `/_matrix/federation/v2/send_join/${enc("!nowhere:a.test")}/${enc(join.eventId)}`, {
      body: join.pdu as unknown as Record<string, unknown>,
    });
    assert.equal(notHere.status, 404);
    assert.equal(notHere.body.errcode, "M_NOT_FOUND");
  });

  test("joining a room whose servers cannot be reached is 404 M_NOT_FOUND, and joins nothing", async () => {
    const res = await request(b.server.baseUrl, "POST", `/_matrix/client/v3/join/${enc("!gone:nowhere.example")}?via=nowhere.example`, { token: bob.token, body: {} });
    assert.equal(res.status, 404, JSON.stringify(res.body));
    assert.equal(res.body.errcode, "M_NOT_FOUND");
    assert.equal(await bob.membershipIn("!gone:nowhere.example").catch(() => undefined), undefined);
  });
});
