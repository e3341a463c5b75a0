/**
 * Simplified sliding sync (MSC4186) over raw HTTP: lists, room fields, connection positions
 * and every error a client can hit.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { removeTestData } from "./helpers/database.js";
import { assertError, enc, ok, User, type Ev } from "./helpers/rooms.js";
import { request, startServer, type Reply, type TestServer } from "./helpers/server.js";

const PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
const DAY = 24 * 3600_000;

/** The server's clock runs `offset` ms ahead of the real one, so a test can let days pass at once. */
let offset = 0;
const clock = { now: () => Date.now() + offset };
let server: TestServer;
let n = 0;

before(async () => {
  server = await startServer({}, { clock });
});
after(async () => server?.stop());

const user = () => User.register(server.baseUrl, `ss${++n}`);

interface RoomResult {
  initial?: boolean;
  name?: string;
  avatar?: string;
  heroes?: { user_id: string; displayname?: string }[];
  joined_count?: number;
  invited_count?: number;
  required_state?: Ev[];
  timeline?: Ev[];
  limited?: boolean;
  prev_batch?: string;
  num_live?: number;
  bump_stamp?: number;
  invite_state?: { type: string; state_key?: string; content: Record<string, unknown> }[];
  is_dm?: boolean;
  unstable_expanded_timeline?: boolean;
  notification_count?: number;
}

interface Body {
  pos: string;
  lists: Record<string, { count: number; ops: { room_ids: string[] }[] }>;
  rooms: Record<string, RoomResult>;
  extensions: Record<string, Record<string, unknown>>;
}

function raw(u: User, body: unknown, query: { pos?: string; timeout?: number } = {}): Promise<Reply> {
  const qs = new URLSearchParams();
  if (query.pos !== undefined) qs.set("pos", query.pos);
  if (query.timeout !== undefined) qs.set("timeout", String(query.timeout));
  return request(u.baseUrl, "POST", `${PATH}?${qs}`, { token: u.token, body });
}

const ss = async (u: User, body: unknown, query: { pos?: string; timeout?: number } = {}) => ok(await raw(u, body, query)) as unknown as Body;

const list = (extra: Record<string, unknown> = {}) => ({
  lists: { all: { ranges: [[0, 19]], timeline_limit: 1, required_state: [["m.room.name", ""], ["m.room.member", "$ME"]], ...extra } },
});

const roomIdsOf = (b: Body, name = "all") => b.lists[name]!.ops.flatMap((o) => o.room_ids);

