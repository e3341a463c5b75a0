/**
 * A redaction as clients receive it, over real HTTP: whatever the room version keeps the
 * target in (top-level `redacts` before room version 11, `content.redacts` from 11), the
 * client format gives it in both places, so clients of either era find it.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { enc, ok, startWithUsers, User, type Ev } from "./helpers/rooms.js";
import type { TestServer } from "./helpers/server.js";
import { sync } from "./helpers/sync.js";

let server: TestServer;
let alice: User;
let bob: User;

before(async () => {
  ({ server, users: [alice, bob] } = await startWithUsers("alice", "bob"));
});
after(async () => server?.stop());

/** A timeline long enough for the whole of a test's room. */
const WHOLE_TIMELINE = JSON.stringify({ room: { timeline: { limit: 50 } } });

const login = (u: User) => ({ user_id: u.userId, access_token: u.token, device_id: u.deviceId });

/** The event in a `/sync` reply's timeline of the room, failing the test when it is not there. */
function inTimeline(body: Awaited<ReturnType<typeof sync>>, roomId: string, eventId: string): Ev {
  const events = (body.rooms.join[roomId]?.timeline.events ?? []) as Ev[];
  const found = events.find((e) => e.event_id === eventId);
  assert.ok(found, `${eventId} is in ${roomId}'s timeline: ${JSON.stringify(events.map((e) => e.event_id))}`);
  return found;
}

describe("a redaction in /sync carries redacts at the top level and in content", () => {
  for (const version of ["10", "11"]) {
    test(`room version ${version}`, async () => {
      const roomId = await alice.createRoom({ room_version: version, invite: [bob.userId] });
      await bob.join(roomId);
      const target = await bob.send(roomId, "regrettable");
      const since = (await sync(server.baseUrl, login(bob))).next_batch;
      const redactPath = `/rooms/${enc(roomId)}/redact/${enc(target)}/r-${version}`;
      const redaction = ok(await alice.req("PUT", redactPath, { reason: "off topic" })).event_id as string;

      // Both what an incremental sync brings and what an initial sync shows of the room.
      const incremental = await sync(server.baseUrl, login(bob), { since });
      const initial = await sync(server.baseUrl, login(bob), { filter: WHOLE_TIMELINE });
      for (const body of [incremental, initial]) {
        const event = inTimeline(body, roomId, redaction);
        assert.equal(event.type, "m.room.redaction");
        assert.equal(event.sender, alice.userId);
        assert.equal(event.redacts, target);
        assert.equal(event.content.redacts, target);
        assert.equal(event.content.reason, "off topic");
      }
      // And the target itself is served redacted, naming the redaction.
      const redacted = inTimeline(initial, roomId, target);
      assert.deepEqual(redacted.content, {});
      assert.equal((redacted.unsigned?.redacted_because as Ev | undefined)?.event_id, redaction);
    });
  }
});
