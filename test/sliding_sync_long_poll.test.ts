/**
 * Simplified sliding sync: a long-poll the client gave up on must not touch the connection's
 * saved positions. Both SDKs abort the request in flight when their lists change and send the
 * same `pos` again at once; if the abandoned request later saved its state, it would delete the
 * position the client now holds, and the client's next request would fail with M_UNKNOWN_POS.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { SlidingSyncService } from "../src/services/sliding_sync/service.js";
import type { Notifier } from "../src/services/sync/notifier.js";
import { ok, User } from "./helpers/rooms.js";
import { request, startServer, until, type TestServer } from "./helpers/server.js";

const PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

let server: TestServer;
before(async () => {
  server = await startServer();
});
after(async () => server?.stop());

const list = (timelineLimit: number) => ({ lists: { all: { ranges: [[0, 9]], timeline_limit: timelineLimit, required_state: [] } } });

async function ss(u: User, body: unknown, pos?: string): Promise<{ pos: string; rooms: Record<string, unknown> }> {
  const qs = pos === undefined ? "" : `?pos=${encodeURIComponent(pos)}`;
  return ok(await request(u.baseUrl, "POST", `${PATH}${qs}`, { token: u.token, body })) as unknown as { pos: string; rooms: Record<string, unknown> };
}

// The abandoned long-poll would wait ten minutes if nothing woke it; the test's timeout turns that into a failure.
test("an aborted long-poll that is answered after the client's next request keeps that request's position", { timeout: 60_000 }, async () => {
  const alice = await User.register(server.baseUrl, "aborter");
  const roomId = await alice.createRoom({ name: "Polled" });
  const first = await ss(alice, list(1));

  // The first long-poll of alice's is held as one busy computing its answer would be: it misses
  // its client going away, and only an event ends its wait. Its own answer is kept here.
  const services = server.homeserver.services as { notifier: Notifier; slidingSync: SlidingSyncService };
  const notifier = services.notifier;
  const slidingSync = services.slidingSync;
  const wait = notifier.wait.bind(notifier);
  const sync = slidingSync.sync.bind(slidingSync);
  let seen: AbortSignal | undefined;
  let abandoned: Promise<unknown> | undefined;
  notifier.wait = (filter, version, remaining, signal) => {
    if (seen !== undefined || filter.userId !== alice.userId || signal === undefined) return wait(filter, version, remaining, signal);
    seen = signal;
    return wait(filter, version, remaining);
  };
  slidingSync.sync = (...args) => {
    const answer = sync(...args);
    abandoned ??= answer;
    return answer;
  };
  try {
    const client = new AbortController();
    const polling = fetch(`${server.baseUrl}${PATH}?pos=${encodeURIComponent(first.pos)}&timeout=600000`, {
      method: "POST",
      headers: { authorization: `Bearer ${alice.token}`, "content-type": "application/json" },
      body: JSON.stringify(list(1)),
      signal: client.signal,
    });
    await until(() => seen !== undefined);
    client.abort();
    await assert.rejects(polling);
    // The server has seen the connection close.
    await until(() => seen!.aborted);

    // The client's next request, with the same pos and a changed list, is answered with a new position.
    const next = await ss(alice, list(2), first.pos);
    assert.notEqual(next.pos.split("/")[0], first.pos.split("/")[0], "the changed list is saved at a new position");

    // Now the abandoned long-poll wakes and finishes.
    await alice.send(roomId, "wakes the abandoned poll");
    await abandoned;

    const later = await ss(alice, list(2), next.pos);
    assert.ok(later.rooms[roomId], "the new message arrives at the position the client holds");
  } finally {
    notifier.wait = wait;
    slidingSync.sync = sync;
  }
});
