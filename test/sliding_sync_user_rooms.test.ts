/**
 * Sliding sync keeps a user's memberships and rooms' latest activity from one request to the
 * next and moves them on by what happened since: the lists must read as if computed afresh,
 * whichever connection asks.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ok, User } from "./helpers/rooms.js";
import { request, startServer, type TestServer } from "./helpers/server.js";

const PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
let server: TestServer;
let n = 0;

before(async () => {
  server = await startServer({});
});
after(async () => server?.stop());

interface Body {
  pos: string;
  lists: Record<string, { count: number; ops: { room_ids: string[] }[] }>;
  rooms: Record<string, { bump_stamp?: number }>;
}

async function ss(u: User, connId: string, query: { pos?: string; timeout?: number } = {}): Promise<Body> {
  const qs = new URLSearchParams();
  if (query.pos !== undefined) qs.set("pos", query.pos);
  if (query.timeout !== undefined) qs.set("timeout", String(query.timeout));
  const body = { conn_id: connId, lists: { all: { ranges: [[0, 9]], timeline_limit: 1, required_state: [] } } };
  return ok(await request(u.baseUrl, "POST", `${PATH}?${qs}`, { token: u.token, body })) as unknown as Body;
}

const order = (b: Body) => b.lists.all!.ops.flatMap((o) => o.room_ids);

describe("sliding sync: a user's rooms kept between requests", () => {
  test("the order follows new messages, joins and leaves, for every connection", async () => {
    const [alice, bob] = [await User.register(server.baseUrl, `ur${++n}`), await User.register(server.baseUrl, `ur${++n}`)];
    const rooms: string[] = [];
    for (let i = 0; i < 4; i++) rooms.push(await alice.createRoom({ name: `R${i}` }));
    const first = await ss(alice, "a");
    assert.deepEqual(order(first), [...rooms].reverse());

    // A message in the oldest room moves it to the top, for a connection that waited and one that did not.
    const waiting = ss(alice, "a", { pos: first.pos, timeout: 30_000 });
    await alice.send(rooms[0]!, "up");
    const moved = await waiting;
    assert.deepEqual(order(moved), [rooms[0], rooms[3], rooms[2], rooms[1]]);
    assert.deepEqual(order(await ss(alice, "b")), order(moved));

    // A room joined and one left change the count and the order.
    const bobs = await bob.createRoom({ name: "Bob's", preset: "public_chat" });
    await alice.join(bobs);
    ok(await request(server.baseUrl, "POST", `/_matrix/client/v3/rooms/${encodeURIComponent(rooms[1]!)}/leave`, { token: alice.token, body: {} }));
    const changed = await ss(alice, "a", { pos: moved.pos, timeout: 0 });
    assert.equal(changed.lists.all!.count, 5, "a room left by the user is still told of once");
    assert.deepEqual(order(changed).slice(0, 3), [rooms[1], bobs, rooms[0]]);
    const after = await ss(alice, "a", { pos: changed.pos, timeout: 0 });
    assert.equal(after.lists.all!.count, 4, "then it drops out");
    assert.deepEqual(order(after), [bobs, rooms[0], rooms[3], rooms[2]]);

    // Bob's message bumps the room he shares with alice.
    await bob.send(bobs, "hello");
    assert.deepEqual(order(await ss(alice, "b")).slice(0, 2), [bobs, rooms[0]]);
    await alice.send(rooms[2]!, "again");
    assert.deepEqual(order(await ss(alice, "c")), [rooms[2], bobs, rooms[0], rooms[3]]);
  });
});
