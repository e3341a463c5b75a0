/** Reading rooms: state, members, single events, `/messages`, `/context` and history visibility, over real HTTP. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { assertError, enc, findState, ok, startWithUsers, User, type Ev } from "./helpers/rooms.js";
import type { TestServer } from "./helpers/server.js";

let server: TestServer;
let alice: User;
let bob: User;
let carol: User;
let dave: User;

before(async () => {
  ({ server, users: [alice, bob, carol, dave] } = await startWithUsers("alice", "bob", "carol", "dave"));
  ok(await alice.req("PUT", `/profile/${enc(alice.userId)}/displayname`, { displayname: "Alice A" }));
});
after(async () => server?.stop());

interface Page {
  chunk: Ev[];
  start: string;
  end?: string;
  state?: Ev[];
}

async function page(user: User, roomId: string, query: Record<string, string | number | undefined>): Promise<Page> {
  return ok(await user.messages(roomId, query)) as unknown as Page;
}

/** Pages through a whole room in one direction, `limit` at a time, until `end` is left out. */
async function paginateAll(user: User, roomId: string, dir: "b" | "f", limit: number, filter?: object): Promise<Ev[]> {
  const events: Ev[] = [];
  let from: string | undefined;
  for (let i = 0; i < 200; i++) {
    const p = await page(user, roomId, { dir, limit, from, filter: filter && JSON.stringify(filter) });
    assert.ok(p.chunk.length <= limit);
    // Without a filter, `end` is left out on the page that reaches the end, never one page later.
    if (filter === undefined) assert.ok(p.chunk.length > 0, `page ${i} (dir=${dir}, limit=${limit}) is empty`);
    events.push(...p.chunk);
    if (p.end === undefined) return events;
    from = p.end;
  }
  throw new Error("pagination did not finish");
}

const ids = (events: Ev[]) => events.map((e) => e.event_id);
const bodies = (events: Ev[]) => events.filter((e) => e.type === "m.room.message").map((e) => e.content.body);

describe("state and members", () => {
  let roomId: string;
  let beforeBob: string;
  before(async () => {
    roomId = await alice.createRoom({ preset: "public_chat", name: "Members", invite: [] });
    beforeBob = (await page(alice, roomId, { dir: "b", limit: 1 })).start;
    await bob.join(roomId);
    ok(await alice.act("invite", roomId, carol.userId));
    await dave.join(roomId);
    ok(await dave.leave(roomId));
  });

  test("GET /state is the current state, as client events", async () => {
    const state = await bob.fullState(roomId);
    assert.equal(findState(state, "m.room.name")!.content.name, "Members");
    assert.equal(findState(state, "m.room.create")!.sender, alice.userId);
    assert.equal(findState(state, "m.room.member", carol.userId)!.content.membership, "invite");
    for (const e of state) {
      assert.equal(e.room_id, roomId);
      assert.equal(typeof e.state_key, "string");
      assert.match(e.event_id, /^\$/);
      assert.equal(Object.hasOwn(e, "auth_events"), false, "no federation keys");
      assert.equal(Object.hasOwn(e, "signatures"), false, "no federation keys");
    }
    const keys = state.map((e) => `${e.type}|${e.state_key}`);
    assert.equal(new Set(keys).size, keys.length);
  });

  test("GET /members, filtered by membership and not_membership", async () => {
    const members = async (query = "") => {
      const chunk = ok(await bob.req("GET", `/rooms/${enc(roomId)}/members${query}`)).chunk as Ev[];
      for (const e of chunk) assert.equal(e.type, "m.room.member");
      return Object.fromEntries(chunk.map((e) => [e.state_key, e.content.membership]));
    };
    assert.deepEqual(await members(), {
      [alice.userId]: "join",
      [bob.userId]: "join",
      [carol.userId]: "invite",
      [dave.userId]: "leave",
    });
    assert.deepEqual(await members("?membership=join"), { [alice.userId]: "join", [bob.userId]: "join" });
    assert.deepEqual(await members("?membership=invite"), { [carol.userId]: "invite" });
    assert.deepEqual(await members("?not_membership=leave"), {
      [alice.userId]: "join",
      [bob.userId]: "join",
      [carol.userId]: "invite",
    });
    assert.deepEqual(await members("?membership=ban"), {});
    assertError(await bob.req("GET", `/rooms/${enc(roomId)}/members?membership=joined`), 400, "M_INVALID_PARAM");
  });

  test("GET /members?at= gives the members at that point", async () => {
    const chunk = ok(await bob.req("GET", `/rooms/${enc(roomId)}/members?at=${enc(beforeBob)}`)).chunk as Ev[];
    assert.deepEqual(
      chunk.map((e) => e.state_key),
      [alice.userId],
    );
  });

  test("GET /joined_members maps joined users to their profile", async () => {
    assert.deepEqual(ok(await bob.req("GET", `/rooms/${enc(roomId)}/joined_members`)), {
      joined: { [alice.userId]: { display_name: "Alice A" }, [bob.userId]: { display_name: "bob" } },
    });
  });

  test("a non-member gets 403 M_FORBIDDEN from /state, /members, /joined_members and /messages", async () => {
    const other = await alice.createRoom();
    for (const path of ["state", "members", "joined_members", "messages?dir=b"]) {
      assertError(await carol.req("GET", `/rooms/${enc(other)}/${path}`), 403, "M_FORBIDDEN");
    }
    // So does an invitee, for /joined_members and /messages of a shared-history room.
    assertError(await carol.req("GET", `/rooms/${enc(roomId)}/joined_members`), 403, "M_FORBIDDEN");
    assertError(await carol.req("GET", `/rooms/${enc("!unknown:localhost")}/state`), 403, "M_FORBIDDEN");
  });

  test("a user who left sees the state as it was when they left", async () => {
    const state = await dave.fullState(roomId);
    assert.equal(findState(state, "m.room.member", dave.userId)!.content.membership, "leave");
    await alice.putState(roomId, "m.room.topic", "", { topic: "after dave left" });
    assertError(await dave.getStateRaw(roomId, "m.room.topic"), 404, "M_NOT_FOUND");
    assert.equal((await bob.getState(roomId, "m.room.topic")).topic, "after dave left");
  });
});

