/**
 * Restricted joins into a room resident here (issue #15; spec: `make_join`/`send_join` and
 * "Restricted rooms"): a user of another server who is in a room the join rules allow joins
 * through `make_join`/`send_join`; the event carries `join_authorised_via_users_server` naming a
 * user of the resident server, which signs it as well before storing it. A user who is in no
 * allowed room is refused at `make_join` with 403 M_FORBIDDEN, as Synapse refuses them, and
 * their server passes that on to the client.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { startTwoServers, TestFederation, type FederatedServer } from "./helpers/federation.js";
import { assertError, enc, ok, User } from "./helpers/rooms.js";
import { eventually } from "./helpers/server.js";
import { pduOf } from "../src/events/index.js";

for (const roomVersion of ["10", "12"]) {
  describe(`restricted joins into a room on another server, room version ${roomVersion}`, () => {
    const fed = new TestFederation(["a.test", "b.test"]);
    let a: FederatedServer;
    let b: FederatedServer;
    let alice: User;
    let bob: User;
    let carol: User;
    let allowedRoom: string;
    let restricted: string;

    const joinVia = (user: User, roomId: string) => user.req("POST", `/join/${enc(roomId)}?via=a.test`, {});

    before(async () => {
      ({ a, b, users: { alice, bob, carol } } = await startTwoServers(fed, { a: ["alice"], b: ["bob", "carol"] }));
      allowedRoom = await alice.createRoom({ preset: "public_chat", room_version: roomVersion, name: "Members" });
      restricted = await alice.createRoom({
        room_version: roomVersion,
        name: "Members only",
        initial_state: [
          { type: "m.room.join_rules", state_key: "", content: { join_rule: "restricted", allow: [{ type: "m.room_membership", room_id: allowedRoom }] } },
        ],
      });
      assert.equal(ok(await joinVia(bob, allowedRoom)).room_id, allowedRoom);
      await eventually(async () => ((await alice.membershipIn(allowedRoom, bob.userId)) === "join" ? true : undefined));
    });
    after(() => fed.close());

    test("a member of an allowed room joins; the join names the authorising user and carries both servers' signatures", async () => {
      const res = await joinVia(bob, restricted);
      assert.equal(ok(res).room_id, restricted);
      assert.equal(await bob.membershipIn(restricted), "join");
      assert.equal(await eventually(async () => ((await alice.membershipIn(restricted, bob.userId)) === "join" ? "join" : undefined)), "join");
      const member = await alice.getState(restricted, "m.room.member", bob.userId);
      assert.equal(member.join_authorised_via_users_server, alice.userId);
      const stored = (await a.server.homeserver.storage.rooms.currentStateEvent(restricted, "m.room.member", bob.userId))!;
      assert.deepEqual(Object.keys(pduOf(stored).signatures).sort(), ["a.test", "b.test"]);
      // b.test keeps the event as a.test countersigned it.
      const onB = (await b.server.homeserver.storage.rooms.currentStateEvent(restricted, "m.room.member", bob.userId))!;
      assert.equal(onB.eventId, stored.eventId);
      assert.deepEqual(Object.keys(pduOf(onB).signatures).sort(), ["a.test", "b.test"]);
      // Joined for real: messages flow both ways.
      const hello = await bob.send(restricted, "in through the allowed room");
      await eventually(async () => ((await a.server.homeserver.storage.rooms.getEvent(hello)) ? true : undefined));
    });

    test("a user in no allowed room is refused with 403 M_FORBIDDEN, and is not in the room on either server", async () => {
      const res = await joinVia(carol, restricted);
      assertError(res, 403, "M_FORBIDDEN");
      assert.equal(await alice.membershipIn(restricted, carol.userId), undefined);
      assert.equal((await b.server.homeserver.storage.rooms.membership(restricted, carol.userId))?.membership, undefined);
    });
  });
}
