/**
 * Checks on PDUs from other servers (format, signatures, content hashes): real signed events
 * pass, and hostile ones are dropped (or, for a wrong content hash, redacted) without a throw.
 * The last block checks events through a real KeyRing that fetches the signer's key over TLS.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { buildEvent, eventIdFor, getRoomVersion, hashAndSignEvent, ROOM_VERSIONS, signEvent, type Pdu, type RoomVersion } from "../src/events/index.js";
import { checkPduFormat, MAX_AUTH_EVENTS, MAX_PREV_EVENTS } from "../src/events/pdu_format.js";
import { PduChecker, type VerifyKeySource } from "../src/services/federation/pdu_checks.js";
import { TestFederation, type FederatedServer } from "./helpers/federation.js";

const v10 = ROOM_VERSIONS["10"]!;
const v11 = ROOM_VERSIONS["11"]!;
const v12: RoomVersion | undefined = getRoomVersion("12");
const NOW = 1_760_000_000_000;

function keyPair(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync("ed25519");
}

const remote = keyPair();
const authoriser = keyPair();
const forger = keyPair();
const REMOTE = { serverName: "remote.test", keyId: "ed25519:r1", privateKey: remote.privateKey };
const AUTHORISER = { serverName: "auth.test", keyId: "ed25519:a1", privateKey: authoriser.privateKey };

/** Keys as a KeyRing would give them: each valid until a time. */
class FakeKeys implements VerifyKeySource {
  readonly keys = new Map<string, { key: KeyObject; until: number }>();
  readonly asked: string[] = [];
  add(server: string, keyId: string, key: KeyObject, until = Number.MAX_SAFE_INTEGER): this {
    this.keys.set(`${server} ${keyId}`, { key, until });
    return this;
  }
  async verifyKey(server: string, keyId: string, validAt: number): Promise<KeyObject | undefined> {
    this.asked.push(`${server} ${keyId}`);
    const k = this.keys.get(`${server} ${keyId}`);
    return k && k.until >= validAt ? k.key : undefined;
  }
}

const keys = new FakeKeys().add("remote.test", "ed25519:r1", remote.publicKey).add("auth.test", "ed25519:a1", authoriser.publicKey);
const checker = new PduChecker(keys);

const HASH = "$" + "A".repeat(43);
const HASH2 = "$" + "B".repeat(43);

function message(version: RoomVersion, extra: { content?: Record<string, unknown>; prev?: string[]; auth?: string[]; ts?: number } = {}): Pdu {
  return buildEvent(
    {
      version,
      roomId: "!room:remote.test",
      sender: "@bob:remote.test",
      type: "m.room.message",
      content: extra.content ?? { msgtype: "m.text", body: "hello" },
      prevEvents: extra.prev ?? [HASH],
      authEvents: extra.auth ?? [HASH2],
      depth: 5,
      originServerTs: extra.ts ?? NOW,
    },
    REMOTE,
  ).pdu;
}

/** A copy with one key changed (or removed, for `undefined`), keeping the signature. */
function tampered(pdu: Pdu, key: string, value: unknown): Record<string, unknown> {
  const copy = structuredClone(pdu) as unknown as Record<string, unknown>;
  if (value === undefined) delete copy[key];
  else copy[key] = value;
  return copy;
}

async function dropped(raw: unknown, version: RoomVersion, why: RegExp): Promise<void> {
  const result = await checker.check(raw, version);
  if (result.ok) assert.fail(`expected the event to be dropped: ${result.eventId}`);
  if (!result.ok) assert.match(result.reason, why);
}

