/**
 * Sliding-sync connections shared by two processes on one PostgreSQL database: a connection
 * started on one continues on the other, and a long-poll on one wakes for a message sent
 * through the other. Needs SWITCHBOARD_TEST_POSTGRES.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { removeTestData, TEST_POSTGRES } from "./helpers/database.js";
import { ok, User, type Ev } from "./helpers/rooms.js";
import { request, startServer } from "./helpers/server.js";

const PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
const skip = TEST_POSTGRES ? false : "needs PostgreSQL (SWITCHBOARD_TEST_POSTGRES)";

interface Body {
  pos: string;
  rooms: Record<string, { initial?: boolean; timeline?: Ev[] }>;
}

async function ss(u: User, pos?: string, timeout?: number): Promise<Body> {
  const qs = new URLSearchParams();
  if (pos) qs.set("pos", pos);
  if (timeout !== undefined) qs.set("timeout", String(timeout));
  const body = { lists: { all: { ranges: [[0, 9]], timeline_limit: 1, required_state: [] } } };
  return ok(await request(u.baseUrl, "POST", `${PATH}?${qs}`, { token: u.token, body })) as unknown as Body;
}

test("a connection started on one process continues on another, and their long-polls wake across them", { skip }, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-ssw-"));
  const one = await startServer({}, { dir, homeserver: { workerId: "w1" } });
  const two = await startServer({}, { dir, homeserver: { workerId: "w2" } });
  try {
    const onOne = await User.register(one.baseUrl, "shared");
    const onTwo = new User(two.baseUrl, onOne.userId, onOne.token, onOne.deviceId);
    const roomId = await onOne.createRoom({ name: "Both" });
    const first = await ss(onOne);
    assert.equal(first.rooms[roomId]!.initial, true);

    const waiting = ss(onOne, first.pos, 30_000);
    const eventId = await onTwo.send(roomId, "through the other process");
    const woken = await waiting;
    assert.deepEqual(woken.rooms[roomId]!.timeline!.map((e) => e.event_id), [eventId]);

    const later = await onOne.send(roomId, "later");
    const continued = await ss(onTwo, woken.pos);
    assert.equal(continued.rooms[roomId]!.initial, undefined, "the other process knows what the connection was sent");
    assert.deepEqual(continued.rooms[roomId]!.timeline!.map((e) => e.event_id), [later]);
  } finally {
    await two.stop();
    await one.stop();
    await removeTestData(dir);
  }
});
