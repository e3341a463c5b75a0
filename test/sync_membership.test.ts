/**
 * `/sync` and membership: invites (rooms.invite), leaves, kicks, bans and
 * rejected invites (rooms.leave), and history visibility in timelines.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { registerUser, request, startServer, type TestServer } from "./helpers/server.js";
import { bodies, createRoom, invite, joinRoom, sendMessage, setState, stateAfter, sync, type Ev, type Login } from "./helpers/sync.js";

const C = "/_matrix/client/v3";
const enc = encodeURIComponent;
const limitFilter = (limit: number) => JSON.stringify({ room: { timeline: { limit } } });
const types = (events: Ev[] | undefined) => (events ?? []).map((e) => `${e.type}|${e.state_key ?? ""}`);

describe("/sync and membership", () => {
  let server: TestServer;
  let base: string;
  let n = 0;
  const user = async (): Promise<Login> => registerUser(base, `member${++n}`);

  before(async () => {
    server = await startServer();
    base = server.baseUrl;
  });
  after(async () => server?.stop());

  test("invites: rooms.invite with stripped invite_state, reported once", async () => {
    const alice = await user();
    const bob = await user();
    const roomId = await createRoom(base, alice, { name: "Invite me" });
    const before = await sync(base, bob);
    await invite(base, alice, roomId, bob.user_id);
    const res = await sync(base, bob, { since: before.next_batch });
    const inv = res.rooms.invite[roomId]!;
    assert.ok(inv);
    const t = types(inv.invite_state.events);
    for (const want of ["m.room.create|", "m.room.join_rules|", "m.room.name|", `m.room.member|${bob.user_id}`]) {
      assert.ok(t.includes(want), `invite_state has ${want}`);
    }
    const own = inv.invite_state.events.find((e) => e.state_key === bob.user_id)!;
    assert.equal(own.content.membership, "invite");
    assert.equal(own.sender, alice.user_id);
    const name = inv.invite_state.events.find((e) => e.type === "m.room.name")!;
    assert.deepEqual(Object.keys(name).sort(), ["content", "sender", "state_key", "type"]);

    const again = await sync(base, bob, { since: res.next_batch });
    assert.deepEqual(again.rooms.invite, {});
    const initial = await sync(base, bob);
    assert.ok(initial.rooms.invite[roomId], "an initial sync lists pending invites");

    // Joining moves the room to rooms.join with full state.
    await joinRoom(base, bob, roomId);
    const joined = await sync(base, bob, { since: res.next_batch });
    assert.deepEqual(joined.rooms.invite, {});
    assert.ok(types(joined.rooms.join[roomId]!.state!.events).includes("m.room.create|") ||
      types(joined.rooms.join[roomId]!.timeline.events).includes("m.room.create|"));
  });

  test("leaves: rooms.leave holds the leave event in range, and with include_leave otherwise", async () => {
    const alice = await user();
    const bob = await user();
    const roomId = await createRoom(base, alice, { preset: "public_chat" });
    await joinRoom(base, bob, roomId);
    const joined = await sync(base, bob);
    await sendMessage(base, alice, roomId, "before the leave");
    const leave = await request(base, "POST", `${C}/rooms/${enc(roomId)}/leave`, { token: bob.access_token, body: {} });
    assert.equal(leave.status, 200);
    await sendMessage(base, alice, roomId, "after the leave");

    const res = await sync(base, bob, { since: joined.next_batch });
    assert.equal(res.rooms.join[roomId], undefined);
    const left = res.rooms.leave[roomId]!;
    assert.deepEqual(bodies(left.timeline.events), ["before the leave"]);
    const last = left.timeline.events.at(-1)!;
    assert.equal(last.state_key, bob.user_id);
    assert.equal(last.content.membership, "leave");

    assert.deepEqual((await sync(base, bob)).rooms.leave, {}, "initial sync without include_leave");
    const withLeave = await sync(base, bob, { filter: JSON.stringify({ room: { include_leave: true } }) });
    assert.ok(withLeave.rooms.leave[roomId]);
    assert.ok(!bodies(withLeave.rooms.leave[roomId]!.timeline.events).includes("after the leave"));

    // A kick and a ban land in rooms.leave too.
    await joinRoom(base, bob, roomId);
    const rejoined = await sync(base, bob);
    const ban = await request(base, "POST", `${C}/rooms/${enc(roomId)}/ban`, { token: alice.access_token, body: { user_id: bob.user_id } });
    assert.equal(ban.status, 200);
    const banned = await sync(base, bob, { since: rejoined.next_batch, "org.matrix.msc4222.use_state_after": true });
    const bannedRoom = banned.rooms.leave[roomId]!;
    assert.equal(bannedRoom.timeline.events.at(-1)!.content.membership, "ban");
    assert.ok(stateAfter(bannedRoom)!.some((e) => e.state_key === bob.user_id && e.content.membership === "ban"));
  });

  test("a rejected invite shows in rooms.leave with only the rejection", async () => {
    const alice = await user();
    const bob = await user();
    const roomId = await createRoom(base, alice, { name: "Not for Bob" });
    await sendMessage(base, alice, roomId, "private talk");
    await invite(base, alice, roomId, bob.user_id);
    const invited = await sync(base, bob, { "org.matrix.msc4222.use_state_after": true });
    assert.ok(invited.rooms.invite[roomId]);
    const reject = await request(base, "POST", `${C}/rooms/${enc(roomId)}/leave`, { token: bob.access_token, body: {} });
    assert.equal(reject.status, 200);
    const res = await sync(base, bob, { since: invited.next_batch, "org.matrix.msc4222.use_state_after": true });
    const left = res.rooms.leave[roomId]!;
    assert.deepEqual(types(left.timeline.events), [`m.room.member|${bob.user_id}`]);
    assert.deepEqual(types(stateAfter(left)), [`m.room.member|${bob.user_id}`]);
    assert.equal(stateAfter(left)![0]!.content.membership, "leave");
    assert.deepEqual(res.rooms.invite, {});
  });

  test("history visibility: a later joiner does not see history under `joined`", async () => {
    const alice = await user();
    const bob = await user();
    const roomId = await createRoom(base, alice, { preset: "public_chat" });
    await setState(base, alice, roomId, "m.room.history_visibility", "", { history_visibility: "joined" });
    await sendMessage(base, alice, roomId, "secret");
    await joinRoom(base, bob, roomId);
    await sendMessage(base, alice, roomId, "visible");
    const res = await sync(base, bob, { filter: limitFilter(50) });
    assert.deepEqual(bodies(res.rooms.join[roomId]!.timeline.events), ["visible"]);
  });
});
