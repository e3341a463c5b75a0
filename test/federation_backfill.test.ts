/**
 * `/messages` on a room joined from another server (issue #15: "/backfill both ways, and
 * /messages backfilling from other servers"): history from before the join is fetched from the
 * resident server as the client pages back, in order, once, and is never shown to /sync.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { startTwoServers, TestFederation, type FederatedServer } from "./helpers/federation.js";
import { enc, ok, User } from "./helpers/rooms.js";
import { request } from "./helpers/server.js";

interface Ev {
  event_id: string;
  type: string;
  content: { body?: string };
}

describe("history from before a federated join", () => {
  const fed = new TestFederation(["a.test", "b.test"]);
  let b: FederatedServer;
  let alice: User;
  let bob: User;
  let roomId: string;
  const HISTORY = 45;

  before(async () => {
    ({ b, users: { alice, bob } } = await startTwoServers(fed, { a: ["alice"], b: ["bob"] }));
    roomId = await alice.createRoom({ preset: "public_chat", name: "History" });
    for (let i = 0; i < HISTORY; i++) await alice.send(roomId, `old ${i}`);
    const res = await request(b.server.baseUrl, "POST", `/_matrix/client/v3/join/${enc(roomId)}?via=a.test`, { token: bob.token, body: {} });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  });
  after(() => fed.close());

  test("paging back fetches the earlier messages from the resident server, in order and once", async () => {
    const seen: Ev[] = [];
    let from: string | undefined;
    let reachedStart = false;
    for (let pages = 0; pages < 20 && !reachedStart; pages++) {
      const page = ok(await bob.messages(roomId, { dir: "b", limit: 10, from }));
      seen.push(...(page.chunk as Ev[]));
      reachedStart = page.end === undefined;
      from = page.end as string;
    }
    assert.ok(reachedStart, "the history ends");
    const bodies = seen.filter((e) => e.type === "m.room.message").map((e) => e.content.body);
    const expected = Array.from({ length: HISTORY }, (_, i) => `old ${HISTORY - 1 - i}`);
    assert.deepEqual(bodies, expected);
    assert.equal(new Set(seen.map((e) => e.event_id)).size, seen.length, "no event twice");
    // The state received with the join is the room's state, not timeline: the history ends with
    // the earliest message (docs/federation.md says so).
    assert.equal(seen.filter((e) => e.type === "m.room.message").at(-1)?.content.body, "old 0");
  });

  test("forwards from the start, the same history comes back in order", async () => {
    const page = ok(await bob.messages(roomId, { dir: "f", limit: 100 }));
    const bodies = (page.chunk as Ev[]).filter((e) => e.type === "m.room.message").map((e) => e.content.body);
    assert.deepEqual(bodies.slice(0, HISTORY), Array.from({ length: HISTORY }, (_, i) => `old ${i}`));
  });

  test("history fetched later is not news: an incremental sync does not bring it", async () => {
    const initial = await request(b.server.baseUrl, "GET", "/_matrix/client/v3/sync", { token: bob.token });
    const since = initial.body.next_batch as string;
    const fresh = await User.register(b.server.baseUrl, "carol");
    await fresh.join(roomId);
    await alice.send(roomId, "new");
    for (;;) {
      const inc = await request(b.server.baseUrl, "GET", `/_matrix/client/v3/sync?since=${enc(since)}&timeout=5000`, { token: bob.token });
      const events = ((inc.body.rooms as { join?: Record<string, { timeline: { events: Ev[] } }> } | undefined)?.join?.[roomId]?.timeline.events ?? []);
      const bodies = events.filter((e) => e.type === "m.room.message").map((e) => e.content.body);
      if (bodies.length === 0) continue;
      assert.deepEqual(bodies, ["new"]);
      break;
    }
  });
});
