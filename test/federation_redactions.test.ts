/**
 * Redactions across two Switchboards (issue #15), and PDUs a transaction may carry that must not
 * be taken as they came. In rooms of version 10 (`redacts` at the top level) and 12 (`redacts`
 * in content, creators with unlimited power):
 * - a redaction made on one server strips the event on the other: `/messages`, `/event` and a
 *   fresh `/sync` there show it redacted, because of that redaction;
 * - a user of the other server redacts their own event, and the resident server strips it too;
 * - a redaction received before the event it redacts (over `/send`, or a backfill batch before it)
 *   is applied when that event comes;
 * - a redaction the spec says not to apply (a sender without the `redact` level, of another
 *   server than the event's) is stored, but the event keeps its content;
 * - a PDU whose content hash does not match is kept redacted (spec: "Checks performed on
 *   receipt of a PDU", step 3); one over 65,536 bytes is refused by event ID, and the
 *   transaction still succeeds.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { signedRequest, signerOf, startTwoServers, TestFederation, type FederatedServer } from "./helpers/federation.js";
import { assertError, enc, ok, User, type Ev } from "./helpers/rooms.js";
import { eventually } from "./helpers/server.js";
import { buildEvent, eventIdFor, getRoomVersion, hashAndSignEvent, pduOf, type Pdu } from "../src/events/index.js";

const SEND = "/_matrix/federation/v1/send";

/** `eventId` as `user` reads it in the room's newest 50 events (`/messages`), if there. */
async function inMessages(user: User, roomId: string, eventId: string): Promise<Ev | undefined> {
  const chunk = ok(await user.messages(roomId, { dir: "b", limit: 50 })).chunk as Ev[];
  return chunk.find((e) => e.event_id === eventId);
}

/** `eventId` in a fresh (initial) `/sync` of `user`, if in its timeline. */
async function inFreshSync(user: User, roomId: string, eventId: string): Promise<Ev | undefined> {
  const filter = JSON.stringify({ room: { timeline: { limit: 50 } } });
  const body = ok(await user.req("GET", `/sync?filter=${enc(filter)}`)) as { rooms?: { join?: Record<string, { timeline: { events: Ev[] } }> } };
  return body.rooms?.join?.[roomId]?.timeline.events.find((e) => e.event_id === eventId);
}

/** `/messages` backwards, 10 events a page (so each page backfills from the other server), until `eventId` is seen or 10 pages. */
async function pagedBackUntil(user: User, roomId: string, eventId: string): Promise<Ev[]> {
  const seen: Ev[] = [];
  let from: string | undefined;
  for (let pages = 0; pages < 10 && !seen.some((e) => e.event_id === eventId); pages++) {
    const page = ok(await user.messages(roomId, { dir: "b", limit: 10, from }));
    seen.push(...(page.chunk as Ev[]));
    if (page.end === undefined) break;
    from = page.end as string;
  }
  return seen;
}

function redact(user: User, roomId: string, eventId: string): Promise<string> {
  return user.req("PUT", `/rooms/${enc(roomId)}/redact/${enc(eventId)}/${enc(`r-${eventId}`)}`, { reason: "oops" }).then((r) => ok(r).event_id as string);
}

/** Waits until `viewer` reads `eventId` redacted by `redactionId` in `/messages`; returns it as served. */
function redactedIn(viewer: User, roomId: string, eventId: string, redactionId: string): Promise<Ev> {
  return eventually(async () => {
    const e = await inMessages(viewer, roomId, eventId);
    return (e?.unsigned?.redacted_because as Ev | undefined)?.event_id === redactionId ? e : undefined;
  });
}