describe("PDU checks: real signed events", () => {
  for (const version of [v10, v11, ...(v12 ? [v12] : [])]) {
    test(`room version ${version.id}: a signed event passes, with its reference-hash event ID`, async () => {
      const roomId = version.eventFormat === 4 ? "!" + "C".repeat(43) : "!room:remote.test";
      const pdu = buildEvent(
        { version, roomId, sender: "@bob:remote.test", type: "m.room.message", content: { body: "hi" }, prevEvents: [HASH], authEvents: [HASH2], depth: 3, originServerTs: NOW },
        REMOTE,
      );
      const result = await checker.check(JSON.parse(JSON.stringify(pdu.pdu)), version);
      assert.ok(result.ok, JSON.stringify(result));
      assert.equal(result.eventId, pdu.eventId);
      assert.equal(result.redacted, false);
      assert.deepEqual(result.pdu, pdu.pdu);
    });
  }

  test("a restricted join needs the authorising server's signature too", async () => {
    const input = {
      version: v11,
      roomId: "!room:auth.test",
      sender: "@bob:remote.test",
      type: "m.room.member",
      stateKey: "@bob:remote.test",
      content: { membership: "join", join_authorised_via_users_server: "@admin:auth.test" },
      prevEvents: [HASH],
      authEvents: [HASH2],
      depth: 9,
      originServerTs: NOW,
    };
    const onlySender = buildEvent(input, REMOTE).pdu;
    await dropped(onlySender, v11, /not signed by auth\.test/);
    const both = hashAndSignEvent(onlySender, v11, AUTHORISER);
    const result = await checker.check(both, v11);
    assert.ok(result.ok, JSON.stringify(result));
    assert.deepEqual(Object.keys(result.pdu.signatures).sort(), ["auth.test", "remote.test"]);
    // A join that is not restricted needs no second signature.
    const plain = buildEvent({ ...input, content: { membership: "join" } }, REMOTE).pdu;
    assert.ok((await checker.check(plain, v11)).ok);
    await dropped(buildEvent({ ...input, content: { membership: "join", join_authorised_via_users_server: 5 } }, REMOTE).pdu, v11, /not a user ID/);
  });

  test("unsigned keeps only what another server may set", async () => {
    const pdu = { ...message(v11), unsigned: { age: 12, "m.relations": { x: 1 }, redacted_because: {} } };
    const result = await checker.check(pdu, v11);
    assert.ok(result.ok);
    assert.deepEqual(result.pdu.unsigned, { age: 12 });
    const notObject = await checker.check({ ...message(v11), unsigned: "nope" }, v11);
    assert.ok(notObject.ok);
    assert.equal(notObject.pdu.unsigned, undefined);
  });

  test("exactly 20 prev_events and 10 auth_events are fine", async () => {
    const ids = (n: number) => Array.from({ length: n }, (_, i) => "$" + String(i).padStart(43, "x"));
    const result = await checker.check(message(v11, { prev: ids(MAX_PREV_EVENTS), auth: ids(MAX_AUTH_EVENTS) }), v11);
    assert.ok(result.ok, JSON.stringify(result));
  });
});