describe("GET /event", () => {
  test("returns a visible event; 404 M_NOT_FOUND for unknown, wrong-room or invisible events", async () => {
    const roomId = await alice.createRoom({ invite: [bob.userId] });
    const other = await alice.createRoom();
    const message = await alice.send(roomId, "findable");
    const event = ok(await alice.event(roomId, message)) as unknown as Ev;
    assert.equal(event.event_id, message);
    assert.equal(event.room_id, roomId);
    assert.equal(event.content.body, "findable");
    assert.equal(typeof event.unsigned?.age, "number");
    assertError(await alice.event(roomId, "$doesnotexist"), 404, "M_NOT_FOUND");
    assertError(await alice.event(other, message), 404, "M_NOT_FOUND");
    assertError(await carol.event(roomId, message), 404, "M_NOT_FOUND");
  });
});

describe("GET /messages", () => {
  let roomId: string;
  let all: Ev[];
  before(async () => {
    roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    await carol.join(roomId);
    for (let i = 0; i < 24; i++) {
      const sender = [alice, bob, carol][i % 3]!;
      if (i % 5 === 4) await sender.send(roomId, { n: i }, "org.example.other");
      else await sender.send(roomId, `m${i}`);
    }
    all = (await page(alice, roomId, { dir: "f", limit: 1000 })).chunk;
  });

  test("dir=f with no from starts at the room's creation; dir=b with no from at its newest event", async () => {
    assert.equal(all[0]!.type, "m.room.create");
    const newest = await page(alice, roomId, { dir: "b", limit: 3 });
    assert.deepEqual(ids(newest.chunk), ids(all.slice(-3).reverse()));
    assert.equal(bodies(all).length, 20);
  });

  test("paginating backwards and forwards covers the whole history once, with no gaps", async () => {
    for (const limit of [1, 4, 7, 50]) {
      const back = await paginateAll(alice, roomId, "b", limit);
      assert.deepEqual(ids(back), ids(all).reverse(), `dir=b limit=${limit}`);
      const forward = await paginateAll(alice, roomId, "f", limit);
      assert.deepEqual(ids(forward), ids(all), `dir=f limit=${limit}`);
    }
  });

  test("end of a backward page is where a forward page resumes, and where `to` stops", async () => {
    const first = await page(alice, roomId, { dir: "b", limit: 5 });
    assert.ok(first.end);
    const forward = await page(alice, roomId, { dir: "f", from: first.end, limit: 100 });
    assert.deepEqual(ids(forward.chunk), ids(first.chunk).reverse());
    const bounded = await page(alice, roomId, { dir: "b", to: first.end, limit: 100 });
    assert.deepEqual(ids(bounded.chunk), ids(first.chunk));
    const middle = await page(alice, roomId, { dir: "b", from: first.end, limit: 3 });
    assert.deepEqual(ids(middle.chunk), ids(all.slice(-8, -5).reverse()));
    const forwardTo = await page(alice, roomId, { dir: "f", to: middle.end, limit: 100 });
    assert.deepEqual(ids(forwardTo.chunk), ids(all.slice(0, -8)));
  });

  test("limit 0 returns no events; dir is required", async () => {
    const none = await page(alice, roomId, { dir: "b", limit: 0 });
    assert.deepEqual(none.chunk, []);
    assertError(await alice.messages(roomId, { limit: 3 }), 400, "M_MISSING_PARAM");
    assertError(await alice.messages(roomId, { dir: "x" }), 400, "M_INVALID_PARAM");
    assertError(await alice.messages(roomId, { dir: "b", from: "garbage" }), 400, "M_INVALID_PARAM");
  });

  test("filter types and not_types, across pages", async () => {
    const messages = await paginateAll(alice, roomId, "b", 4, { types: ["m.room.message"] });
    assert.deepEqual(ids(messages), ids(all.filter((e) => e.type === "m.room.message")).reverse());
    const others = await paginateAll(alice, roomId, "f", 2, { not_types: ["m.room.message", "m.room.member"] });
    assert.deepEqual(ids(others), ids(all.filter((e) => e.type !== "m.room.message" && e.type !== "m.room.member")));
    const wildcard = await paginateAll(alice, roomId, "f", 10, { types: ["org.example.*"] });
    assert.equal(wildcard.length, 4);
    assert.ok(wildcard.every((e) => e.type === "org.example.other"));
    assertError(await alice.messages(roomId, { dir: "b", filter: "{not json" }), 400, "M_INVALID_PARAM");
  });

  test("lazy_load_members returns the member events of the page's senders", async () => {
    const p = await page(alice, roomId, { dir: "b", limit: 2, filter: JSON.stringify({ lazy_load_members: true }) });
    const senders = new Set(p.chunk.map((e) => e.sender));
    assert.ok(p.state);
    assert.deepEqual(new Set(p.state.map((e) => e.state_key)), senders);
    for (const e of p.state) assert.equal(e.type, "m.room.member");
    const plain = await page(alice, roomId, { dir: "b", limit: 2 });
    assert.equal(plain.state, undefined);
  });
});

