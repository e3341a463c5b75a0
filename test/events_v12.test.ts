/**
 * Room version 12 in the pure event model: room IDs derived from the create event (MSC4291),
 * privileged creators (MSC4289), and the version's flags. Rule numbers are those of
 * content/rooms/v12.md in matrix-org/matrix-spec.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  AuthError,
  authEventTypes,
  authStateKeys,
  buildEvent,
  BuildEventError,
  checkAuthEventsList,
  checkEventAuth,
  createEventIdOfRoom,
  eventIdFor,
  getRoomVersion,
  PowerLevels,
  previewEventId,
  redact,
  roomCreators,
  roomIdForCreateEvent,
  roomIdOfCreateEventId,
  roomIdOfEvent,
  ROOM_VERSIONS,
  roomVersionStability,
  signingKeyFromSeed,
  toClientEvent,
  v12RuleNumber,
  type AuthOptions,
  type Pdu,
} from "../src/events/index.js";

const key = signingKeyFromSeed("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1");
const signer = { serverName: "hs", keyId: "ed25519:t", privateKey: key };
const v11 = ROOM_VERSIONS["11"]!;
const v12 = ROOM_VERSIONS["12"]!;
const ALICE = "@alice:hs"; // creator
const BOB = "@bob:hs";
const CAROL = "@carol:hs";
const DAVE = "@dave:elsewhere"; // an additional creator on another server

function createEvent(content: Record<string, unknown> = {}, ts = 1000): { eventId: string; pdu: Pdu } {
  return buildEvent(
    {
      version: v12,
      roomId: "",
      sender: ALICE,
      type: "m.room.create",
      stateKey: "",
      content: { room_version: "12", ...content },
      prevEvents: [],
      authEvents: [],
      depth: 1,
      originServerTs: ts,
    },
    signer,
  );
}

/** A v12 room in memory: built for real, each event checked against the state before it. */
class Room {
  readonly state = new Map<string, Pdu>();
  readonly ids = new Map<Pdu, string>();
  readonly roomId: string;
  readonly createId: string;
  last: string;
  depth = 1;

  constructor(opts: { createContent?: Record<string, unknown>; powerLevels?: Record<string, unknown> | null } = {}) {
    const { eventId, pdu } = createEvent(opts.createContent);
    checkEventAuth(pdu, () => undefined, v12);
    this.state.set("m.room.create|", pdu);
    this.createId = eventId;
    this.roomId = roomIdOfCreateEventId(eventId);
    this.last = eventId;
    this.member(ALICE, "join");
    if (opts.powerLevels !== null) this.send(ALICE, "m.room.power_levels", opts.powerLevels ?? { users: {} }, "");
    this.send(ALICE, "m.room.join_rules", { join_rule: "public" }, "");
  }

  lookup = (type: string, stateKey: string): Pdu | undefined => this.state.get(`${type}|${stateKey}`);

  make(sender: string, type: string, content: Record<string, unknown>, stateKey?: string): Pdu {
    const authEvents = authEventTypes(type, stateKey, sender, content, v12)
      .map(([t, k]) => this.lookup(t, k))
      .filter((e): e is Pdu => e !== undefined)
      .map((e) => eventIdFor(e, v12));
    return buildEvent(
      {
        version: v12,
        roomId: this.roomId,
        sender,
        type,
        stateKey,
        content,
        prevEvents: [this.last],
        authEvents,
        depth: ++this.depth,
        originServerTs: 1000 + this.depth,
      },
      signer,
    ).pdu;
  }

  send(sender: string, type: string, content: Record<string, unknown>, stateKey?: string, options?: AuthOptions): Pdu {
    const pdu = this.make(sender, type, content, stateKey);
    checkEventAuth(pdu, this.lookup, v12, options);
    if (typeof pdu.state_key === "string") this.state.set(`${pdu.type}|${pdu.state_key}`, pdu);
    this.last = eventIdFor(pdu, v12);
    return pdu;
  }

  refuse(sender: string, type: string, content: Record<string, unknown>, stateKey: string | undefined, rule: string, message?: RegExp): void {
    const pdu = this.make(sender, type, content, stateKey);
    expectAuthError(() => checkEventAuth(pdu, this.lookup, v12), rule, message);
  }

  member(user: string, membership: string, sender = user): Pdu {
    return this.send(sender, "m.room.member", { membership }, user);
  }
}