describe("PDU checks: hostile events", () => {
  test("a forged signature (right key ID, wrong key) is dropped", async () => {
    const forged = hashAndSignEvent({ ...message(v11), signatures: {} }, v11, { ...REMOTE, privateKey: forger.privateKey });
    await dropped(forged, v11, /signature of remote\.test by ed25519:r1 is not valid/);
  });

  test("a signature by an unknown key is dropped, and so is an unsigned event", async () => {
    const unknown = hashAndSignEvent({ ...message(v11), signatures: {} }, v11, { ...REMOTE, keyId: "ed25519:nobody" });
    await dropped(unknown, v11, /no key of remote\.test/);
    await dropped({ ...message(v11), signatures: {} }, v11, /not signed by remote\.test/);
    // Another server's signature does not stand in for the sender's.
    const other = hashAndSignEvent({ ...message(v11), signatures: {} }, v11, AUTHORISER);
    await dropped(other, v11, /not signed by remote\.test/);
  });

  test("a key that expired before origin_server_ts does not verify the event", async () => {
    const old = keyPair();
    const ring = new FakeKeys().add("remote.test", "ed25519:old", old.publicKey, NOW - 1);
    const signedWithOld = hashAndSignEvent({ ...message(v11), signatures: {} }, v11, { ...REMOTE, keyId: "ed25519:old", privateKey: old.privateKey });
    const late = await new PduChecker(ring).check(signedWithOld, v11);
    assert.equal(late.ok, false);
    const earlier = hashAndSignEvent({ ...message(v11, { ts: NOW - 10 }), signatures: {} }, v11, { ...REMOTE, keyId: "ed25519:old", privateKey: old.privateKey });
    assert.ok((await new PduChecker(ring).check(earlier, v11)).ok);
    assert.ok(ring.asked.every((a) => a === "remote.test ed25519:old"));
  });

  test("a wrong content hash: the event is kept, redacted, under the same event ID", async () => {
    for (const version of [v10, v11]) {
      const pdu = message(version);
      // The body is not covered by the signature (it is redacted away) but is by the hash.
      const changed = { ...pdu, content: { msgtype: "m.text", body: "something else" } };
      const result = await checker.check(changed, version);
      assert.ok(result.ok, JSON.stringify(result));
      assert.equal(result.redacted, true);
      assert.deepEqual(result.pdu.content, {});
      assert.equal(result.eventId, eventIdFor(pdu, version));
      assert.deepEqual(result.pdu.signatures, pdu.signatures);
      // A hash that is not even Base64 (but signed as it is) is a mismatch too.
      const garbage = await checker.check(signEvent({ ...pdu, hashes: { sha256: "!!" } }, version, REMOTE), version);
      assert.ok(garbage.ok && garbage.redacted);
    }
    // Changing what the signature covers is a forgery, not a hash mismatch.
    await dropped({ ...message(v11), depth: 6 }, v11, /not valid/);
  });

  test("not canonical JSON: floats, integers out of range, lone surrogates", async () => {
    await dropped(tampered(message(v11), "content", { body: "x", n: 1.5 }), v11, /canonical JSON/);
    await dropped(tampered(message(v11), "content", { body: "x", n: 2 ** 60 }), v11, /canonical JSON/);
    await dropped(tampered(message(v11), "content", { body: "x\uD800" }), v11, /canonical JSON/);
    await dropped(tampered(message(v11), "depth", 2 ** 53), v11, /depth/);
  });

  test("too many prev_events or auth_events", async () => {
    const ids = (n: number) => Array.from({ length: n }, (_, i) => "$" + String(i).padStart(43, "x"));
    await dropped(message(v11, { prev: ids(MAX_PREV_EVENTS + 1) }), v11, /prev_events has 21 entries/);
    await dropped(message(v11, { auth: ids(MAX_AUTH_EVENTS + 1) }), v11, /auth_events has 11 entries/);
    await dropped(tampered(message(v11), "prev_events", ["$short"]), v11, /not an event ID/);
    await dropped(tampered(message(v11), "auth_events", [[HASH, { sha256: "x" }]]), v11, /not an event ID/);
  });

  test("an event over 65,536 bytes is dropped", async () => {
    await dropped(tampered(message(v11), "content", { body: "x".repeat(70_000) }), v11, /65536/);
    // Large padding in unsigned is cut before the size counts; in a signed key it is not.
    const big = tampered(message(v11), "unsigned", { junk: "x".repeat(70_000) });
    assert.ok((await checker.check(big, v11)).ok);
  });

  test("missing required keys", async () => {
    for (const key of ["type", "sender", "room_id", "content", "depth", "origin_server_ts", "prev_events", "auth_events", "hashes", "signatures"]) {
      await dropped(tampered(message(v11), key, undefined), v11, new RegExp(key === "hashes" ? "hashes" : key));
    }
  });

  test("wrong types", async () => {
    const cases: [string, unknown, RegExp][] = [
      ["type", 5, /type/],
      ["sender", "bob", /sender/],
      ["sender", ["@bob:remote.test"], /sender/],
      ["room_id", "room", /room_id/],
      ["room_id", "!room:bad host", /room_id/],
      ["content", [], /content/],
      ["content", "text", /content/],
      ["depth", "5", /depth/],
      ["depth", -1, /depth/],
      ["depth", 1.5, /depth/],
      ["origin_server_ts", "now", /origin_server_ts/],
      ["origin_server_ts", -5, /origin_server_ts/],
      ["prev_events", "$x", /prev_events/],
      ["hashes", { sha256: 5 }, /hashes/],
      ["hashes", "abc", /hashes/],
      ["signatures", { "remote.test": "sig" }, /signatures/],
      ["signatures", { "remote.test": { "ed25519:r1": 5 } }, /signatures/],
      ["redacts", 5, /redacts/],
    ];
    for (const [key, value, why] of cases) await dropped(tampered(message(v10), key, value), v10, why);
  });

  test("a state_key that is not a string", async () => {
    for (const value of [5, null, {}, ["a"], true]) await dropped(tampered(message(v11), "state_key", value), v11, /state_key/);
  });

  test("not an event at all, and deep nesting, never throw", async () => {
    for (const raw of [null, undefined, 5, "event", [], [message(v11)], new Map()]) {
      await dropped(raw, v11, /not a JSON object/);
    }
    let deep: unknown = {};
    for (let i = 0; i < 100_000; i++) deep = [deep];
    await dropped(tampered(message(v11), "content", { deep }), v11, /./);
    const cyclic = tampered(message(v11), "content", {}) as { content: Record<string, unknown> };
    cyclic.content.self = cyclic.content;
    await dropped(cyclic, v11, /./);
  });

  test("field lengths: over 255 characters drops; over 255 bytes only is kept as rejected before v12", async () => {
    const state = (stateKey: string, version: RoomVersion) =>
      hashAndSignEvent(
        {
          auth_events: [HASH2],
          content: {},
          depth: 2,
          hashes: { sha256: "" },
          origin_server_ts: NOW,
          prev_events: [HASH],
          room_id: version.eventFormat === 4 ? "!" + "C".repeat(43) : "!room:remote.test",
          sender: "@bob:remote.test",
          signatures: {},
          state_key: stateKey,
          type: "m.custom",
        },
        version,
        REMOTE,
      );
    await dropped(state("k".repeat(256), v11), v11, /state_key is longer than 255 characters/);
    const wide = await checker.check(state("é".repeat(200), v11), v11);
    assert.ok(wide.ok, JSON.stringify(wide));
    assert.match(wide.rejectedReason ?? "", /state_key is longer than 255 bytes/);
    const fine = await checker.check(state("é".repeat(100), v11), v11);
    assert.ok(fine.ok && fine.rejectedReason === undefined);
    if (v12) await dropped(state("é".repeat(200), v12), v12, /255 bytes/);
  });

  test("the format check alone is pure and reports the first problem", () => {
    const result = checkPduFormat({ type: "m.room.message" }, v11);
    assert.deepEqual(result, { ok: false, reason: "sender is missing or not a user ID" });
  });
});

