/**
 * MSC3757 state-key ownership in the org.matrix.msc3757.* room versions.
 * Rule text: matrix-org/matrix-spec-proposals, proposals/3757-restricting-who-can-overwrite-a-
 * state-event.md (rule 8 replaced by 8.1.1-8.1.3 and 8.2).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  AuthError,
  authEventTypes,
  buildEvent,
  checkEventAuth,
  EventLimitError,
  eventIdFor,
  ROOM_VERSIONS,
  signingKeyFromSeed,
  stateKeyOwner,
  type Pdu,
  type RoomVersion,
} from "../src/events/index.js";

const signer = {
  serverName: "hs",
  keyId: "ed25519:t",
  privateKey: signingKeyFromSeed("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"),
};
const ALICE = "@alice:hs"; // 100
const MOD = "@mod:hs"; // 50
const BOB = "@bob:hs"; // 0
const CAROL = "@carol:hs"; // 0
const CALL = "org.matrix.msc3401.call.member";

class Room {
  private readonly state = new Map<string, Pdu>();
  private last = "";
  private depth = 0;

  constructor(readonly version: RoomVersion) {
    this.send(ALICE, "m.room.create", { room_version: version.id }, "");
    this.send(ALICE, "m.room.member", { membership: "join" }, ALICE);
    this.send(ALICE, "m.room.power_levels", { users: { [ALICE]: 100, [MOD]: 50 }, events: { [CALL]: 0 } }, "");
    this.send(ALICE, "m.room.join_rules", { join_rule: "public" }, "");
    for (const u of [MOD, BOB, CAROL]) this.send(u, "m.room.member", { membership: "join" }, u);
  }

  lookup = (type: string, stateKey: string): Pdu | undefined => this.state.get(`${type}|${stateKey}`);

  make(sender: string, type: string, content: Record<string, unknown>, stateKey?: string): Pdu {
    const authEvents = authEventTypes(type, stateKey, sender, content, this.version)
      .map(([t, k]) => this.lookup(t, k))
      .filter((e): e is Pdu => e !== undefined)
      .map((e) => eventIdFor(e, this.version));
    const prevEvents = this.last ? [this.last] : [];
    const input = { version: this.version, roomId: "!r:hs", sender, type, stateKey, content, prevEvents, authEvents };
    return buildEvent({ ...input, depth: ++this.depth, originServerTs: this.depth }, signer).pdu;
  }

  send(sender: string, type: string, content: Record<string, unknown>, stateKey?: string): Pdu {
    const pdu = this.make(sender, type, content, stateKey);
    checkEventAuth(pdu, this.lookup, this.version);
    if (typeof pdu.state_key === "string") this.state.set(`${pdu.type}|${pdu.state_key}`, pdu);
    this.last = eventIdFor(pdu, this.version);
    return pdu;
  }

  /** Sends a call membership with the given key and asserts the AuthError. */
  refuse(sender: string, stateKey: string, rule: string, message?: RegExp): void {
    const pdu = this.make(sender, CALL, {}, stateKey);
    this.refusePdu(pdu, rule, message);
  }

  refusePdu(pdu: Pdu, rule: string, message?: RegExp): void {
    assert.throws(
      () => checkEventAuth(pdu, this.lookup, this.version),
      (e: unknown) => {
        assert.ok(e instanceof AuthError, String(e));
        assert.equal(e.rule, rule, e.message);
        if (message) assert.match(e.message, message);
        return true;
      },
    );
  }
}

const MSC_VERSIONS = [ROOM_VERSIONS["org.matrix.msc3757.10"]!, ROOM_VERSIONS["org.matrix.msc3757.11"]!];