function expectAuthError(fn: () => void, rule: string, message?: RegExp): AuthError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof AuthError, `expected an AuthError for rule ${rule}, got ${String(caught)}`);
  assert.equal(caught.rule, rule, `rule: ${caught.message}`);
  if (message) assert.match(caught.message, message);
  return caught;
}

describe("room version 12", () => {
  test("is supported and stable, built on 11 with the v12 flags and state resolution v2.1", () => {
    assert.equal(getRoomVersion("12"), v12);
    assert.equal(roomVersionStability("12"), "stable");
    assert.deepEqual(
      { ...v12, id: "11", eventFormat: 3, stateResolution: 2, roomIdIsCreateEventId: false, privilegedCreators: false },
      v11,
    );
    assert.equal(v12.eventFormat, 4);
    assert.equal(v12.stateResolution, 2.1);
    assert.ok(v12.roomIdIsCreateEventId && v12.privilegedCreators);
    assert.ok(!v11.roomIdIsCreateEventId && !v11.privilegedCreators);
  });

  test("v12 numbers the rules shared with v11 one further on", () => {
    assert.equal(v12RuleNumber("1.3"), "1.3");
    assert.equal(v12RuleNumber("2.1"), "3.1");
    assert.equal(v12RuleNumber("2.4"), "2");
    assert.equal(v12RuleNumber("4.3.1"), "5.3.1");
    assert.equal(v12RuleNumber("5"), "6");
    assert.equal(v12RuleNumber("9.1"), "10.1");
    assert.equal(v12RuleNumber("9.5"), "10.6");
  });
});