describe("PDU checks: room version 12 create events", { skip: v12 === undefined && "room version 12 is not supported yet" }, () => {
  const version = v12!;
  const create = () =>
    buildEvent({ version, roomId: "", sender: "@bob:remote.test", type: "m.room.create", stateKey: "", content: { room_version: "12" }, prevEvents: [], authEvents: [], depth: 1, originServerTs: NOW }, REMOTE);

  test("a create event has no room_id; the room ID derives from it", async () => {
    const built = create();
    const result = await checker.check(built.pdu, version);
    assert.ok(result.ok, JSON.stringify(result));
    assert.equal(result.eventId, built.eventId);
    assert.equal((result.pdu as Partial<Pdu>).room_id, undefined);
  });

  test("a create event with a room_id, or another event with a room ID of the old form, is dropped", async () => {
    await dropped({ ...create().pdu, room_id: "!" + "C".repeat(43) }, version, /no room_id/);
    await dropped(message(version), version, /room_id/);
  });
});

describe("PDU checks through a real KeyRing", () => {
  const fed = new TestFederation(["a.test", "b.test"]);
  let a: FederatedServer;
  let b: FederatedServer;

  before(async () => {
    await fed.frontsUp();
    a = await fed.start("a.test");
    b = await fed.start("b.test");
  });
  after(() => fed.close());

  test("b fetches a's key over TLS to check a's event, then drops a forgery", async () => {
    const key = a.server.homeserver.signingKey;
    const signer = { serverName: "a.test", keyId: key.keyId, privateKey: key.privateKey };
    const now = Date.now();
    const built = buildEvent(
      { version: v11, roomId: "!room:a.test", sender: "@alice:a.test", type: "m.room.message", content: { body: "hi" }, prevEvents: [HASH], authEvents: [HASH2], depth: 4, originServerTs: now },
      signer,
    );
    const bChecker = new PduChecker(b.server.homeserver.services.federation.keys);
    const seen = a.front.requests.length;
    const result = await bChecker.check(built.pdu, v11);
    assert.ok(result.ok, JSON.stringify(result));
    assert.equal(result.eventId, built.eventId);
    assert.ok(a.front.requests.slice(seen).includes("GET /_matrix/key/v2/server"));
    const forged = hashAndSignEvent({ ...built.pdu, signatures: {} }, v11, { ...signer, privateKey: forger.privateKey });
    const bad = await bChecker.check(forged, v11);
    assert.equal(bad.ok, false);
  });
});