for (const roomVersion of ["10", "12"]) {
  describe(`redactions across two Switchboards, room version ${roomVersion}`, () => {
    const fed = new TestFederation(["a.test", "b.test"]);
    const version = getRoomVersion(roomVersion)!;
    let a: FederatedServer;
    let b: FederatedServer;
    let alice: User;
    let bob: User;
    let roomId: string;

    /** A PDU of `sender` signed by `by`, after the room's newest event on `on`, with the auth events a message needs. */
    async function pduFrom(on: FederatedServer, by: FederatedServer, sender: string, type: string, content: Record<string, unknown>, redacts?: string) {
      const storage = on.server.homeserver.storage;
      const tip = (await storage.rooms.getTip(roomId))!;
      const auth: string[] = [];
      for (const [t, k] of [["m.room.create", ""], ["m.room.power_levels", ""], ["m.room.member", sender]] as const) {
        const e = await storage.rooms.currentStateEvent(roomId, t, k);
        if (e && !(t === "m.room.create" && version.roomIdIsCreateEventId)) auth.push(e.eventId);
      }
      const input = { version, roomId, sender, type, content, prevEvents: [tip.eventId], authEvents: auth, depth: tip.depth + 1, originServerTs: Date.now(), redacts };
      return buildEvent(input, signerOf(by));
    }

    const transaction = (from: FederatedServer, to: FederatedServer, txnId: string, pdus: Pdu[]) =>
      signedRequest(to, signerOf(from), "PUT", `${SEND}/${enc(txnId)}`, { body: { origin: from.name, origin_server_ts: Date.now(), pdus } });

    before(async () => {
      ({ a, b, users: { alice, bob } } = await startTwoServers(fed, { a: ["alice"], b: ["bob"] }));
      roomId = await alice.createRoom({ preset: "public_chat", room_version: roomVersion });
      assert.equal(ok(await bob.req("POST", `/join/${enc(roomId)}?via=a.test`, {})).room_id, roomId);
      await eventually(async () => ((await alice.membershipIn(roomId, bob.userId)) === "join" ? true : undefined));
    });
    after(() => fed.close());

    test("a redaction on the resident server strips the event on the other: /messages, /event and a fresh /sync", async () => {
      const eventId = await alice.send(roomId, "secret");
      await eventually(() => inMessages(bob, roomId, eventId));
      const redactionId = await redact(alice, roomId, eventId);
      const served = await redactedIn(bob, roomId, eventId, redactionId);
      assert.deepEqual(served.content, {});
      const event = ok(await bob.event(roomId, eventId)) as unknown as Ev;
      assert.deepEqual(event.content, {});
      assert.equal((event.unsigned?.redacted_because as Ev).sender, alice.userId);
      const synced = await inFreshSync(bob, roomId, eventId);
      assert.ok(synced, "the event is in a fresh sync's timeline");
      assert.deepEqual(synced.content, {});
      assert.equal((synced.unsigned?.redacted_because as Ev).event_id, redactionId);
      // b.test keeps the stripped copy, not just a stripped view of it.
      const stored = (await b.server.homeserver.storage.rooms.getEvent(eventId))!;
      assert.equal(stored.redactedBy, redactionId);
      assert.equal(pduOf(stored).content.body, undefined);
    });

    test("a user of the other server redacts their own event there, and the resident server strips it too", async () => {
      const eventId = await bob.send(roomId, "sent by mistake");
      await eventually(() => inMessages(alice, roomId, eventId));
      const redactionId = await redact(bob, roomId, eventId);
      const served = await redactedIn(alice, roomId, eventId, redactionId);
      assert.deepEqual(served.content, {});
      assert.equal((served.unsigned?.redacted_because as Ev).sender, bob.userId);
      assert.equal((await a.server.homeserver.storage.rooms.getEvent(eventId))!.redactedBy, redactionId);
    });

    test("a redaction by a user of another server without the redact level is stored, but not applied", async () => {
      const eventId = await alice.send(roomId, "alice's words");
      await eventually(() => inMessages(bob, roomId, eventId));
      // bob's own server refuses it to him…
      const refused = await bob.req("PUT", `/rooms/${enc(roomId)}/redact/${enc(eventId)}/refused`, {});
      assertError(refused, 403, "M_FORBIDDEN");
      // …so b.test (or a server like it) sends one anyway: the auth rules accept it, the spec does not apply it.
      const forged = await pduFrom(a, b, bob.userId, "m.room.redaction", {}, eventId);
      const res = await transaction(b, a, `forged-redaction-${roomVersion}`, [forged.pdu]);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual((res.body.pdus as Record<string, unknown>)[forged.eventId], {});
      assert.ok(await a.server.homeserver.storage.rooms.getEvent(forged.eventId), "the redaction is stored");
      const kept = (await a.server.homeserver.storage.rooms.getEvent(eventId))!;
      assert.equal(kept.redactedBy, null);
      assert.equal(pduOf(kept).content.body, "alice's words");
      assert.equal((ok(await alice.event(roomId, eventId)).content as Record<string, unknown>).body, "alice's words");
    });

    test("history backfilled from before a join comes with its redactions applied", async () => {
      const earlier = await alice.createRoom({ preset: "public_chat", room_version: roomVersion });
      const eventId = await alice.send(earlier, "said before bob came");
      const redactionId = await redact(alice, earlier, eventId);
      await alice.send(earlier, "after the redaction");
      assert.equal(ok(await bob.req("POST", `/join/${enc(earlier)}?via=a.test`, {})).room_id, earlier);
      const seen = await pagedBackUntil(bob, earlier, eventId);
      const found = seen.find((e) => e.event_id === eventId);
      assert.ok(found, "the event is backfilled");
      assert.deepEqual(found.content, {});
      assert.equal((found.unsigned?.redacted_because as Ev | undefined)?.event_id, redactionId);
      assert.equal((await b.server.homeserver.storage.rooms.getEvent(eventId))!.redactedBy, redactionId);
    });

    test("a redaction backfilled a batch before its event is applied when that batch comes", async () => {
      const earlier = await alice.createRoom({ preset: "public_chat", room_version: roomVersion });
      const eventId = await alice.send(earlier, "said long before bob came");
      // More events between the two than one backfill asks for (10, as the pages below): newest first, the redaction comes first.
      for (let i = 1; i <= 12; i++) await alice.send(earlier, `between ${i}`);
      const redactionId = await redact(alice, earlier, eventId);
      await alice.send(earlier, "after the redaction");
      assert.equal(ok(await bob.req("POST", `/join/${enc(earlier)}?via=a.test`, {})).room_id, earlier);
      const seen = await pagedBackUntil(bob, earlier, eventId);
      const redactionAt = seen.findIndex((e) => e.event_id === redactionId);
      const found = seen.findIndex((e) => e.event_id === eventId);
      assert.ok(redactionAt >= 0 && found > redactionAt + 10, "the redaction came more than a batch before its event");
      assert.deepEqual(seen[found]!.content, {});
      assert.equal((seen[found]!.unsigned?.redacted_because as Ev | undefined)?.event_id, redactionId);
      const event = ok(await bob.event(earlier, eventId)) as unknown as Ev;
      assert.deepEqual(event.content, {});
      assert.equal((event.unsigned?.redacted_because as Ev).event_id, redactionId);
      assert.equal((await b.server.homeserver.storage.rooms.getEvent(eventId))!.redactedBy, redactionId);
    });

    test("a redaction received before its event is applied when the event comes: /event, /messages and a fresh /sync", async () => {
      // Both built on b.test's newest event: the redaction names an event b.test does not have yet.
      const target = await pduFrom(b, a, alice.userId, "m.room.message", { msgtype: "m.text", body: "redacted before it came" });
      const redaction = await pduFrom(b, a, alice.userId, "m.room.redaction", {}, target.eventId);
      const first = await transaction(a, b, `early-redaction-${roomVersion}`, [redaction.pdu]);
      assert.equal(first.status, 200, JSON.stringify(first.body));
      assert.deepEqual(first.body.pdus, { [redaction.eventId]: {} });
      assert.equal(await b.server.homeserver.storage.rooms.getEvent(target.eventId), undefined);
      const second = await transaction(a, b, `late-target-${roomVersion}`, [target.pdu]);
      assert.equal(second.status, 200, JSON.stringify(second.body));
      assert.deepEqual(second.body.pdus, { [target.eventId]: {} });
      const event = ok(await bob.event(roomId, target.eventId)) as unknown as Ev;
      assert.deepEqual(event.content, {});
      assert.equal((event.unsigned?.redacted_because as Ev).event_id, redaction.eventId);
      const served = await redactedIn(bob, roomId, target.eventId, redaction.eventId);
      assert.deepEqual(served.content, {});
      const synced = await inFreshSync(bob, roomId, target.eventId);
      assert.ok(synced, "the event is in a fresh sync's timeline");
      assert.deepEqual(synced.content, {});
      assert.equal((synced.unsigned?.redacted_because as Ev).event_id, redaction.eventId);
      const stored = (await b.server.homeserver.storage.rooms.getEvent(target.eventId))!;
      assert.equal(stored.redactedBy, redaction.eventId);
      assert.equal(pduOf(stored).content.body, undefined);
      assert.deepEqual(await b.server.homeserver.storage.roomDag.pendingRedactions(target.eventId), [], "nothing waits any more");
    });

    test("a PDU whose content hash does not match is kept redacted under its event ID; the transaction succeeds", async () => {
      const built = await pduFrom(b, a, alice.userId, "m.room.message", { msgtype: "m.text", body: "as signed" });
      // The body is covered by the content hash, not by the signature or the event ID (both are over the redacted event).
      const tampered = { ...built.pdu, content: { msgtype: "m.text", body: "changed on the way" } };
      const res = await transaction(a, b, `bad-hash-${roomVersion}`, [tampered]);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(res.body.pdus, { [built.eventId]: {} });
      const stored = (await b.server.homeserver.storage.rooms.getEvent(built.eventId))!;
      assert.deepEqual(pduOf(stored).content, {});
      const served = ok(await bob.event(roomId, built.eventId));
      assert.deepEqual(served.content, {});
      assert.equal(served.sender, alice.userId);
    });

    test("a PDU over 65,536 bytes gets an error under its event ID, and the rest of the transaction is taken", async () => {
      const small = await pduFrom(b, a, alice.userId, "m.room.message", { msgtype: "m.text", body: "next to a big one" });
      const template = (await pduFrom(b, a, alice.userId, "m.room.message", { msgtype: "m.text", body: "" })).pdu;
      const { signatures: _s, ...unsigned } = { ...template, content: { msgtype: "m.text", body: "x".repeat(70_000) }, hashes: { sha256: "" } };
      const huge = hashAndSignEvent({ ...unsigned, signatures: {} } as Pdu, version, signerOf(a));
      const hugeId = eventIdFor(huge, version);
      const res = await transaction(a, b, `huge-${roomVersion}`, [huge, small.pdu]);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const pdus = res.body.pdus as Record<string, { error?: string }>;
      assert.match(pdus[hugeId]?.error ?? "", /65536/);
      assert.deepEqual(pdus[small.eventId], {});
      assert.equal(await b.server.homeserver.storage.rooms.getEvent(hugeId), undefined);
      assertError(await bob.event(roomId, hugeId), 404, "M_NOT_FOUND");
      assert.equal((ok(await bob.event(roomId, small.eventId)).content as Record<string, unknown>).body, "next to a big one");
    });
  });
}