describe("sliding sync: lists and room results", () => {
  test("/versions advertises org.matrix.simplified_msc3575", async () => {
    const res = ok(await request(server.baseUrl, "GET", "/_matrix/client/versions"));
    assert.equal((res.unstable_features as Record<string, boolean>)["org.matrix.simplified_msc3575"], true);
  });

  test("a list counts every room exactly, orders by latest activity and takes its ranges", async () => {
    const alice = await user();
    const rooms: string[] = [];
    for (let i = 0; i < 5; i++) rooms.push(await alice.createRoom({ name: `R${i}` }));
    await alice.send(rooms[1]!, "bump");
    const b = await ss(alice, { lists: { a: { ranges: [[0, 1], [3, 10]], timeline_limit: 0, required_state: [] } } });
    assert.equal(b.lists.a!.count, 5);
    assert.deepEqual(b.lists.a!.ops[0]!.room_ids, [rooms[1], rooms[4]]);
    assert.deepEqual(b.lists.a!.ops[1]!.room_ids, [rooms[2], rooms[0]]);
    assert.equal(Object.keys(b.rooms).length, 4, "only rooms in a range are sent");
    assert.ok(b.rooms[rooms[1]!]!.bump_stamp! > b.rooms[rooms[4]!]!.bump_stamp!);
    const countOnly = await ss(alice, { lists: { a: { timeline_limit: 1, required_state: [] } } });
    assert.equal(countOnly.lists.a!.count, 5);
    assert.deepEqual(countOnly.rooms, {}, "a list without ranges only counts");
  });

  test("a room result: timeline, limited, prev_batch for /messages, name, avatar, counts, required_state", async () => {
    const [alice, bob] = [await user(), await user()];
    const roomId = await alice.createRoom({ name: "Garden", preset: "public_chat" });
    await alice.putState(roomId, "m.room.avatar", "", { url: "mxc://localhost/avatar" });
    await bob.join(roomId);
    const first = await alice.send(roomId, "one");
    const second = await alice.send(roomId, "two");
    const b = await ss(alice, list({ timeline_limit: 1, required_state: [["m.room.name", ""], ["m.room.member", "$ME"], ["m.room.topic", "*"]] }));
    const r = b.rooms[roomId]!;
    assert.equal(r.initial, true);
    assert.equal(r.name, "Garden");
    assert.equal(r.avatar, "mxc://localhost/avatar");
    assert.equal(r.joined_count, 2);
    assert.equal(r.invited_count, 0);
    assert.equal(r.heroes, undefined, "a named room has no heroes");
    assert.deepEqual(r.timeline!.map((e) => e.event_id), [second]);
    assert.equal(r.limited, true);
    assert.equal(r.num_live, 0);
    assert.equal(r.notification_count, 0);
    assert.deepEqual(r.required_state!.map((e) => `${e.type}|${e.state_key}`).sort(), ["m.room.member|" + alice.userId, "m.room.name|"]);
    const older = ok(await alice.messages(roomId, { dir: "b", from: r.prev_batch!, limit: 1 })) as { chunk: Ev[] };
    assert.deepEqual(older.chunk.map((e) => e.event_id), [first], "prev_batch continues where the timeline starts");
  });

  test("`*` and `$LAZY` in required_state; heroes of an unnamed room", async () => {
    const [alice, bob, carol] = [await user(), await user(), await user()];
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    await carol.join(roomId);
    await bob.send(roomId, "from bob");
    const all = await ss(alice, list({ required_state: [["*", "*"]] }));
    const types = new Set(all.rooms[roomId]!.required_state!.map((e) => e.type));
    for (const t of ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.member"]) assert.ok(types.has(t), t);
    assert.deepEqual(all.rooms[roomId]!.heroes!.map((h) => h.user_id), [bob.userId, carol.userId]);

    const lazy = await ss(alice, { ...list({ required_state: [["m.room.member", "$LAZY"]] }), conn_id: "lazy" });
    const members = lazy.rooms[roomId]!.required_state!.filter((e) => e.type === "m.room.member").map((e) => e.state_key);
    assert.deepEqual(members, [bob.userId], "only the timeline's sender");
    await bob.send(roomId, "again");
    const next = await ss(alice, { ...list({ required_state: [["m.room.member", "$LAZY"]] }), conn_id: "lazy" }, { pos: lazy.pos });
    assert.deepEqual(next.rooms[roomId]!.required_state, [], "a member already sent on the connection is not sent again");
    await carol.send(roomId, "carol speaks");
    const third = await ss(alice, { ...list({ required_state: [["m.room.member", "$LAZY"]] }), conn_id: "lazy" }, { pos: next.pos });
    assert.deepEqual(third.rooms[roomId]!.required_state!.map((e) => e.state_key), [carol.userId]);
  });

  test("invites carry invite_state; is_invite and is_dm filters; is_dm on the room", async () => {
    const [alice, bob] = [await user(), await user()];
    const roomId = await alice.createRoom({ name: "Invite me" });
    ok(await alice.act("invite", roomId, bob.userId));
    const other = await bob.createRoom({ name: "Mine" });
    ok(await bob.req("PUT", `/user/${enc(bob.userId)}/account_data/m.direct`, { [alice.userId]: [other] }));
    const b = await ss(bob, {
      lists: {
        invites: { ranges: [[0, 9]], timeline_limit: 1, required_state: [], filters: { is_invite: true } },
        dms: { ranges: [[0, 9]], timeline_limit: 1, required_state: [], filters: { is_dm: true } },
        rest: { ranges: [[0, 9]], timeline_limit: 1, required_state: [], filters: { is_dm: false, is_invited: false } },
      },
    });
    assert.deepEqual(roomIdsOf(b, "invites"), [roomId]);
    assert.deepEqual(roomIdsOf(b, "dms"), [other]);
    assert.deepEqual(roomIdsOf(b, "rest"), []);
    const invite = b.rooms[roomId]!;
    assert.equal(invite.timeline, undefined);
    const own = invite.invite_state!.find((e) => e.type === "m.room.member" && e.state_key === bob.userId);
    assert.equal(own?.content.membership, "invite");
    assert.ok(invite.invite_state!.some((e) => e.type === "m.room.name" && e.content.name === "Invite me"));
    assert.equal(b.rooms[other]!.is_dm, true);
  });

  test("filters: is_encrypted, room_types, not_room_types, tags, not_tags", async () => {
    const alice = await user();
    const plain = await alice.createRoom({});
    const encrypted = await alice.createRoom({ initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }] });
    const space = await alice.createRoom({ creation_content: { type: "m.space" } });
    ok(await alice.req("PUT", `/user/${enc(alice.userId)}/rooms/${enc(plain)}/account_data/m.tag`, { tags: { "u.work": { order: 0.5 } } }));
    const f = (filters: Record<string, unknown>) => ({ ranges: [[0, 9]], timeline_limit: 0, required_state: [], filters });
    const b = await ss(alice, {
      lists: {
        enc: f({ is_encrypted: true }),
        spaces: f({ room_types: ["m.space"] }),
        untyped: f({ room_types: [null] }),
        notSpaces: f({ not_room_types: ["m.space"] }),
        work: f({ tags: ["u.work"] }),
        notWork: f({ not_tags: ["u.work"] }),
      },
    });
    assert.deepEqual(roomIdsOf(b, "enc"), [encrypted]);
    assert.deepEqual(roomIdsOf(b, "spaces"), [space]);
    assert.deepEqual(roomIdsOf(b, "untyped").sort(), [plain, encrypted].sort());
    assert.deepEqual(roomIdsOf(b, "notSpaces").sort(), [plain, encrypted].sort());
    assert.deepEqual(roomIdsOf(b, "work"), [plain]);
    assert.deepEqual(roomIdsOf(b, "notWork").sort(), [encrypted, space].sort());
  });

  test("tags and not_tags see a tag written while the account-data stream is ahead of the events stream", async () => {
    const alice = await user();
    const tagged = await alice.createRoom({});
    const other = await alice.createRoom({});
    const eventId = await alice.send(tagged, "read me");
    // The two streams' positions, from the sync token in a pos: `<position>/s<events>_<account data>_…`.
    const positions = async () => {
      const [events, accountData] = (await ss(alice, {})).pos.split("/")[1]!.slice(1).split("_").map(Number);
      return { events: events!, accountData: accountData! };
    };
    // Account data and read markers move the account-data stream only: take it past the events stream.
    const before = await positions();
    for (let i = 0; i <= before.events - before.accountData; i++) {
      if (i % 2 === 0) ok(await alice.req("PUT", `/user/${enc(alice.userId)}/account_data/org.example.n${i}`, { i }));
      else ok(await alice.req("POST", `/rooms/${enc(tagged)}/read_markers`, { "m.fully_read": eventId }));
    }
    const ahead = await positions();
    assert.ok(ahead.accountData > ahead.events, `account data at ${ahead.accountData}, events at ${ahead.events}`);
    ok(await alice.req("PUT", `/user/${enc(alice.userId)}/rooms/${enc(tagged)}/account_data/m.tag`, { tags: { "u.work": {} } }));
    const f = (filters: Record<string, unknown>) => ({ ranges: [[0, 9]], timeline_limit: 0, required_state: [], filters });
    const b = await ss(alice, { lists: { work: f({ tags: ["u.work"] }), notWork: f({ not_tags: ["u.work"] }) } });
    assert.deepEqual(roomIdsOf(b, "work"), [tagged]);
    assert.deepEqual(roomIdsOf(b, "notWork"), [other]);
  });

  test("`range` (the merged MSC's name) is accepted for a single range", async () => {
    const alice = await user();
    const rooms = [await alice.createRoom({}), await alice.createRoom({}), await alice.createRoom({})];
    const b = await ss(alice, { lists: { all: { range: [0, 1], timeline_limit: 0, required_state: [] } } });
    assert.equal(b.lists.all!.count, 3);
    assert.deepEqual(roomIdsOf(b), [rooms[2], rooms[1]], "latest activity first");
  });

  test("room_subscriptions send a room outside every list; unknown rooms are skipped", async () => {
    const alice = await user();
    const roomId = await alice.createRoom({ name: "Subscribed" });
    await alice.send(roomId, "hello");
    const b = await ss(alice, {
      room_subscriptions: { [roomId]: { timeline_limit: 5, required_state: [["m.room.name", ""]] }, "!nope:localhost": { timeline_limit: 1, required_state: [] } },
    });
    assert.deepEqual(Object.keys(b.rooms), [roomId]);
    assert.equal(b.rooms[roomId]!.name, "Subscribed");
    assert.ok(b.rooms[roomId]!.timeline!.length > 1);
  });
});

