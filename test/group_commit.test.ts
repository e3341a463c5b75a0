/**
 * Group commit: concurrent sends share transactions (on SQLite, across rooms too), and every
 * guarantee of a lone send still holds: each acknowledged event is stored once, a refused send
 * in the same batch changes nothing for the others, retried transaction IDs give the first event,
 * and each room's order is the order its senders were answered in.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { assertError, ok, startWithUsers, User, type Ev } from "./helpers/rooms.js";
import type { TestServer } from "./helpers/server.js";

let server: TestServer;
let users: readonly User[];

before(async () => {
  const started = await startWithUsers("gc0", "gc1", "gc2", "gc3", "outsider");
  server = started.server;
  users = started.users;
});
after(async () => server?.stop());

async function timeline(user: User, roomId: string): Promise<Ev[]> {
  const chunk = ok(await user.messages(roomId, { dir: "f", limit: 500 })).chunk as Ev[];
  return chunk.filter((e) => e.type === "m.room.message");
}

describe("sends at once into several rooms", () => {
  test("every send is stored once, refusals stay refusals, retries give the first event, each room keeps its order", async () => {
    const members = users.slice(0, 4);
    const outsider = users[4]!;
    // One room per user, and one all four share.
    const own = await Promise.all(members.map((u) => u.createRoom({})));
    const shared = await members[0]!.createRoom({ preset: "public_chat" });
    for (const u of members.slice(1)) await u.join(shared);

    type Sent = { roomId: string; body: string; eventId: string; status: number };
    const send = async (u: User, roomId: string, body: string, txn: string): Promise<Sent> => {
      const r = await u.sendRaw(roomId, "m.room.message", { msgtype: "m.text", body }, txn);
      return { roomId, body, eventId: r.body.event_id as string, status: r.status };
    };
    // Every user sends into its own room and the shared one at once; within a room, one send
    // after another, every third raced by a retry of its transaction.
    const lanes = members.flatMap((u, i) =>
      [own[i]!, shared].map(async (roomId) => {
        const out: Sent[] = [];
        for (let n = 0; n < 10; n++) {
          const body = `${u.userId} ${n}`;
          const txn = `gc-${roomId === shared ? "s" : "o"}-${n}`;
          out.push(...(await Promise.all(n % 3 === 0 ? [send(u, roomId, body, txn), send(u, roomId, body, txn)] : [send(u, roomId, body, txn)])));
        }
        return out;
      }),
    );
    // Refused sends in the same batches: the outsider is not in these rooms.
    const refused = own.map((roomId) => outsider.sendRaw(roomId, "m.room.message", { msgtype: "m.text", body: "intruder" }, `x-${roomId}`));

    const results = (await Promise.all(lanes)).flat();
    for (const r of results) assert.equal(r.status, 200, `${r.body} in ${r.roomId}: ${r.status}`);
    for (const res of await Promise.all(refused)) assertError(res, 403, "M_FORBIDDEN");

    for (const roomId of [...own, shared]) {
      const reader = roomId === shared ? members[0]! : members[own.indexOf(roomId)]!;
      const sent = results.filter((r) => r.roomId === roomId);
      const firstIds = new Map<string, string>();
      for (const r of sent) {
        // A retry got the event of the first send with its transaction ID.
        assert.equal(firstIds.get(r.body) ?? r.eventId, r.eventId, `${r.body} in ${roomId} made two events`);
        firstIds.set(r.body, r.eventId);
      }
      const stored = await timeline(reader, roomId);
      assert.equal(stored.length, firstIds.size, `room ${roomId}: ${stored.length} events for ${firstIds.size} sends`);
      assert.deepEqual(new Set(stored.map((e) => e.event_id)), new Set(firstIds.values()));
      // Each sender's events are in the order the sender was answered.
      for (const u of members) {
        const mine = stored.filter((e) => e.sender === u.userId).map((e) => e.content.body);
        const answered = [...new Set(sent.filter((r) => r.body.startsWith(`${u.userId} `)).map((r) => r.body))];
        assert.deepEqual(mine, answered, `${u.userId} in ${roomId}`);
      }
    }
  });
});

describe("a send whose content no database column could hold", () => {
  test("a thread root ID with a NUL is sent, counted in the main timeline, and fails no one else's send", async () => {
    const [a, b] = users;
    const roomId = await a!.createRoom({ preset: "public_chat" });
    await b!.join(roomId);
    const [odd, plain] = await Promise.all([
      a!.sendRaw(roomId, "m.room.message", { msgtype: "m.text", body: "odd", "m.relates_to": { rel_type: "m.thread", event_id: "$root\u0000x" } }),
      a!.sendRaw(roomId, "m.room.message", { msgtype: "m.text", body: "plain" }),
    ]);
    assert.equal(odd.status, 200, JSON.stringify(odd.body));
    assert.equal(plain.status, 200, JSON.stringify(plain.body));
    const bodies = (await timeline(b!, roomId)).map((e) => e.content.body);
    assert.deepEqual(new Set(bodies), new Set(["odd", "plain"]));
  });
});
