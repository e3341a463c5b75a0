/**
 * MSC3757 owned state keys over real HTTP: MatrixRTC call memberships
 * (`org.matrix.msc3401.call.member`) in the `org.matrix.msc3757.*` room versions, and the
 * underscore-prefixed keys clients use in ordinary rooms (reference: matrixrtc.md §5).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { assertError, ok, startWithUsers, User } from "./helpers/rooms.js";
import type { TestServer } from "./helpers/server.js";

const CALL_MEMBER = "org.matrix.msc3401.call.member";

let server: TestServer;
let alice: User;
let bob: User;
let carol: User;

before(async () => {
  ({ server, users: [alice, bob, carol] } = await startWithUsers("alice", "bob", "carol"));
});
after(async () => server?.stop());

/** A call membership as Element Call sends it. */
function joinContent(deviceId: string, roomId: string): Record<string, unknown> {
  return {
    application: "m.call",
    call_id: "",
    scope: "m.room",
    device_id: deviceId,
    focus_active: { type: "livekit", focus_selection: "oldest_membership" },
    foci_preferred: [{ type: "livekit", livekit_service_url: "https://livekit.example", livekit_alias: roomId }],
    expires: 14_400_000,
  };
}

/** Alice's room (power level 100) with Bob and Carol joined at the default level 0. */
async function callRoom(roomVersion: string, body: Record<string, unknown> = {}): Promise<string> {
  const roomId = await alice.createRoom({ room_version: roomVersion, invite: [bob.userId, carol.userId], ...body });
  await bob.join(roomId);
  await carol.join(roomId);
  return roomId;
}

for (const version of ["org.matrix.msc3757.11", "org.matrix.msc3757.10"]) {
  describe(`room version ${version}`, () => {
    let roomId: string;
    before(async () => {
      roomId = await callRoom(version);
    });

    test("default power levels let every member send call memberships", async () => {
      const pl = await alice.getState(roomId, "m.room.power_levels");
      assert.equal((pl.events as Record<string, number>)[CALL_MEMBER], 0);
    });

    test("a member may write their own key, and leave with empty content", async () => {
      const key = `${bob.userId}_BOBDEVICE_m.call`;
      ok(await bob.putStateRaw(roomId, CALL_MEMBER, key, joinContent("BOBDEVICE", roomId)));
      assert.equal((await carol.getState(roomId, CALL_MEMBER, key)).device_id, "BOBDEVICE");
      ok(await bob.putStateRaw(roomId, CALL_MEMBER, key, {}));
      assert.deepEqual(await carol.getState(roomId, CALL_MEMBER, key), {});
      // A key that is exactly the user ID is theirs too.
      ok(await bob.putStateRaw(roomId, CALL_MEMBER, bob.userId, joinContent("BOBDEVICE", roomId)));
    });

    test("writing another user's key at the same power level is 403 M_FORBIDDEN, saying whose key it is", async () => {
      const carolsKey = `${carol.userId}_CAROLDEV_m.call`;
      ok(await carol.putStateRaw(roomId, CALL_MEMBER, carolsKey, joinContent("CAROLDEV", roomId)));
      const res = await bob.putStateRaw(roomId, CALL_MEMBER, carolsKey, {});
      const error = assertError(res, 403, "M_FORBIDDEN");
      assert.match(error, /belongs to @carol:localhost/);
      assertError(await bob.putStateRaw(roomId, CALL_MEMBER, carol.userId, {}), 403, "M_FORBIDDEN");
      // Carol's membership is untouched.
      assert.equal((await alice.getState(roomId, CALL_MEMBER, carolsKey)).device_id, "CAROLDEV");
    });

    test("a lower-powered member cannot write the admin's key", async () => {
      const res = await bob.putStateRaw(roomId, CALL_MEMBER, `${alice.userId}_ALICEDEV_m.call`, joinContent("X", roomId));
      assertError(res, 403, "M_FORBIDDEN");
    });

    test("a room admin, with a higher power level, may overwrite another member's key", async () => {
      const key = `${bob.userId}_STALE_m.call`;
      ok(await bob.putStateRaw(roomId, CALL_MEMBER, key, joinContent("STALE", roomId)));
      ok(await alice.putStateRaw(roomId, CALL_MEMBER, key, {}));
      const event = (await alice.fullState(roomId)).find((e) => e.type === CALL_MEMBER && e.state_key === key)!;
      assert.equal(event.sender, alice.userId);
      assert.deepEqual(event.content, {});
    });

    test("a key starting with @ that is not a user ID is 403 M_FORBIDDEN", async () => {
      const error = assertError(await bob.putStateRaw(roomId, CALL_MEMBER, "@notauser_DEV_m.call", {}), 403, "M_FORBIDDEN");
      assert.match(error, /user ID/);
    });

    test("owned keys may exceed 255 bytes, up to a 256-byte suffix after the user ID", async () => {
      const longest = `${bob.userId}_${"d".repeat(255)}`;
      ok(await bob.putStateRaw(roomId, CALL_MEMBER, longest, {}));
      const tooLong = `${bob.userId}_${"d".repeat(256)}`;
      assert.match(assertError(await bob.putStateRaw(roomId, CALL_MEMBER, tooLong, {}), 403, "M_FORBIDDEN"), /suffix/);
      // Keys no user owns keep the usual 255-byte limit.
      assertError(await bob.putStateRaw(roomId, CALL_MEMBER, "k".repeat(256), {}), 403, "M_FORBIDDEN");
    });
  });
}