describe("GET /context", () => {
  test("events before and after, with tokens that continue into /messages", async () => {
    const roomId = await alice.createRoom();
    const sent: string[] = [];
    for (let i = 0; i < 12; i++) sent.push(await alice.send(roomId, `c${i}`));
    const ctx = ok(await alice.req("GET", `/rooms/${enc(roomId)}/context/${enc(sent[6]!)}?limit=4`)) as {
      event: Ev;
      events_before: Ev[];
      events_after: Ev[];
      start: string;
      end: string;
      state: Ev[];
    };
    assert.equal(ctx.event.event_id, sent[6]);
    assert.deepEqual(ids(ctx.events_before), [sent[5], sent[4]]);
    assert.deepEqual(ids(ctx.events_after), [sent[7], sent[8]]);
    assert.ok(findState(ctx.state, "m.room.create"));
    const earlier = await page(alice, roomId, { dir: "b", from: ctx.start, limit: 2 });
    assert.deepEqual(ids(earlier.chunk), [sent[3], sent[2]]);
    const later = await page(alice, roomId, { dir: "f", from: ctx.end, limit: 2 });
    assert.deepEqual(ids(later.chunk), [sent[9], sent[10]]);
  });

  test("404 M_NOT_FOUND for an unknown event or one the user may not see", async () => {
    const roomId = await alice.createRoom();
    const message = await alice.send(roomId, "secret");
    assertError(await alice.req("GET", `/rooms/${enc(roomId)}/context/${enc("$nope")}`), 404, "M_NOT_FOUND");
    assertError(await carol.req("GET", `/rooms/${enc(roomId)}/context/${enc(message)}`), 404, "M_NOT_FOUND");
  });
});