describe("sliding sync: positions and incremental updates", () => {
  test("a new message arrives as an incremental update, waking a long-poll; a retried pos answers the same", async () => {
    const alice = await user();
    const roomId = await alice.createRoom({ name: "Live" });
    const first = await ss(alice, list());
    const waiting = ss(alice, list(), { pos: first.pos, timeout: 30_000 });
    const eventId = await alice.send(roomId, "new");
    const next = await waiting;
    const r = next.rooms[roomId]!;
    assert.equal(r.initial, undefined);
    assert.deepEqual(r.timeline!.map((e) => e.event_id), [eventId]);
    assert.equal(r.num_live, 1);
    assert.equal(r.limited, false);
    assert.equal(r.name, undefined, "the name did not change");
    const retried = await ss(alice, list(), { pos: first.pos });
    assert.deepEqual(retried.rooms[roomId]!.timeline!.map((e) => e.event_id), [eventId]);
    const quiet = await ss(alice, list(), { pos: next.pos, timeout: 0 });
    assert.deepEqual(quiet.rooms, {});
  });

  test("notification counts follow the push rules and the user's read receipt", async () => {
    const [alice, bob] = [await user(), await user()];
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    const first = await ss(alice, list());
    const waiting = ss(alice, list(), { pos: first.pos, timeout: 30_000 });
    const eventId = await bob.send(roomId, "a message in a one-to-one room notifies");
    const next = await waiting;
    assert.equal(next.rooms[roomId]!.notification_count, 1);
    ok(await alice.req("POST", `/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, {}));
    const reread = await ss(alice, list());
    assert.equal(reread.rooms[roomId]!.notification_count, 0);
  });

  test("a request without pos never waits", async () => {
    const alice = await user();
    await alice.createRoom({});
    const b = await ss(alice, list(), { timeout: 600_000 });
    assert.equal(b.lists.all!.count, 1);
  });

  test("a room out of range that missed updates comes back with them; a longer timeline is sent expanded; new state is sent", async () => {
    const alice = await user();
    const a = await alice.createRoom({ name: "A" });
    const b = await alice.createRoom({ name: "B" });
    const one = (range: [number, number], extra: Record<string, unknown> = {}) => ({
      lists: { all: { ranges: [range], timeline_limit: 1, required_state: [["m.room.name", ""]], ...extra } },
    });
    const first = await ss(alice, one([0, 0]));
    assert.deepEqual(Object.keys(first.rooms), [b]);
    const missed = await alice.send(b, "while away");
    await alice.send(a, "a moves up");
    const second = await ss(alice, one([0, 0]), { pos: first.pos });
    assert.deepEqual(Object.keys(second.rooms), [a]);
    await alice.send(b, "b again");
    const third = await ss(alice, one([0, 1], { timeline_limit: 3 }), { pos: second.pos });
    assert.equal(third.rooms[a]!.unstable_expanded_timeline, true);
    assert.ok(third.rooms[b]!.timeline!.some((e) => e.event_id === missed), "the missed message comes with the room");
    await alice.putState(a, "m.room.topic", "", { topic: "T" });
    const fourth = await ss(alice, one([0, 1], { timeline_limit: 3, required_state: [["m.room.name", ""], ["m.room.topic", ""]] }), { pos: third.pos });
    assert.ok(fourth.rooms[a]!.required_state!.some((e) => e.type === "m.room.topic"));
  });

  test("a join, an invite and a leave each reach the user as an update", async () => {
    const [alice, bob] = [await user(), await user()];
    await bob.createRoom({});
    const roomId = await alice.createRoom({ name: "Door", preset: "public_chat" });
    const first = await ss(bob, list());
    ok(await alice.act("invite", roomId, bob.userId));
    const invited = await ss(bob, list(), { pos: first.pos, timeout: 30_000 });
    assert.ok(invited.rooms[roomId]!.invite_state);
    await bob.join(roomId);
    const joined = await ss(bob, list(), { pos: invited.pos, timeout: 30_000 });
    assert.equal(joined.rooms[roomId]!.initial, true);
    assert.equal(joined.rooms[roomId]!.name, "Door");
    ok(await alice.act("kick", roomId, bob.userId));
    const kicked = await ss(bob, list(), { pos: joined.pos, timeout: 30_000 });
    const me = kicked.rooms[roomId]!.required_state!.find((e) => e.type === "m.room.member");
    assert.equal(me?.content.membership, "leave");
    assert.equal(kicked.lists.all!.count, 2, "a kick keeps the room in the list");
  });

  test("a room the user leaves is sent once with the leave, then drops out of the list", async () => {
    const alice = await user();
    await alice.createRoom({});
    const roomId = await alice.createRoom({ name: "Leaving" });
    const first = await ss(alice, list());
    ok(await alice.leave(roomId));
    const left = await ss(alice, list(), { pos: first.pos, timeout: 30_000 });
    const me = left.rooms[roomId]!.required_state!.find((e) => e.type === "m.room.member");
    assert.equal(me?.content.membership, "leave");
    assert.equal(left.lists.all!.count, 2);
    const after = await ss(alice, list(), { pos: left.pos });
    assert.equal(after.lists.all!.count, 1);
    assert.deepEqual(after.rooms, {});
  });

  test("connection state survives a restart", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "switchboard-ss-"));
    let own = await startServer({}, { dir });
    try {
      const alice = await User.register(own.baseUrl, "restarter");
      const roomId = await alice.createRoom({});
      const first = await ss(alice, list());
      await own.stop();
      own = await startServer({}, { dir });
      const again = new User(own.baseUrl, alice.userId, alice.token, alice.deviceId);
      const eventId = await again.send(roomId, "after the restart");
      const next = await ss(again, list(), { pos: first.pos });
      assert.deepEqual(next.rooms[roomId]!.timeline!.map((e) => e.event_id), [eventId]);
      assert.equal(next.rooms[roomId]!.initial, undefined);
    } finally {
      await own.stop();
      await removeTestData(dir);
    }
  });
});

describe("sliding sync: errors", () => {
  test("unknown, malformed and expired positions answer 400 M_UNKNOWN_POS", async () => {
    const alice = await user();
    await alice.createRoom({});
    assertError(await raw(alice, list(), { pos: "abc123/s1_1_1_1_1_1" }), 400, "M_UNKNOWN_POS");
    assertError(await raw(alice, list(), { pos: "garbage" }), 400, "M_UNKNOWN_POS");
    const first = await ss(alice, list());
    assertError(await raw(alice, { ...list(), conn_id: "other" }, { pos: first.pos }), 400, "M_UNKNOWN_POS");
    const bob = await user();
    assertError(await raw(bob, list(), { pos: first.pos }), 400, "M_UNKNOWN_POS");
    offset += 8 * DAY;
    try {
      assertError(await raw(alice, list(), { pos: first.pos }), 400, "M_UNKNOWN_POS");
    } finally {
      offset -= 8 * DAY;
    }
  });

  test("unsupported filters, bad shapes and bad JSON are refused with 400", async () => {
    const alice = await user();
    const withFilters = (filters: unknown) => ({ lists: { a: { ranges: [[0, 1]], timeline_limit: 1, required_state: [], filters } } });
    assertError(await raw(alice, withFilters({ spaces: ["!s:localhost"] })), 400, "M_INVALID_PARAM");
    assertError(await raw(alice, withFilters({ room_name_like: "x" })), 400, "M_INVALID_PARAM");
    ok(await raw(alice, withFilters({ spaces: [] })));
    assertError(await raw(alice, withFilters({ is_dm: "yes" })), 400, "M_BAD_JSON");
    assertError(await raw(alice, withFilters({ tags: [1] })), 400, "M_BAD_JSON");
    assertError(await raw(alice, { lists: { a: { ranges: [[5, 1]], timeline_limit: 1, required_state: [] } } }), 400, "M_BAD_JSON");
    assertError(await raw(alice, { lists: { a: { ranges: [[0, 1]], timeline_limit: -1, required_state: [] } } }), 400, "M_BAD_JSON");
    assertError(await raw(alice, { lists: { a: { ranges: [[0, 1]], timeline_limit: 1, required_state: [["only-type"]] } } }), 400, "M_BAD_JSON");
    assertError(await raw(alice, { lists: [] }), 400, "M_BAD_JSON");
    assertError(await raw(alice, { conn_id: 5 }), 400, "M_BAD_JSON");
    assertError(await raw(alice, { extensions: { to_device: { enabled: true, since: "nope" } } }), 400, "M_INVALID_PARAM");
    assertError(await raw(alice, "{not json"), 400, "M_NOT_JSON");
    assertError(await request(server.baseUrl, "POST", PATH, { body: {} }), 401, "M_MISSING_TOKEN");
    const unknownExtension = await ss(alice, { extensions: { "org.example.nope": { enabled: true } } });
    assert.deepEqual(unknownExtension.extensions, {}, "unknown extensions are ignored");
  });
});
