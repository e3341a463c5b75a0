/**
 * The authorisation rules of room versions 10 and 11 (src/events/auth_rules.ts and
 * auth_membership.ts), rule by rule, each allowed and refused. Rule numbers are those of
 * content/rooms/v11.md in matrix-org/matrix-spec.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { describe, test } from "node:test";
import {
  AuthError,
  authEventTypes,
  buildEvent,
  checkAuthEventsList,
  checkEventAuth,
  eventIdFor,
  publicKeyBase64,
  ROOM_VERSIONS,
  signingKeyFromSeed,
  signJson,
  verifyEventSignature,
  type AuthOptions,
  type Pdu,
  type RoomVersion,
} from "../src/events/index.js";

const key = signingKeyFromSeed("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1");
const signer = { serverName: "hs", keyId: "ed25519:t", privateKey: key };
const v10 = ROOM_VERSIONS["10"]!;
const v11 = ROOM_VERSIONS["11"]!;
const ALICE = "@alice:hs"; // creator, power 100
const BOB = "@bob:hs";
const CAROL = "@carol:hs";
const MOD = "@mod:hs"; // power 50 where the fixture sets it up

/** A room in memory: events are built for real, checked against the state before them, and applied. */
class Room {
  readonly state = new Map<string, Pdu>();
  readonly roomId = "!room:hs";
  last = "";
  depth = 0;

  constructor(
    readonly version: RoomVersion,
    opts: { joinRule?: string; powerLevels?: Record<string, unknown> | null } = {},
  ) {
    const createContent: Record<string, unknown> = { room_version: version.id };
    this.send(ALICE, "m.room.create", createContent, "");
    this.send(ALICE, "m.room.member", { membership: "join" }, ALICE);
    if (opts.powerLevels !== null) {
      this.send(ALICE, "m.room.power_levels", opts.powerLevels ?? { users: { [ALICE]: 100 } }, "");
    }
    if (opts.joinRule) this.send(ALICE, "m.room.join_rules", { join_rule: opts.joinRule }, "");
  }

  lookup = (type: string, stateKey: string): Pdu | undefined => this.state.get(`${type}|${stateKey}`);

  make(sender: string, type: string, content: Record<string, unknown>, stateKey?: string, prev?: string[]): Pdu {
    const authEvents = authEventTypes(type, stateKey, sender, content, this.version)
      .map(([t, k]) => this.lookup(t, k))
      .filter((e): e is Pdu => e !== undefined)
      .map((e) => eventIdFor(e, this.version));
    return buildEvent(
      {
        version: this.version,
        roomId: this.roomId,
        sender,
        type,
        stateKey,
        content,
        prevEvents: prev ?? (this.last ? [this.last] : []),
        authEvents,
        depth: ++this.depth,
        originServerTs: 1000 + this.depth,
      },
      signer,
    ).pdu;
  }

  check(pdu: Pdu, options?: AuthOptions): void {
    checkEventAuth(pdu, this.lookup, this.version, options);
  }

  apply(pdu: Pdu): Pdu {
    if (typeof pdu.state_key === "string") this.state.set(`${pdu.type}|${pdu.state_key}`, pdu);
    this.last = eventIdFor(pdu, this.version);
    return pdu;
  }

  /** Builds, checks and applies; fails the test if refused. */
  send(sender: string, type: string, content: Record<string, unknown>, stateKey?: string, options?: AuthOptions): Pdu {
    const pdu = this.make(sender, type, content, stateKey);
    this.check(pdu, options);
    return this.apply(pdu);
  }

  /** Builds and checks; asserts an AuthError for `rule` whose message matches `message`. */
  refuse(
    sender: string,
    type: string,
    content: Record<string, unknown>,
    stateKey: string | undefined,
    rule: string,
    message?: RegExp,
    options?: AuthOptions,
  ): AuthError {
    const pdu = this.make(sender, type, content, stateKey);
    return expectAuthError(() => this.check(pdu, options), rule, message);
  }