describe("history visibility", () => {
  test("shared: a user who joins later sees what was said before", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    const early = await alice.send(roomId, "before bob");
    await bob.join(roomId);
    assert.ok(bodies((await page(bob, roomId, { dir: "b", limit: 50 })).chunk).includes("before bob"));
    ok(await bob.event(roomId, early));
  });

  test("joined: a user who joins later sees nothing from before their join", async () => {
    const roomId = await alice.createRoom({
      preset: "public_chat",
      initial_state: [{ type: "m.room.history_visibility", content: { history_visibility: "joined" } }],
    });
    const early = await alice.send(roomId, "before bob");
    await bob.join(roomId);
    const late = await alice.send(roomId, "after bob");
    const seen = await paginateAll(bob, roomId, "b", 3);
    assert.deepEqual(bodies(seen), ["after bob"]);
    // The room's setup, sent before the visibility became "joined", stays visible (it was "shared" then).
    const ascending = [...seen].reverse();
    const hv = ascending.findIndex((e) => e.type === "m.room.history_visibility");
    const join = ascending.findIndex((e) => e.type === "m.room.member" && e.state_key === bob.userId);
    assert.ok(hv >= 0 && join === hv + 1, "nothing between the visibility change and bob's join");
    assertError(await bob.event(roomId, early), 404, "M_NOT_FOUND");
    ok(await bob.event(roomId, late));
    // Alice, joined throughout, sees both.
    assert.deepEqual(bodies(await paginateAll(alice, roomId, "b", 3)), ["after bob", "before bob"]);
  });

  test("invited: an invitee who joins sees what was said since the invite", async () => {
    const roomId = await alice.createRoom({
      initial_state: [{ type: "m.room.history_visibility", content: { history_visibility: "invited" } }],
    });
    await alice.send(roomId, "before invite");
    ok(await alice.act("invite", roomId, bob.userId));
    await alice.send(roomId, "while invited");
    await bob.join(roomId);
    assert.deepEqual(bodies(await paginateAll(bob, roomId, "f", 4)), ["while invited"]);
  });

  test("a user who left sees history up to their leave and nothing after", async () => {
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await alice.send(roomId, "before bob joined");
    await bob.join(roomId);
    await alice.send(roomId, "while bob was here");
    ok(await bob.leave(roomId));
    const after = await alice.send(roomId, "after bob left");
    const seen = await paginateAll(bob, roomId, "b", 2);
    // He joined after it, so "shared" history from before his join stays his to read.
    assert.deepEqual(bodies(seen), ["while bob was here", "before bob joined"]);
    assert.equal(seen[0]!.type, "m.room.member");
    assert.equal(seen[0]!.content.membership, "leave");
    assertError(await bob.event(roomId, after), 404, "M_NOT_FOUND");
    const forward = await paginateAll(bob, roomId, "f", 3);
    assert.deepEqual(ids(forward), ids(seen).reverse());
  });

  test("a user who never joined (an invite they rejected) sees no shared history", async () => {
    const roomId = await alice.createRoom();
    await alice.send(roomId, "private talk");
    ok(await alice.act("invite", roomId, carol.userId));
    ok(await carol.leave(roomId));
    const seen = await paginateAll(carol, roomId, "b", 5);
    assert.deepEqual(bodies(seen), []);
    assert.deepEqual(
      seen.map((e) => [e.type, e.state_key, e.content.membership]),
      [
        ["m.room.member", carol.userId, "leave"],
        ["m.room.member", carol.userId, "invite"],
      ],
    );
  });

  test("world_readable: anyone may read the room without joining", async () => {
    const roomId = await alice.createRoom({
      preset: "public_chat",
      initial_state: [{ type: "m.room.history_visibility", content: { history_visibility: "world_readable" } }],
    });
    const message = await alice.send(roomId, "for everyone");
    assert.deepEqual(bodies((await page(dave, roomId, { dir: "b", limit: 10 })).chunk), ["for everyone"]);
    ok(await dave.event(roomId, message));
    assert.ok(findState(await dave.fullState(roomId), "m.room.create"));
  });
});