for (const version of MSC_VERSIONS) {
  describe(`MSC3757 in ${version.id}`, () => {
    test("your own keys: exactly your user ID, or it followed by _ and anything", () => {
      const room = new Room(version);
      room.send(BOB, CALL, { device_id: "DEV" }, `${BOB}_DEV_m.call`);
      room.send(BOB, CALL, {}, BOB);
      room.send(BOB, CALL, {}, `${BOB}_`);
    });

    test("another user's key is refused with a clear reason", () => {
      const room = new Room(version);
      room.send(BOB, CALL, {}, `${BOB}_DEV_m.call`);
      room.refuse(CAROL, `${BOB}_DEV_m.call`, "8.1.3", /belongs to @bob:hs; .*\(you have 0, they have 0\)/);
      room.refuse(CAROL, BOB, "8.1.3");
      room.refuse(BOB, `${MOD}_DEV`, "8.1.3", /you have 0, they have 50/);
      room.refuse(MOD, `${ALICE}_DEV`, "8.1.3");
    });

    test("a higher power level may overwrite, including an exact user ID key", () => {
      const room = new Room(version);
      room.send(BOB, CALL, { device_id: "DEV" }, `${BOB}_DEV_m.call`);
      room.send(MOD, CALL, {}, `${BOB}_DEV_m.call`);
      room.send(MOD, CALL, {}, BOB);
      room.send(ALICE, CALL, {}, `${MOD}_X`);
    });

    test("owning a key does not bypass the required power level (rule 7)", () => {
      const room = new Room(version);
      room.refusePdu(room.make(BOB, "m.other", {}, `${BOB}_x`), "7", /needs 50, has 0/);
    });

    test("a key that starts with @ but not with a valid user ID is refused, even for the creator", () => {
      const room = new Room(version);
      room.refuse(ALICE, "@oops", "8.1.1", /neither is a user ID/);
      room.refuse(ALICE, "@:hs_x", "8.1.1");
      room.refuse(ALICE, "@bob:bad host_x", "8.1.1");
      assert.equal(stateKeyOwner("@bob:hs_DEV_m.call"), BOB);
      assert.equal(stateKeyOwner("@bob:hs:8448_DEV"), "@bob:hs:8448");
      assert.equal(stateKeyOwner("_@bob:hs_DEV"), undefined);
    });

    test("size: 511 bytes (255-byte user ID, _, 255 bytes) is fine; 512 is refused", () => {
      const room = new Room(version);
      const longUser = `@${"u".repeat(251)}:hs`; // 255 bytes
      assert.equal(Buffer.byteLength(longUser), 255);
      const key511 = `${longUser}_${"k".repeat(255)}`;
      assert.equal(Buffer.byteLength(key511), 511);
      room.send(ALICE, CALL, {}, key511);
      // buildEvent refuses a 512-byte key outright…
      assert.throws(() => room.make(ALICE, CALL, {}, `${key511}k`), EventLimitError);
      // …and so do the auth rules, for a PDU that arrives with one.
      const pdu = room.make(ALICE, CALL, {}, key511);
      room.refusePdu({ ...pdu, state_key: `${key511}k` }, "8.1.2", /257 bytes; the limit is 256/);
    });

    test("size: the suffix after the user ID is at most 256 bytes, other keys at most 255", () => {
      const room = new Room(version);
      room.send(BOB, CALL, {}, `${BOB}_${"k".repeat(255)}`);
      room.refuse(BOB, `${BOB}_${"k".repeat(256)}`, "8.1.2");
      room.send(BOB, CALL, {}, "k".repeat(255));
      room.refuse(BOB, "k".repeat(256), "8.2", /256 bytes; the limit is 255/);
    });

    test("an underscore-prefixed key (_@user…) has no owner under the MSC", () => {
      const room = new Room(version);
      room.send(BOB, CALL, {}, `_${BOB}_DEV_m.call`);
      room.send(CAROL, CALL, {}, `_${BOB}_DEV_m.call`);
    });
  });
}

describe("without MSC3757 (room version 11)", () => {
  test("a suffixed key is refused even for its owner; others' exact keys are refused even for higher levels", () => {
    const room = new Room(ROOM_VERSIONS["11"]!);
    room.refuse(BOB, `${BOB}_DEV_m.call`, "8", /belongs to another user/);
    room.refuse(MOD, BOB, "8");
    room.send(BOB, CALL, {}, BOB);
    room.send(BOB, CALL, {}, `_${BOB}_DEV_m.call`);
  });
});