describe("MSC4291: the room ID is the create event's ID", () => {
  test("the create event has no room_id, and the room ID is its reference hash with !", () => {
    const { eventId, pdu } = createEvent();
    assert.equal(Object.hasOwn(pdu, "room_id"), false);
    const roomId = roomIdForCreateEvent(pdu, v12);
    assert.match(roomId, /^![A-Za-z0-9_-]{43}$/);
    assert.equal(roomId, `!${eventId.slice(1)}`);
    assert.equal(roomIdOfCreateEventId(eventId), roomId);
    assert.equal(createEventIdOfRoom(roomId), eventId);
    assert.equal(roomIdOfEvent(pdu, eventId), roomId);
    // The ID does not depend on who signed it.
    assert.equal(eventIdFor({ ...pdu, signatures: {} }, v12), eventId);
    // Different content, different room.
    assert.notEqual(createEvent({ name: "x" }).eventId, eventId);
    assert.notEqual(createEvent({}, 1001).eventId, eventId);
  });

  test("previewEventId gives the ID before signing; buildEvent checks a given room ID", () => {
    const { eventId } = createEvent();
    const input = {
      version: v12,
      roomId: "",
      sender: ALICE,
      type: "m.room.create",
      stateKey: "",
      content: { room_version: "12" },
      prevEvents: [],
      authEvents: [],
      depth: 1,
      originServerTs: 1000,
    };
    assert.equal(previewEventId(input), eventId);
    assert.equal(buildEvent({ ...input, roomId: roomIdOfCreateEventId(eventId) }, signer).eventId, eventId);
    assert.throws(() => buildEvent({ ...input, roomId: "!other" }, signer), BuildEventError);
    // In v11 the room ID is the caller's and is kept.
    const v11Create = buildEvent({ ...input, version: v11, roomId: "!r:hs", content: { room_version: "11" } }, signer).pdu;
    assert.equal(v11Create.room_id, "!r:hs");
  });

  test("rule 1.2: a create event with a room_id is refused; without one it is allowed", () => {
    const { pdu } = createEvent();
    checkEventAuth(pdu, () => undefined, v12);
    expectAuthError(() => checkEventAuth({ ...pdu, room_id: "!x:hs" }, () => undefined, v12), "1.2", /room_id/);
    expectAuthError(() => checkEventAuth({ ...pdu, prev_events: ["$x"] }, () => undefined, v12), "1.1");
    expectAuthError(
      () => checkEventAuth({ ...pdu, content: { room_version: "13" } }, () => undefined, v12),
      "1.3",
    );
  });

  test("rule 1.4: additional_creators must be an array of valid user IDs", () => {
    const ok = createEvent({ additional_creators: [BOB, DAVE] }).pdu;
    checkEventAuth(ok, () => undefined, v12);
    for (const bad of ["@bob:hs", [BOB, 7], ["not a user"], [BOB, "@:hs"], { [BOB]: true }]) {
      const pdu = createEvent({ additional_creators: bad }).pdu;
      expectAuthError(() => checkEventAuth(pdu, () => undefined, v12), "1.4", /additional_creators/);
    }
  });

  test("no event cites the create event in auth_events; the auth check still reads it", () => {
    assert.deepEqual(authEventTypes("m.room.message", undefined, BOB, {}, v12), [
      ["m.room.power_levels", ""],
      ["m.room.member", BOB],
    ]);
    assert.deepEqual(authEventTypes("m.room.message", undefined, BOB, {}, v11)[0], ["m.room.create", ""]);
    assert.deepEqual(authStateKeys("m.room.message", undefined, BOB, {}, v12)[0], ["m.room.create", ""]);
    assert.deepEqual(authStateKeys("m.room.create", "", BOB, {}, v12), []);
    const room = new Room();
    const message = room.send(ALICE, "m.room.message", { body: "hi" });
    assert.ok(!message.auth_events.includes(room.createId));
    assert.equal(message.room_id, room.roomId);
  });

  test("rule 3: the auth events list must not hold the create event, and needs no create", () => {
    const room = new Room();
    const message = room.make(ALICE, "m.room.message", { body: "hi" });
    const pl = room.lookup("m.room.power_levels", "")!;
    const member = room.lookup("m.room.member", ALICE)!;
    checkAuthEventsList(message, [pl, member], v12);
    expectAuthError(
      () => checkAuthEventsList(message, [room.lookup("m.room.create", "")!, pl, member], v12),
      "3.2",
      /must not include the m\.room\.create/,
    );
    expectAuthError(() => checkAuthEventsList(message, [pl, pl], v12), "3.1");
    expectAuthError(() => checkAuthEventsList(message, [{ ...pl, room_id: "!elsewhere" }], v12), "3.5");
  });

  test("rule 2: the room ID must be the create event's ID", () => {
    const room = new Room();
    const message = room.make(ALICE, "m.room.message", { body: "hi" });
    // Another room's create event in the state.
    const other = createEvent({ name: "other" }).pdu;
    const lookup = (t: string, k: string) => (t === "m.room.create" ? other : room.lookup(t, k));
    expectAuthError(() => checkEventAuth(message, lookup, v12), "2", /not the ID of the room's m\.room\.create/);
    // No create event at all.
    const none = (t: string, k: string) => (t === "m.room.create" ? undefined : room.lookup(t, k));
    expectAuthError(() => checkEventAuth(message, none, v12), "2");
    // An event that claims another room ID.
    const stray = buildEvent(
      {
        version: v12,
        roomId: "!AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        sender: ALICE,
        type: "m.room.message",
        content: { body: "hi" },
        prevEvents: [room.last],
        authEvents: [],
        depth: 9,
        originServerTs: 2000,
      },
      signer,
    ).pdu;
    expectAuthError(() => checkEventAuth(stray, room.lookup, v12), "2");
  });

  test("rule 5.3.1: only the creator's first join straight after the create event", () => {
    const room = new Room();
    assert.equal(room.lookup("m.room.member", ALICE)!.prev_events[0], room.createId);
    // Bob cannot join an invite-only room; the error carries v12's number.
    room.send(ALICE, "m.room.join_rules", { join_rule: "invite" }, "");
    room.refuse(BOB, "m.room.member", { membership: "join" }, BOB, "5.3.4");
    room.refuse(BOB, "m.room.message", { body: "x" }, undefined, "6");
  });

  test("redaction keeps the whole create content, additional_creators included", () => {
    const { pdu } = createEvent({ additional_creators: [BOB], extra: 1 });
    assert.deepEqual(redact(pdu, v12).content, { room_version: "12", additional_creators: [BOB], extra: 1 });
    assert.equal(Object.hasOwn(redact(pdu, v12), "room_id"), false);
  });

  test("the client format gives a create event its room_id back", () => {
    const { eventId, pdu } = createEvent();
    assert.equal(toClientEvent(pdu, eventId, v12).room_id, roomIdOfCreateEventId(eventId));
  });
});

describe("MSC4289: creators have infinite power", () => {
  test("the creators are the sender plus additional_creators; their level is infinite", () => {
    const room = new Room({ createContent: { additional_creators: [BOB, DAVE] }, powerLevels: { users: { [CAROL]: 100 } } });
    const create = room.lookup("m.room.create", "");
    assert.deepEqual(roomCreators(create, v12), [ALICE, BOB, DAVE]);
    assert.deepEqual(roomCreators(create, v11), []);
    const levels = PowerLevels.fromState(room.lookup, v12);
    assert.equal(levels.userLevel(ALICE), Infinity);
    assert.equal(levels.userLevel(BOB), Infinity);
    assert.equal(levels.userLevel(CAROL), 100);
    assert.equal(levels.userLevel("@eve:hs"), 0);
    assert.ok(levels.isCreator(DAVE) && !levels.isCreator(CAROL));
    // Without a power levels event as well.
    const bare = new Room({ powerLevels: null });
    assert.equal(PowerLevels.fromState(bare.lookup, v12).userLevel(ALICE), Infinity);
  });

  test("rule 10.4: power levels may not list a creator in users", () => {
    const room = new Room({ createContent: { additional_creators: [BOB] } });
    room.refuse(ALICE, "m.room.power_levels", { users: { [ALICE]: 100 } }, "", "10.4", /creators/);
    room.refuse(ALICE, "m.room.power_levels", { users: { [BOB]: 50 } }, "", "10.4", /@bob:hs/);
    room.send(ALICE, "m.room.power_levels", { users: { [CAROL]: 100 } }, "");
    // The shape rules come first, under their v12 numbers.
    room.refuse(ALICE, "m.room.power_levels", { users: { [CAROL]: "100" } }, "", "10.1");
  });

  test("the creator can demote an admin at any level, even the highest; the admin cannot demote the creator", () => {
    const room = new Room({ powerLevels: { users: { [CAROL]: 2 ** 53 - 1 } } });
    room.member(CAROL, "join");
    room.send(ALICE, "m.room.power_levels", { users: { [CAROL]: 0 } }, "");
    room.send(ALICE, "m.room.power_levels", { users: { [CAROL]: 100 }, state_default: 1000, ban: 2 ** 53 - 1 }, "");
    // Carol (100) may not raise what is above her, nor list Alice.
    room.refuse(CAROL, "m.room.power_levels", { users: { [CAROL]: 100 }, state_default: 0, ban: 2 ** 53 - 1 }, "", "8");
  });

  test("an admin cannot lower another admin's level but the creator can; only creators outrank everyone", () => {
    const room = new Room({ powerLevels: { users: { [BOB]: 100, [CAROL]: 100 } } });
    room.member(BOB, "join");
    room.member(CAROL, "join");
    room.refuse(BOB, "m.room.power_levels", { users: { [BOB]: 100, [CAROL]: 50 } }, "", "10.6", /@carol:hs/);
    room.send(ALICE, "m.room.power_levels", { users: { [BOB]: 100, [CAROL]: 50 } }, "");
  });

  test("the creator can kick and ban admins; nobody can kick or ban a creator", () => {
    const room = new Room({ createContent: { additional_creators: [BOB] }, powerLevels: { users: { [CAROL]: 100 } } });
    room.member(BOB, "join");
    room.member(CAROL, "join");
    // Carol at 100 cannot kick or ban either creator.
    room.refuse(CAROL, "m.room.member", { membership: "leave" }, ALICE, "5.5.5", /Infinity/);
    room.refuse(CAROL, "m.room.member", { membership: "ban" }, BOB, "5.6.3");
    // One creator cannot kick another: their levels are equal.
    room.refuse(ALICE, "m.room.member", { membership: "leave" }, BOB, "5.5.5");
    // The creator kicks and bans the admin.
    room.member(CAROL, "leave", ALICE);
    room.member(CAROL, "ban", ALICE);
    room.refuse(CAROL, "m.room.member", { membership: "join" }, CAROL, "5.3.3");
  });

  test("an additional creator may change power levels and send any state once joined", () => {
    const room = new Room({
      createContent: { additional_creators: [DAVE] },
      powerLevels: { users: {}, state_default: 2 ** 53 - 1, events: { "m.room.power_levels": 2 ** 53 - 1 } },
    });
    room.refuse(DAVE, "m.room.topic", { topic: "x" }, "", "6");
    room.member(DAVE, "join");
    room.send(DAVE, "m.room.topic", { topic: "dave's" }, "");
    room.send(DAVE, "m.room.power_levels", { users: { [CAROL]: 2 ** 53 - 1 }, state_default: 50 }, "");
    room.refuse(BOB, "m.room.topic", { topic: "x" }, "", "6");
  });
});