describe("room version 11 (no MSC3757)", () => {
  let roomId: string;
  before(async () => {
    roomId = await callRoom("11");
  });

  test("a member may write the underscore-prefixed key of their own device", async () => {
    const key = `_${bob.userId}_BOBDEVICE_m.call`;
    ok(await bob.putStateRaw(roomId, CALL_MEMBER, key, joinContent("BOBDEVICE", roomId)));
    assert.equal((await carol.getState(roomId, CALL_MEMBER, key)).device_id, "BOBDEVICE");
    ok(await bob.putStateRaw(roomId, CALL_MEMBER, key, {}));
  });

  test("the @-prefixed MSC3757 form is rule 8's: only a key equal to the sender's ID is theirs", async () => {
    const error = assertError(
      await bob.putStateRaw(roomId, CALL_MEMBER, `${bob.userId}_BOBDEVICE_m.call`, joinContent("BOBDEVICE", roomId)),
      403,
      "M_FORBIDDEN",
    );
    assert.match(error, /belongs to another user/);
    ok(await bob.putStateRaw(roomId, CALL_MEMBER, bob.userId, {}));
    // Without MSC3757 not even the admin may write it.
    assertError(await alice.putStateRaw(roomId, CALL_MEMBER, bob.userId, {}), 403, "M_FORBIDDEN");
  });

  test("underscore-prefixed keys are owned by no one here, which is why MSC3757 exists", async () => {
    const key = `_${carol.userId}_CAROLDEV_m.call`;
    ok(await carol.putStateRaw(roomId, CALL_MEMBER, key, joinContent("CAROLDEV", roomId)));
    ok(await bob.putStateRaw(roomId, CALL_MEMBER, key, {}));
  });

  test("state keys over 255 bytes are refused with 400 M_BAD_JSON", async () => {
    assertError(await bob.putStateRaw(roomId, CALL_MEMBER, `_${bob.userId}_${"d".repeat(250)}`, {}), 400, "M_BAD_JSON");
  });

  test("where power levels do not allow call memberships, members get 403 M_FORBIDDEN", async () => {
    const locked = await callRoom("11", { power_level_content_override: { events: {} } });
    const error = assertError(await bob.putStateRaw(locked, CALL_MEMBER, `_${bob.userId}_D_m.call`, {}), 403, "M_FORBIDDEN");
    assert.match(error, /power level too low/);
  });
});
