/** Building events, event ID determinism, redaction in room versions 10 and 11. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  buildEvent,
  BuildEventError,
  canonicalJson,
  CanonicalJsonError,
  checkEventLimits,
  EventLimitError,
  eventIdFor,
  getRoomVersion,
  isSupportedRoomVersion,
  publicKeyBase64,
  redact,
  redactsOf,
  ROOM_VERSIONS,
  DEFAULT_ROOM_VERSION,
  roomVersionStability,
  signingKeyFromSeed,
  signJson,
  toClientEvent,
  verifyContentHash,
  verifyEventSignature,
  verifyKeyFromBase64,
  type BuildEventInput,
  type Pdu,
  type RoomVersion,
} from "../src/events/index.js";

const key = signingKeyFromSeed("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1");
const signer = { serverName: "hs", keyId: "ed25519:a_test", privateKey: key };
const v10 = ROOM_VERSIONS["10"]!;
const v11 = ROOM_VERSIONS["11"]!;

function input(version: RoomVersion, extra: Partial<BuildEventInput> = {}): BuildEventInput {
  return {
    version,
    roomId: "!room:hs",
    sender: "@alice:hs",
    type: "m.room.message",
    content: { msgtype: "m.text", body: "hello" },
    prevEvents: ["$prev"],
    authEvents: ["$create", "$power", "$member"],
    depth: 5,
    originServerTs: 1_700_000_000_000,
    ...extra,
  };
}

describe("room versions", () => {
  test("exactly 10, 11, 12 and the two MSC3757 versions; the default is 11", () => {
    assert.deepEqual(Object.keys(ROOM_VERSIONS).sort(), ["10", "11", "12", "org.matrix.msc3757.10", "org.matrix.msc3757.11"]);
    assert.equal(DEFAULT_ROOM_VERSION, "11");
    assert.equal(roomVersionStability("10"), "stable");
    assert.equal(roomVersionStability("11"), "stable");
    assert.equal(roomVersionStability("org.matrix.msc3757.10"), "unstable");
    assert.equal(roomVersionStability("org.matrix.msc3757.11"), "unstable");
    assert.throws(() => roomVersionStability("9"), RangeError);
    assert.equal(getRoomVersion("toString"), undefined);
    assert.equal(roomVersionStability("12"), "stable");
    assert.ok(!isSupportedRoomVersion("13"));
  });

  test("the MSC3757 versions keep their base version's rules", () => {
    const m10 = ROOM_VERSIONS["org.matrix.msc3757.10"]!;
    const m11 = ROOM_VERSIONS["org.matrix.msc3757.11"]!;
    assert.deepEqual({ ...m10, id: "10", stability: "stable", msc3757OwnedStateKeys: false }, v10);
    assert.deepEqual({ ...m11, id: "11", stability: "stable", msc3757OwnedStateKeys: false }, v11);
    assert.ok(m10.msc3757OwnedStateKeys && m11.msc3757OwnedStateKeys);
  });
});

describe("buildEvent", () => {
  test("hashes, signs and names the event", () => {
    const { eventId, pdu } = buildEvent(input(v11), signer);
    assert.match(eventId, /^\$[A-Za-z0-9_-]{43}$/);
    assert.equal(eventId, eventIdFor(pdu, v11));
    assert.ok(verifyContentHash(pdu));
    assert.ok(verifyEventSignature(pdu, v11, "hs", "ed25519:a_test", verifyKeyFromBase64(publicKeyBase64(key))));
    assert.equal((pdu as unknown as Record<string, unknown>).origin, undefined, "no deprecated origin");
    assert.equal(pdu.state_key, undefined);
    assert.equal(pdu.unsigned, undefined);
  });

  test("event IDs are deterministic and cover what they must", () => {
    const a = buildEvent(input(v11), signer);
    const b = buildEvent(input(v11), signer);
    assert.equal(a.eventId, b.eventId);
    assert.equal(canonicalJson(a.pdu), canonicalJson(b.pdu));
    const changed = [
      input(v11, { content: { msgtype: "m.text", body: "hello!" } }),
      input(v11, { depth: 6 }),
      input(v11, { prevEvents: ["$other"] }),
      input(v11, { originServerTs: 1 }),
      input(v11, { sender: "@bob:hs" }),
    ];
    for (const other of changed) assert.notEqual(buildEvent(other, signer).eventId, a.eventId);
  });

  test("the event ID ignores unsigned and signatures, and survives redaction", () => {
    const { eventId, pdu } = buildEvent(input(v11), signer);
    const withUnsigned: Pdu = { ...pdu, unsigned: { age: 5, transaction_id: "t" } };
    assert.equal(eventIdFor(withUnsigned, v11), eventId);
    assert.equal(eventIdFor(signJson(pdu, "other", "ed25519:x", key), v11), eventId);
    assert.equal(eventIdFor(redact(pdu, v11), v11), eventId);
  });

  test("state keys, including the empty one", () => {
    const { pdu } = buildEvent(input(v11, { type: "m.room.topic", stateKey: "", content: { topic: "t" } }), signer);
    assert.equal(pdu.state_key, "");
  });

  test("redacts is top-level in v10 and in content in v11", () => {
    const r10 = buildEvent(input(v10, { type: "m.room.redaction", content: {}, redacts: "$target" }), signer).pdu;
    assert.equal(r10.redacts, "$target");
    assert.equal(r10.content.redacts, undefined);
    assert.equal(redactsOf(r10, v10), "$target");
    const r11 = buildEvent(input(v11, { type: "m.room.redaction", content: {}, redacts: "$target" }), signer).pdu;
    assert.equal(r11.redacts, undefined);
    assert.equal(r11.content.redacts, "$target");
    assert.equal(redactsOf(r11, v11), "$target");
    assert.throws(
      () => buildEvent(input(v11, { type: "m.room.redaction", content: { redacts: "$a" }, redacts: "$b" }), signer),
      BuildEventError,
    );
  });

  test("create: v10 fills content.creator, v11 does not", () => {
    const create = { type: "m.room.create", stateKey: "", content: { room_version: "10" }, prevEvents: [], authEvents: [], depth: 1 };
    assert.equal(buildEvent(input(v10, create), signer).pdu.content.creator, "@alice:hs");
    const c11 = buildEvent(input(v11, { ...create, content: { room_version: "11" } }), signer).pdu;
    assert.equal(c11.content.creator, undefined);
  });

  test("the caller's content is copied, not shared", () => {
    const content = { body: "x", nested: { n: 1 } };
    const { pdu } = buildEvent(input(v11, { content }), signer);
    content.nested.n = 2;
    assert.deepEqual(pdu.content.nested, { n: 1 });
    assert.ok(verifyContentHash(pdu));
  });

  test("bad input: floats, oversize events, long state keys, bad depth or IDs", () => {
    assert.throws(() => buildEvent(input(v11, { content: { n: 1.5 } }), signer), CanonicalJsonError);
    assert.throws(
      () => buildEvent(input(v11, { content: { body: "x".repeat(70_000) } }), signer),
      (e: unknown) => e instanceof EventLimitError && e.field === "event",
    );
    assert.throws(
      () => buildEvent(input(v11, { type: "m.x", stateKey: "k".repeat(256), content: {} }), signer),
      (e: unknown) => e instanceof EventLimitError && e.field === "state_key" && e.limit === 255,
    );
    assert.throws(() => buildEvent(input(v11, { type: "t".repeat(256) }), signer), EventLimitError);
    assert.throws(() => buildEvent(input(v11, { depth: 1.5 }), signer), BuildEventError);
    assert.throws(() => buildEvent(input(v11, { depth: -1 }), signer), BuildEventError);
    assert.throws(() => buildEvent(input(v11, { prevEvents: ["nope"] }), signer), BuildEventError);
  });

  test("MSC3757 versions allow state keys up to 511 bytes", () => {
    const m11 = ROOM_VERSIONS["org.matrix.msc3757.11"]!;
    const { pdu } = buildEvent(input(m11, { type: "m.x", stateKey: "k".repeat(300), content: {} }), signer);
    assert.doesNotThrow(() => checkEventLimits(pdu, m11));
    assert.throws(
      () => buildEvent(input(m11, { type: "m.x", stateKey: "k".repeat(512), content: {} }), signer),
      (e: unknown) => e instanceof EventLimitError && e.field === "state_key" && e.limit === 511,
    );
  });
});

function pdu(type: string, content: Record<string, unknown>, extra: Record<string, unknown> = {}): Pdu {
  return {
    auth_events: ["$a"],
    content,
    depth: 3,
    hashes: { sha256: "abc" },
    origin_server_ts: 10,
    prev_events: ["$p"],
    room_id: "!r:hs",
    sender: "@s:hs",
    signatures: { hs: { "ed25519:1": "sig" } },
    type,
    unsigned: { age: 1 },
    ...extra,
  } as Pdu;
}

describe("redaction: room version 10 vs 11", () => {
  test("top-level keys: v10 keeps origin, membership, prev_state; v11 drops them; both drop unsigned", () => {
    const event = pdu("m.room.message", { body: "x" }, { origin: "hs", membership: "join", prev_state: [], extra: 1 });
    const r10 = redact(event, v10) as unknown as Record<string, unknown>;
    const r11 = redact(event, v11) as unknown as Record<string, unknown>;
    for (const k of ["origin", "membership", "prev_state"]) {
      assert.ok(k in r10, `v10 keeps ${k}`);
      assert.ok(!(k in r11), `v11 drops ${k}`);
    }
    for (const r of [r10, r11]) {
      assert.equal(r.unsigned, undefined);
      assert.equal(r.extra, undefined);
      assert.deepEqual(r.content, {});
      for (const k of ["auth_events", "depth", "hashes", "origin_server_ts", "prev_events", "room_id", "sender", "signatures", "type"]) {
        assert.ok(k in r, `keeps ${k}`);
      }
    }
  });

  test("m.room.create: v10 keeps only creator, v11 keeps all content", () => {
    const event = pdu("m.room.create", { creator: "@s:hs", room_version: "10", "m.federate": false, type: "m.space" }, { state_key: "" });
    assert.deepEqual(redact(event, v10).content, { creator: "@s:hs" });
    assert.deepEqual(redact(event, v11).content, event.content);
    assert.equal(redact(event, v11).state_key, "");
  });

  test("m.room.power_levels: invite survives only in v11", () => {
    const content = { ban: 50, events: { "m.room.name": 50 }, events_default: 0, invite: 0, kick: 50, redact: 50, state_default: 50, users: { "@s:hs": 100 }, users_default: 0, notifications: { room: 50 } };
    const event = pdu("m.room.power_levels", content, { state_key: "" });
    const { invite: _invite, notifications: _n, ...withoutInvite } = content;
    assert.deepEqual(redact(event, v10).content, withoutInvite);
    const { notifications: _n2, ...withInvite } = content;
    assert.deepEqual(redact(event, v11).content, withInvite);
  });

  test("m.room.redaction: v10 drops the top-level redacts, v11 keeps content.redacts", () => {
    const r10 = redact(pdu("m.room.redaction", { reason: "spam" }, { redacts: "$t" }), v10);
    assert.equal(r10.redacts, undefined);
    assert.deepEqual(r10.content, {});
    const r11 = redact(pdu("m.room.redaction", { redacts: "$t", reason: "spam" }), v11);
    assert.deepEqual(r11.content, { redacts: "$t" });
  });

  test("m.room.member: both keep membership and join_authorised_via_users_server; v11 keeps third_party_invite.signed", () => {
    const signed = { mxid: "@s:hs", token: "tok", signatures: {} };
    const content = {
      membership: "invite",
      displayname: "S",
      join_authorised_via_users_server: "@a:hs",
      third_party_invite: { display_name: "s@example.org", signed },
    };
    const event = pdu("m.room.member", content, { state_key: "@s:hs" });
    assert.deepEqual(redact(event, v10).content, { membership: "invite", join_authorised_via_users_server: "@a:hs" });
    assert.deepEqual(redact(event, v11).content, {
      membership: "invite",
      join_authorised_via_users_server: "@a:hs",
      third_party_invite: { signed },
    });
  });

  test("join rules and history visibility keep their keys in both", () => {
    const jr = pdu("m.room.join_rules", { join_rule: "restricted", allow: [{ type: "m.room_membership" }], x: 1 }, { state_key: "" });
    const hv = pdu("m.room.history_visibility", { history_visibility: "shared", x: 1 }, { state_key: "" });
    for (const v of [v10, v11]) {
      assert.deepEqual(redact(jr, v).content, { join_rule: "restricted", allow: [{ type: "m.room_membership" }] });
      assert.deepEqual(redact(hv, v).content, { history_visibility: "shared" });
    }
  });

  test("redact does not modify its input, and the signature still verifies afterwards", () => {
    const built = buildEvent(input(v11, { content: { body: "secret" } }), signer).pdu;
    const before = canonicalJson(built);
    const redacted = redact(built, v11);
    assert.equal(canonicalJson(built), before);
    assert.ok(verifyEventSignature(redacted, v11, "hs", "ed25519:a_test", key));
    assert.equal(verifyContentHash(redacted), false, "the content hash covers the full content");
  });
});

describe("toClientEvent", () => {
  test("drops federation keys and adds redacts both ways for redactions", () => {
    const { eventId, pdu: r10 } = buildEvent(input(v10, { type: "m.room.redaction", content: {}, redacts: "$t" }), signer);
    const c10 = toClientEvent(r10, eventId, v10, { age: 3 });
    assert.deepEqual(c10, {
      content: { redacts: "$t" },
      event_id: eventId,
      origin_server_ts: r10.origin_server_ts,
      room_id: "!room:hs",
      sender: "@alice:hs",
      type: "m.room.redaction",
      unsigned: { age: 3 },
      redacts: "$t",
    });
    const { pdu: r11 } = buildEvent(input(v11, { type: "m.room.redaction", content: {}, redacts: "$t" }), signer);
    const c11 = toClientEvent(r11, "$id", v11);
    assert.equal(c11.redacts, "$t");
    assert.deepEqual(c11.content, { redacts: "$t" });
  });

  test("without the room version, a redaction's target is read at the top level first, then in content", () => {
    const { eventId, pdu: r10 } = buildEvent(input(v10, { type: "m.room.redaction", content: { reason: "r" }, redacts: "$t" }), signer);
    const c10 = toClientEvent(r10, eventId);
    assert.equal(c10.redacts, "$t");
    assert.deepEqual(c10.content, { reason: "r", redacts: "$t" });
    const { pdu: r11 } = buildEvent(input(v11, { type: "m.room.redaction", content: {}, redacts: "$t" }), signer);
    const c11 = toClientEvent(r11, "$id");
    assert.equal(c11.redacts, "$t");
    assert.deepEqual(c11.content, { redacts: "$t" });
    // Before room version 11, content.redacts is only content: the top-level key is the target.
    const spoofed = toClientEvent({ ...r10, content: { redacts: "$other" } }, eventId);
    assert.equal(spoofed.redacts, "$t");
    assert.deepEqual(spoofed.content, { redacts: "$t" });
    assert.deepEqual(toClientEvent({ ...r10, content: { redacts: "$other" } }, eventId, v10).content, { redacts: "$t" });
  });
});