  member(user: string, membership: string, sender = user, extra: Record<string, unknown> = {}): Pdu {
    return this.send(sender, "m.room.member", { membership, ...extra }, user);
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

describe("rule 1: m.room.create", () => {
  function create(version: RoomVersion, content: Record<string, unknown>, extra: Partial<Pdu> = {}): Pdu {
    const { pdu } = buildEvent(
      { version, roomId: "!r:hs", sender: ALICE, type: "m.room.create", stateKey: "", content, prevEvents: [], authEvents: [], depth: 1, originServerTs: 1 },
      signer,
    );
    return { ...pdu, ...extra };
  }
  const none = () => undefined;

  test("a well-formed create is allowed (v11 without creator, v10 with it)", () => {
    checkEventAuth(create(v11, { room_version: "11" }), none, v11);
    checkEventAuth(create(v10, { room_version: "10" }), none, v10);
  });
  test("1.1 prev_events", () => {
    expectAuthError(() => checkEventAuth(create(v11, {}, { prev_events: ["$x"] }), none, v11), "1.1");
  });
  test("1.2 room ID domain differs from the sender's", () => {
    expectAuthError(() => checkEventAuth(create(v11, {}, { room_id: "!r:elsewhere" }), none, v11), "1.2", /domain/);
  });
  test("1.3 unknown room_version", () => {
    expectAuthError(() => checkEventAuth(create(v11, { room_version: "999" }), none, v11), "1.3");
    expectAuthError(() => checkEventAuth(create(v11, { room_version: 11 }), none, v11), "1.3");
  });
  test("1.4 v10 requires content.creator; v11 does not", () => {
    const noCreator = create(v10, {});
    delete noCreator.content.creator;
    expectAuthError(() => checkEventAuth(noCreator, none, v10), "1.4", /creator/);
    checkEventAuth(create(v11, {}), none, v11);
  });
});

describe("rules 2, 3 and 5: the room, federation and the sender's membership", () => {
  test("2.4 no create event in the state", () => {
    const room = new Room(v11, { joinRule: "public" });
    const pdu = room.make(ALICE, "m.room.message", { body: "x" });
    expectAuthError(() => checkEventAuth(pdu, () => undefined, v11), "2.4", /no m\.room\.create/);
  });
  test("2.5 an auth event from another room", () => {
    const room = new Room(v11);
    const pdu = room.make(ALICE, "m.room.message", { body: "x" });
    const foreign = (t: string, k: string) => {
      const e = room.lookup(t, k);
      return e && t === "m.room.power_levels" ? { ...e, room_id: "!other:hs" } : e;
    };
    expectAuthError(() => checkEventAuth(pdu, foreign, v11), "2.5");
  });
  test("3 m.federate false refuses senders from other servers", () => {
    const room = new Room(v11, { joinRule: "public" });
    const create = room.lookup("m.room.create", "")!;
    room.state.set("m.room.create|", { ...create, content: { ...create.content, "m.federate": false } });
    room.refuse("@eve:remote", "m.room.member", { membership: "join" }, "@eve:remote", "3", /federate/);
    room.member(BOB, "join");
  });
  test("5 a sender who is not joined cannot send", () => {
    const room = new Room(v11, { joinRule: "public" });
    room.refuse(BOB, "m.room.message", { body: "hi" }, undefined, "5", /sender @bob:hs is not joined to the room/);
    room.member(BOB, "join");
    room.send(BOB, "m.room.message", { body: "hi" });
    room.member(BOB, "leave");
    room.refuse(BOB, "m.room.message", { body: "hi" }, undefined, "5", /membership: leave/);
  });
});

describe("rule 4.3: join", () => {
  test("4.3.1 the creator's first join after the create event (v11: create sender; v10: content.creator)", () => {
    for (const version of [v10, v11]) {
      const room = new Room(version);
      assert.equal(room.lookup("m.room.member", ALICE)?.content.membership, "join");
    }
  });
  test("4.3.1 does not apply to anyone else, or after further events", () => {
    const room = new Room(v11, { powerLevels: null });
    const create = eventIdFor(room.lookup("m.room.create", "")!, v11);
    const bob = room.make(BOB, "m.room.member", { membership: "join" }, BOB, [create]);
    expectAuthError(() => room.check(bob), "4.3.4");
  });
  test("public rooms: anyone may join themselves", () => {
    const room = new Room(v11, { joinRule: "public" });
    room.member(BOB, "join");
    room.member(BOB, "join"); // a profile change is a join too
  });
  test("4.3.2 joining on behalf of someone else", () => {
    const room = new Room(v11, { joinRule: "public" });
    room.refuse(ALICE, "m.room.member", { membership: "join" }, BOB, "4.3.2", /cannot join on behalf/);
  });
  test("4.3.3 a banned user cannot join", () => {
    const room = new Room(v11, { joinRule: "public" });
    room.member(BOB, "ban", ALICE);
    room.refuse(BOB, "m.room.member", { membership: "join" }, BOB, "4.3.3", /banned/);
  });
  test("4.3.4 invite-only: needs an invite (no join rules event means invite)", () => {
    for (const joinRule of ["invite", undefined]) {
      const room = new Room(v11, { joinRule });
      room.refuse(BOB, "m.room.member", { membership: "join" }, BOB, "4.3.4", /not invited/);
      room.member(BOB, "invite", ALICE);
      room.member(BOB, "join");
    }
  });
  test("4.3.4 knock rooms also admit the invited", () => {
    const room = new Room(v11, { joinRule: "knock" });
    room.refuse(BOB, "m.room.member", { membership: "join" }, BOB, "4.3.4");
    room.member(BOB, "invite", ALICE);
    room.member(BOB, "join");
  });
  test("4.3.7 an unknown join rule refuses", () => {
    const room = new Room(v11, { joinRule: "private" });
    room.refuse(BOB, "m.room.member", { membership: "join" }, BOB, "4.3.7", /"private"/);
  });
});

describe("rule 4.3.5 and 4.2: restricted joins", () => {
  const verifier: AuthOptions = { verifyServerSignature: (pdu, server) => verifyEventSignature(pdu, v11, server, "ed25519:t", key) };
  for (const rule of ["restricted", "knock_restricted"]) {
    test(`${rule}: the authorising user must be joined and able to invite`, () => {
      const room = new Room(v11, { joinRule: rule, powerLevels: { users: { [ALICE]: 100 }, invite: 50 } });
      room.refuse(BOB, "m.room.member", { membership: "join" }, BOB, "4.3.5.2", /no authorising user/);
      room.refuse(BOB, "m.room.member", { membership: "join", join_authorised_via_users_server: CAROL }, BOB, "4.3.5.2", /not joined/, verifier);
      room.member(CAROL, "invite", ALICE);
      room.member(CAROL, "join");
      room.refuse(BOB, "m.room.member", { membership: "join", join_authorised_via_users_server: CAROL }, BOB, "4.3.5.2", /may not invite/, verifier);
      room.send(BOB, "m.room.member", { membership: "join", join_authorised_via_users_server: ALICE }, BOB, verifier);
    });
  }
  test("4.2 the authorising server's signature is required and checked", () => {
    const room = new Room(v11, { joinRule: "restricted" });
    const content = { membership: "join", join_authorised_via_users_server: ALICE };
    room.refuse(BOB, "m.room.member", content, BOB, "4.2.1", /cannot check the signature/);
    room.refuse(BOB, "m.room.member", content, BOB, "4.2.1", /not signed by hs/, { verifyServerSignature: () => false });
    room.refuse(BOB, "m.room.member", { membership: "join", join_authorised_via_users_server: "nope" }, BOB, "4.2.1");
    room.send(BOB, "m.room.member", content, BOB, verifier);
  });
});

describe("rule 4.4: invite", () => {
  test("a joined member at the invite level may invite", () => {
    const room = new Room(v11);
    room.member(BOB, "invite", ALICE);
  });
  test("4.4.2 the inviter must be joined", () => {
    const room = new Room(v11);
    room.refuse(BOB, "m.room.member", { membership: "invite" }, CAROL, "4.4.2", /not joined/);
  });
  test("4.4.3 the target must not be joined or banned", () => {
    const room = new Room(v11, { joinRule: "public" });
    room.member(BOB, "join");
    room.refuse(ALICE, "m.room.member", { membership: "invite" }, BOB, "4.4.3", /already joined/);
    room.member(CAROL, "ban", ALICE);
    room.refuse(ALICE, "m.room.member", { membership: "invite" }, CAROL, "4.4.3", /banned/);
  });
  test("4.4.5 below the invite level", () => {
    const room = new Room(v11, { joinRule: "public", powerLevels: { users: { [ALICE]: 100 }, invite: 50 } });
    room.member(BOB, "join");
    room.refuse(BOB, "m.room.member", { membership: "invite" }, CAROL, "4.4.5", /too low to invite \(needs 50, has 0\)/);
  });
});

describe("rule 4.4.1: third-party invites", () => {
  const idKeys = generateKeyPairSync("ed25519");
  const token = "tok123";
  function setUp() {
    const room = new Room(v11);
    room.send(ALICE, "m.room.third_party_invite", { display_name: "b…", key_validity_url: "https://id/", public_key: publicKeyBase64(idKeys.publicKey) }, token);
    return room;
  }
  const signed = (mxid: string, privateKey = idKeys.privateKey) =>
    signJson({ mxid, sender: ALICE, token }, "id.example", "ed25519:0", privateKey);

  test("a valid signed invite is allowed", () => {
    setUp().member(BOB, "invite", ALICE, { third_party_invite: { display_name: "b…", signed: signed(BOB) } });
  });
  test("refusals: no signed, mxid mismatch, unknown token, other sender, bad signature, banned target", () => {
    const room = setUp();
    const tpi = (s: unknown) => ({ membership: "invite", third_party_invite: { display_name: "b", signed: s } });
    room.refuse(ALICE, "m.room.member", tpi(undefined), BOB, "4.4.1.2");
    room.refuse(ALICE, "m.room.member", tpi({ mxid: BOB }), BOB, "4.4.1.3");
    room.refuse(ALICE, "m.room.member", tpi(signed(CAROL)), BOB, "4.4.1.4");
    room.refuse(ALICE, "m.room.member", tpi({ ...signed(BOB), token: "other" }), BOB, "4.4.1.5");
    room.member(MOD, "invite", ALICE);
    room.member(MOD, "join");
    room.refuse(MOD, "m.room.member", tpi(signed(BOB)), BOB, "4.4.1.6");
    const forged = signed(BOB, generateKeyPairSync("ed25519").privateKey);
    room.refuse(ALICE, "m.room.member", tpi(forged), BOB, "4.4.1.8");
    room.member(BOB, "ban", ALICE);
    room.refuse(ALICE, "m.room.member", tpi(signed(BOB)), BOB, "4.4.1.1");
  });
  test("rule 6: m.room.third_party_invite needs the invite level", () => {
    const room = new Room(v11, { joinRule: "public", powerLevels: { users: { [ALICE]: 100 }, invite: 10 } });
    room.member(BOB, "join");
    room.refuse(BOB, "m.room.third_party_invite", { public_key: "x" }, "t", "6", /invite level 10, has 0/);
  });
});

describe("rule 4.5: leave, kick and unban", () => {
  test("4.5.1 leaving yourself: from join, invite or knock, not otherwise", () => {
    const room = new Room(v11, { joinRule: "public" });
    room.member(BOB, "join");
    room.member(BOB, "leave");
    room.refuse(BOB, "m.room.member", { membership: "leave" }, BOB, "4.5.1", /cannot leave/);
    room.member(CAROL, "invite", ALICE);
    room.member(CAROL, "leave"); // rejecting an invite
  });
  test("kick: allowed at the kick level against a lower power level", () => {
    const room = new Room(v11, { joinRule: "public", powerLevels: { users: { [ALICE]: 100, [MOD]: 50 } } });
    room.member(MOD, "join");
    room.member(BOB, "join");
    room.member(BOB, "leave", MOD);
    room.member(CAROL, "invite", ALICE);
    room.member(CAROL, "leave", MOD); // revoking an invite is a kick
  });
  test("4.5.2 the kicker must be joined", () => {
    const room = new Room(v11, { joinRule: "public" });
    room.member(BOB, "join");
    room.refuse(CAROL, "m.room.member", { membership: "leave" }, BOB, "4.5.2");
  });
  test("4.5.5 below the kick level, or a target not below you", () => {
    const room = new Room(v11, { joinRule: "public", powerLevels: { users: { [ALICE]: 100, [MOD]: 50, [CAROL]: 50 } } });
    for (const u of [BOB, MOD, CAROL]) room.member(u, "join");
    room.refuse(BOB, "m.room.member", { membership: "leave" }, CAROL, "4.5.5", /too low to kick \(needs 50, has 0\)/);
    room.refuse(MOD, "m.room.member", { membership: "leave" }, CAROL, "4.5.5", /not below yours/);
    room.refuse(MOD, "m.room.member", { membership: "leave" }, ALICE, "4.5.5");
  });
  test("4.5.3 unbanning needs the ban level (and the kick rule)", () => {
    const room = new Room(v11, { joinRule: "public", powerLevels: { users: { [ALICE]: 100, [MOD]: 50 }, kick: 50, ban: 60 } });
    room.member(MOD, "join");
    room.member(BOB, "ban", ALICE);
    room.refuse(MOD, "m.room.member", { membership: "leave" }, BOB, "4.5.3", /unban \(needs 60, has 50\)/);
    room.member(BOB, "leave", ALICE);
    room.member(BOB, "join");
  });
});

describe("rule 4.6: ban", () => {
  test("allowed at the ban level against a lower level; refused otherwise", () => {
    const room = new Room(v11, { joinRule: "public", powerLevels: { users: { [ALICE]: 100, [MOD]: 50 } } });
    room.member(MOD, "join");
    room.member(BOB, "join");
    room.refuse(BOB, "m.room.member", { membership: "ban" }, MOD, "4.6.3", /too low to ban/);
    room.refuse(MOD, "m.room.member", { membership: "ban" }, ALICE, "4.6.3", /not below yours/);
    room.refuse(CAROL, "m.room.member", { membership: "ban" }, BOB, "4.6.1", /not joined/);
    room.member(BOB, "ban", MOD);
    room.member(CAROL, "ban", MOD); // banning someone who never joined
  });
});

describe("rule 4.7: knock; 4.1 and 4.8", () => {
  test("knock is allowed only in knock rooms, for yourself, when not invited, joined or banned", () => {
    const room = new Room(v11, { joinRule: "knock" });
    room.member(BOB, "knock");
    room.member(BOB, "leave"); // rescinding a knock
    room.refuse(ALICE, "m.room.member", { membership: "knock" }, CAROL, "4.7.2");
    room.member(CAROL, "invite", ALICE);
    room.refuse(CAROL, "m.room.member", { membership: "knock" }, CAROL, "4.7.4", /already invite/);
    const pub = new Room(v11, { joinRule: "public" });
    pub.refuse(BOB, "m.room.member", { membership: "knock" }, BOB, "4.7.1", /does not allow knocking/);
  });
  test("knock_restricted rooms accept knocks", () => {
    new Room(v10, { joinRule: "knock_restricted" }).member(BOB, "knock");
  });
  test("4.8 unknown membership, 4.1 missing membership", () => {
    const room = new Room(v11, { joinRule: "public" });
    room.refuse(BOB, "m.room.member", { membership: "lurk" }, BOB, "4.8");
    room.refuse(BOB, "m.room.member", {}, BOB, "4.1");
  });
});

describe("rules 7 and 8: power to send, and others' state", () => {
  test("7 state events need state_default, messages events_default, events overrides both", () => {
    const room = new Room(v11, { joinRule: "public", powerLevels: { users: { [ALICE]: 100 }, events: { "m.room.topic": 0, "m.reaction": 20 } } });
    room.member(BOB, "join");
    const e = room.refuse(BOB, "m.room.name", { name: "n" }, "", "7");
    assert.equal(e.message, "power level too low to send m.room.name (needs 50, has 0)");
    room.send(BOB, "m.room.topic", { topic: "t" }, "");
    room.send(BOB, "m.room.message", { body: "b" });
    room.refuse(BOB, "m.reaction", {}, undefined, "7", /needs 20, has 0/);
  });
  test("7 events_default and users_default apply; redactions ignore the redact level", () => {
    const room = new Room(v11, { joinRule: "public", powerLevels: { users: { [ALICE]: 100 }, events_default: 10, users_default: 5, redact: 50 } });
    room.member(BOB, "join");
    room.refuse(BOB, "m.room.message", { body: "b" }, undefined, "7", /needs 10, has 5/);
    const ok = new Room(v11, { joinRule: "public", powerLevels: { users: { [ALICE]: 100 }, redact: 50 } });
    ok.member(BOB, "join");
    ok.send(BOB, "m.room.redaction", { redacts: "$someone_elses" });
  });
  test("without a power levels event: the creator has 100, others 0, state needs 50", () => {
    const room = new Room(v10, { powerLevels: null, joinRule: "public" });
    room.member(BOB, "join");
    room.send(ALICE, "m.room.name", { name: "n" }, "");
    room.refuse(BOB, "m.room.name", { name: "n" }, "", "7", /needs 50, has 0/);
    room.send(BOB, "m.room.message", { body: "b" });
  });
  test("8 a state key that is another user's ID (not in MSC3757 versions)", () => {
    const room = new Room(v11, { joinRule: "public", powerLevels: { users: { [ALICE]: 100 }, state_default: 0 } });
    room.member(BOB, "join");
    room.send(BOB, "m.custom", {}, BOB);
    room.refuse(ALICE, "m.custom", {}, BOB, "8", /belongs to another user/);
    room.refuse(BOB, "m.custom", {}, `${BOB}_DEVICE`, "8");
    room.send(BOB, "m.custom", {}, `_${ALICE}_DEVICE`); // not "@"-prefixed: no owner
  });
});

describe("rule 9: m.room.power_levels", () => {
  const base = { users: { [ALICE]: 100, [MOD]: 50 }, state_default: 50 };
  function room(version = v11) {
    const r = new Room(version, { joinRule: "public", powerLevels: base });
    r.member(MOD, "join");
    r.member(BOB, "join");
    return r;
  }
  const pl = (over: Record<string, unknown>) => ({ ...base, ...over });

  test("9.1-9.3 integers only and valid user IDs", () => {
    for (const version of [v10, v11]) {
      const r = room(version);
      r.refuse(ALICE, "m.room.power_levels", pl({ ban: "50" }), "", "9.1", /"ban" must be an integer/);
      r.refuse(ALICE, "m.room.power_levels", pl({ kick: true }), "", "9.1");
      r.refuse(ALICE, "m.room.power_levels", pl({ events: { "m.room.name": "50" } }), "", "9.1");
      r.refuse(ALICE, "m.room.power_levels", pl({ events: [] }), "", "9.1");
      r.refuse(ALICE, "m.room.power_levels", pl({ notifications: { room: "50" } }), "", "9.1");
      r.refuse(ALICE, "m.room.power_levels", pl({ users: { "not-a-user": 5 } }), "", "9.1", /valid user ID/);
      r.refuse(ALICE, "m.room.power_levels", pl({ users: { [ALICE]: "100" } }), "", "9.1");
    }
  });
  test("9.4 the first power levels event is allowed", () => {
    const r = new Room(v11, { powerLevels: null });
    r.send(ALICE, "m.room.power_levels", { users: { [ALICE]: 100 }, kick: 1000 }, "");
  });
  test("9.5 scalar levels: neither the old nor the new value may exceed yours", () => {
    const r = room();
    r.send(ALICE, "m.room.power_levels", pl({ ban: 100 }), "");
    r.refuse(MOD, "m.room.power_levels", pl({ ban: 40 }), "", "9.5", /"ban" from 100/);
    r.refuse(MOD, "m.room.power_levels", pl({ ban: 100, kick: 60 }), "", "9.5", /"kick" to 60/);
    r.send(MOD, "m.room.power_levels", pl({ ban: 100, kick: 40 }), "");
  });
  test("9.6/9.7 events and notifications entries", () => {
    const r = room();
    r.send(ALICE, "m.room.power_levels", pl({ events: { "m.room.tombstone": 100 }, notifications: { room: 100 } }), "");
    const keep = { events: { "m.room.tombstone": 100 }, notifications: { room: 100 } };
    r.refuse(MOD, "m.room.power_levels", pl({ ...keep, events: {} }), "", "9.5", /events\["m.room.tombstone"\] from 100/);
    r.refuse(MOD, "m.room.power_levels", pl({ ...keep, notifications: { room: 0 } }), "", "9.5", /notifications/);
    r.refuse(MOD, "m.room.power_levels", pl({ ...keep, events: { ...keep.events, "m.x": 51 } }), "", "9.5", /to 51/);
    r.send(MOD, "m.room.power_levels", pl({ ...keep, events: { ...keep.events, "m.x": 50 } }), "");
  });
  test("9.8/9.9 users: not those at or above you (except yourself), never above you", () => {
    const r = room();
    r.refuse(MOD, "m.room.power_levels", pl({ users: { [ALICE]: 0, [MOD]: 50 } }), "", "9.5", /@alice:hs/);
    r.refuse(MOD, "m.room.power_levels", pl({ users: { [ALICE]: 100, [MOD]: 50, [BOB]: 60 } }), "", "9.5", /above your own/);
    r.send(MOD, "m.room.power_levels", pl({ users: { [ALICE]: 100, [MOD]: 50, [BOB]: 50 } }), "");
    r.refuse(MOD, "m.room.power_levels", pl({ users: { [ALICE]: 100, [MOD]: 50, [BOB]: 0 } }), "", "9.5", /not below your own/);
    r.send(MOD, "m.room.power_levels", pl({ users: { [ALICE]: 100, [MOD]: 10, [BOB]: 50 } }), ""); // demoting yourself
  });
  test("7 applies to power levels too", () => {
    room().refuse(BOB, "m.room.power_levels", pl({}), "", "7", /m\.room\.power_levels \(needs 50, has 0\)/);
  });
});

describe("auth events selection and rule 2", () => {
  test("authEventTypes follows the server-server spec", () => {
    assert.deepEqual(authEventTypes("m.room.create", "", ALICE, {}, v11), []);
    assert.deepEqual(authEventTypes("m.room.message", undefined, BOB, {}, v11), [
      ["m.room.create", ""],
      ["m.room.power_levels", ""],
      ["m.room.member", BOB],
    ]);
    assert.deepEqual(authEventTypes("m.room.member", BOB, BOB, { membership: "join", join_authorised_via_users_server: CAROL }, v11), [
      ["m.room.create", ""],
      ["m.room.power_levels", ""],
      ["m.room.member", BOB],
      ["m.room.join_rules", ""],
      ["m.room.member", CAROL],
    ]);
    assert.deepEqual(authEventTypes("m.room.member", BOB, ALICE, { membership: "invite", third_party_invite: { signed: { token: "t" } } }, v11), [
      ["m.room.create", ""],
      ["m.room.power_levels", ""],
      ["m.room.member", ALICE],
      ["m.room.member", BOB],
      ["m.room.join_rules", ""],
      ["m.room.third_party_invite", "t"],
    ]);
    assert.deepEqual(authEventTypes("m.room.member", BOB, ALICE, { membership: "ban" }, v11).length, 4);
  });
  test("checkAuthEventsList: duplicates, strays, missing create, other rooms", () => {
    const room = new Room(v11);
    const create = room.lookup("m.room.create", "")!;
    const power = room.lookup("m.room.power_levels", "")!;
    const alice = room.lookup("m.room.member", ALICE)!;
    const msg = room.make(ALICE, "m.room.message", {});
    checkAuthEventsList(msg, [create, power, alice], v11);
    expectAuthError(() => checkAuthEventsList(msg, [create, power, power], v11), "2.1");
    expectAuthError(() => checkAuthEventsList(msg, [create, alice, room.make(ALICE, "m.room.name", {}, "")], v11), "2.2");
    expectAuthError(() => checkAuthEventsList(msg, [power, alice], v11), "2.4");
    expectAuthError(() => checkAuthEventsList(msg, [create, { ...power, room_id: "!x:hs" }], v11), "2.5");
  });
});
