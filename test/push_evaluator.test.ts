/**
 * The push-rule evaluator against the spec's condition kinds, examples and default rules, plus
 * Synapse's MSC4075 ringing rules. Pure: no server, no storage.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { defaultPushRules, type PushRule, type Ruleset } from "../src/services/push/base_rules.js";
import { evaluatePush, matchingRule, parseKey, type PushEventContext } from "../src/services/push/evaluator.js";
import { compileGlob, matchWhole, matchWords } from "../src/services/push/glob.js";

const ME = "@alice:example.org";
const ROOM = "!room:example.org";
const RULES = defaultPushRules(ME);
type Event = Record<string, unknown>;

function ctx(event: Event, over: Partial<PushEventContext> = {}): PushEventContext {
  return {
    event: { room_id: ROOM, sender: "@bob:example.org", event_id: "$e", ...event },
    userId: ME,
    displayName: "Alice",
    memberCount: 5,
    senderPowerLevel: 0,
    notificationPowerLevels: { room: 50 },
    ...over,
  };
}
const msg = (body: string, extra: Record<string, unknown> = {}): Event => ({
  type: "m.room.message",
  content: { msgtype: "m.text", body, ...extra },
});
const ring = (mentions: Record<string, unknown>): Event => ({
  type: "org.matrix.msc4075.rtc.notification",
  content: { notification_type: "ring", "m.mentions": mentions, sender_ts: 1, lifetime: 30000 },
});
/** The deciding rule's ID, or undefined. */
const ruleId = (event: Event, over: Partial<PushEventContext> = {}, rules: Ruleset = RULES) => matchingRule(rules, ctx(event, over))?.rule_id;
const cloneRules = (): Ruleset => structuredClone(RULES);

describe("default rules: each fires for its event, and not for near misses", () => {
  const cases: [string, Event, Partial<PushEventContext>, string | undefined][] = [
    ["notice", msg("hi", { msgtype: "m.notice" }), {}, ".m.rule.suppress_notices"],
    ["not quite a notice", msg("hi", { msgtype: "m.notices" }), {}, ".m.rule.message"],
    ["invite for me", { type: "m.room.member", state_key: ME, content: { membership: "invite" } }, {}, ".m.rule.invite_for_me"],
    ["invite for someone else", { type: "m.room.member", state_key: "@carol:example.org", content: { membership: "invite" } }, {}, ".m.rule.member_event"],
    ["my join", { type: "m.room.member", state_key: ME, content: { membership: "join" } }, {}, ".m.rule.member_event"],
    ["user mention", msg("hey", { "m.mentions": { user_ids: [ME] } }), {}, ".m.rule.is_user_mention"],
    ["mention of a longer ID", msg("hey", { "m.mentions": { user_ids: [`${ME}2`] } }), {}, ".m.rule.message"],
    ["user_ids not an array", msg("hey", { "m.mentions": { user_ids: ME } }), {}, ".m.rule.message"],
    ["display name", msg("Hi alice!"), {}, ".m.rule.contains_display_name"],
    ["display name inside a word", msg("what malice"), {}, ".m.rule.message"],
    ["display name with m.mentions present", msg("Hi Alice", { "m.mentions": {} }), {}, ".m.rule.message"],
    ["no display name", msg("Hi Alice"), { displayName: null }, ".m.rule.contains_user_name"],
    ["room mention, PL 50", msg("all", { "m.mentions": { room: true } }), { senderPowerLevel: 50 }, ".m.rule.is_room_mention"],
    ["room mention, PL 49", msg("all", { "m.mentions": { room: true } }), { senderPowerLevel: 49 }, ".m.rule.message"],
    ["room mention as a string", msg("all", { "m.mentions": { room: "true" } }), { senderPowerLevel: 100 }, ".m.rule.message"],
    ["@room, PL 50", msg("@room lunch"), { senderPowerLevel: 50 }, ".m.rule.roomnotif"],
    ["@room, PL 0", msg("@room lunch"), {}, ".m.rule.message"],
    ["@room with m.mentions", msg("@room lunch", { "m.mentions": {} }), { senderPowerLevel: 100 }, ".m.rule.message"],
    ["@room inside a word", msg("x@roomy"), { senderPowerLevel: 100 }, ".m.rule.message"],
    ["tombstone", { type: "m.room.tombstone", state_key: "", content: { replacement_room: "!n:x" } }, {}, ".m.rule.tombstone"],
    ["tombstone not as state", { type: "m.room.tombstone", content: {} }, {}, undefined],
    ["reaction", { type: "m.reaction", content: { "m.relates_to": { rel_type: "m.annotation", event_id: "$x", key: "👍" } } }, {}, ".m.rule.reaction"],
    ["server ACL", { type: "m.room.server_acl", state_key: "", content: { allow: ["*"] } }, {}, ".m.rule.room.server_acl"],
    ["edit", msg("* fixed", { "m.relates_to": { rel_type: "m.replace", event_id: "$x" } }), {}, ".m.rule.suppress_edits"],
    ["thread reply", msg("reply", { "m.relates_to": { rel_type: "m.thread", event_id: "$x" } }), {}, ".m.rule.message"],
    ["localpart", msg("ping ALICE."), { displayName: "Ally" }, ".m.rule.contains_user_name"],
    ["localpart inside a word", msg("alice_bot said"), { displayName: "Ally" }, ".m.rule.message"],
    ["legacy call", { type: "m.call.invite", content: { call_id: "c", version: 1 } }, {}, ".m.rule.call"],
    ["encrypted DM", { type: "m.room.encrypted", content: { algorithm: "m.megolm.v1.aes-sha2", ciphertext: "x" } }, { memberCount: 2 }, ".m.rule.encrypted_room_one_to_one"],
    ["encrypted group", { type: "m.room.encrypted", content: { algorithm: "m.megolm.v1.aes-sha2" } }, { memberCount: 3 }, ".m.rule.encrypted"],
    ["DM message", msg("hello"), { memberCount: 2 }, ".m.rule.room_one_to_one"],
    ["group message", msg("hello"), { memberCount: 3 }, ".m.rule.message"],
    ["unknown state event", { type: "m.room.topic", state_key: "", content: { topic: "t" } }, {}, undefined],
  ];
  for (const [name, event, over, expected] of cases) {
    test(name, () => assert.equal(ruleId(event, over), expected));
  }

  test("outcomes: notify, highlight and sound as the rules say", () => {
    assert.deepEqual(evaluatePush(RULES, ctx(msg("Hi Alice"))), {
      ruleId: ".m.rule.contains_display_name",
      actions: ["notify", { set_tweak: "sound", value: "default" }, { set_tweak: "highlight" }],
      notify: true,
      highlight: true,
      sound: "default",
    });
    const roomMention = evaluatePush(RULES, ctx(msg("x", { "m.mentions": { room: true } }), { senderPowerLevel: 100 }));
    assert.equal(roomMention?.highlight, true);
    assert.equal(roomMention?.sound, undefined);
    assert.deepEqual(evaluatePush(RULES, ctx(msg("hello"))), { ruleId: ".m.rule.message", actions: ["notify"], notify: true, highlight: false });
    const dm = evaluatePush(RULES, ctx({ type: "m.room.encrypted", content: {} }, { memberCount: 2 }));
    assert.deepEqual([dm?.ruleId, dm?.sound, dm?.highlight], [".m.rule.encrypted_room_one_to_one", "default", false]);
    for (const silent of [msg("n", { msgtype: "m.notice" }), { type: "m.reaction", content: {} }, msg("e", { "m.relates_to": { rel_type: "m.replace" } })]) {
      assert.equal(evaluatePush(RULES, ctx(silent)), undefined);
    }
  });

  test("an enabled master rule silences everything, even an invite or a mention", () => {
    const rules = cloneRules();
    rules.override[0]!.enabled = true;
    const events = [msg("Hi Alice", { "m.mentions": { user_ids: [ME] } }), { type: "m.room.member", state_key: ME, content: { membership: "invite" } }, ring({ room: true })];
    for (const event of events) {
      assert.equal(ruleId(event, { senderPowerLevel: 100, memberCount: 2 }, rules), ".m.rule.master");
      assert.equal(evaluatePush(rules, ctx(event, { senderPowerLevel: 100, memberCount: 2 })), undefined);
    }
  });
});

describe("MSC4075 call-ringing rules", () => {
  test("served exactly as Synapse 1.163 serves them, after .m.rule.member_event", () => {
    const ids = RULES.override.map((r) => r.rule_id);
    assert.deepEqual(ids.slice(3, 7), [
      ".m.rule.member_event",
      ".org.matrix.msc4075.rule.rtc.invite_for_me",
      ".org.matrix.msc4075.rule.rtc.invite_for_room",
      ".m.rule.is_user_mention",
    ]);
    assert.deepEqual(RULES.override[4], {
      rule_id: ".org.matrix.msc4075.rule.rtc.invite_for_me",
      default: true,
      enabled: true,
      conditions: [
        { kind: "event_match", key: "type", pattern: "org.matrix.msc4075.rtc.notification" },
        { kind: "event_property_contains", key: "content.m\\.mentions.user_ids", value: ME },
      ],
      actions: ["notify", { set_tweak: "sound", value: "ring" }],
    });
    assert.deepEqual(RULES.override[5], {
      rule_id: ".org.matrix.msc4075.rule.rtc.invite_for_room",
      default: true,
      enabled: true,
      conditions: [
        { kind: "event_match", key: "type", pattern: "org.matrix.msc4075.rtc.notification" },
        { kind: "event_property_is", key: "content.m\\.mentions.room", value: true },
        { kind: "sender_notification_permission", key: "room" },
      ],
      actions: ["notify", { set_tweak: "sound", value: "ring" }],
    });
    const off = defaultPushRules(ME, { msc4075CallRules: false }).override.map((r) => r.rule_id);
    assert.ok(!off.some((id) => id.includes("msc4075")));
    assert.equal(off.length, ids.length - 2);
    const find = (rules: Ruleset) => rules.override.find((r) => r.rule_id === ".org.matrix.msc4075.rule.rtc.invite_for_me");
    assert.equal(find(defaultPushRules(ME, { msc4075CallRules: false })), undefined);
    assert.ok(find(defaultPushRules(ME)));
  });

  test("a room ring from a PL-100 sender rings", () => {
    const out = evaluatePush(RULES, ctx(ring({ user_ids: [], room: true }), { senderPowerLevel: 100 }));
    assert.deepEqual(out, { ruleId: ".org.matrix.msc4075.rule.rtc.invite_for_room", actions: ["notify", { set_tweak: "sound", value: "ring" }], notify: true, highlight: false, sound: "ring" });
  });

  test("a ring that mentions me rings, whoever sends it", () => {
    const out = evaluatePush(RULES, ctx(ring({ user_ids: [ME] })));
    assert.deepEqual([out?.ruleId, out?.sound], [".org.matrix.msc4075.rule.rtc.invite_for_me", "ring"]);
  });

  test("a room ring from a PL-0 sender in a group room: no rule notifies (it is not m.room.message)", () => {
    for (const memberCount of [5, 2]) {
      assert.equal(ruleId(ring({ user_ids: [], room: true }), { memberCount }), undefined);
      assert.equal(evaluatePush(RULES, ctx(ring({ user_ids: [], room: true }), { memberCount })), undefined);
    }
  });

  test("without the rules, the spec's mention rules take the rings (highlight, no ring sound)", () => {
    const rules = defaultPushRules(ME, { msc4075CallRules: false });
    const room = evaluatePush(rules, ctx(ring({ room: true }), { senderPowerLevel: 100 }));
    assert.deepEqual([room?.ruleId, room?.sound, room?.highlight], [".m.rule.is_room_mention", undefined, true]);
    assert.equal(evaluatePush(rules, ctx(ring({ user_ids: [ME] })))?.ruleId, ".m.rule.is_user_mention");
  });

  test("an encrypted ring in a DM is just an encrypted DM event to the server", () => {
    assert.equal(ruleId({ type: "m.room.encrypted", content: { ciphertext: "x" } }, { memberCount: 2 }), ".m.rule.encrypted_room_one_to_one");
  });
});

describe("condition kinds", () => {
  const override = (conditions: Record<string, unknown>[], actions: PushRule["actions"] = ["notify"]): Ruleset => ({
    override: [{ rule_id: "custom", default: false, enabled: true, conditions, actions }],
    content: [],
    room: [],
    sender: [],
    underride: [],
  });
  const holds = (cond: Record<string, unknown>, event: Event, over: Partial<PushEventContext> = {}) =>
    evaluatePush(override([cond]), ctx(event, over)) !== undefined;

  test("event_match: the spec's content.topic example", () => {
    const cond = { kind: "event_match", key: "content.topic", pattern: "lunc?*" };
    const topic = (t: unknown) => ({ type: "m.room.topic", state_key: "", content: { topic: t } });
    assert.ok(holds(cond, topic("Lunch plans")));
    assert.ok(holds(cond, topic("LUNCH")));
    for (const miss of [" lunch", "lunc", null, 5]) assert.ok(!holds(cond, topic(miss)), String(miss));
    assert.ok(!holds({ kind: "event_match", key: "content.missing", pattern: "*" }, topic("x")), "absent, even with *");
    assert.ok(holds({ kind: "event_match", key: "state_key", pattern: "" }, topic("x")), "empty pattern, empty value");
  });

  test("event_match on content.body: words, the spec's ex*ple example", () => {
    const cond = { kind: "event_match", key: "content.body", pattern: "ex*ple" };
    for (const body of ["An example event.", "exple", "An exciting triple-whammy"]) assert.ok(holds(cond, msg(body)), body);
    for (const body of ["An examples event", "texample", "example_"]) assert.ok(!holds(cond, msg(body)), body);
  });

  test("event_property_is: exact, typed values (the spec's m.federate example)", () => {
    const create = (federate: unknown) => ({ type: "m.room.create", state_key: "", content: { "m.federate": federate } });
    const cond = { kind: "event_property_is", key: "content.m\\.federate", value: true };
    assert.ok(holds(cond, create(true)));
    for (const miss of ["true", 1, null]) assert.ok(!holds(cond, create(miss)), String(miss));
    assert.ok(holds({ kind: "event_property_is", key: "content.n", value: 3 }, { type: "t", content: { n: 3 } }));
    assert.ok(holds({ kind: "event_property_is", key: "content.n", value: null }, { type: "t", content: { n: null } }));
    assert.ok(!holds({ kind: "event_property_is", key: "content.n", value: 1.5 }, { type: "t", content: { n: 1.5 } }), "not canonical JSON");
    assert.ok(!holds({ kind: "event_property_is", key: "content.n", value: { a: 1 } }, { type: "t", content: { n: { a: 1 } } }), "compound");
    assert.ok(!holds({ kind: "event_property_is", key: "content.n", value: null }, { type: "t", content: {} }), "absent is not null");
  });

  test("event_property_contains: array membership (the spec's alt_aliases example)", () => {
    const aliases = { type: "m.room.canonical_alias", state_key: "", content: { alt_aliases: ["#somewhere:example.org", "#myroom:example.com", { x: 1 }] } };
    assert.ok(holds({ kind: "event_property_contains", key: "content.alt_aliases", value: "#myroom:example.com" }, aliases));
    assert.ok(!holds({ kind: "event_property_contains", key: "content.alt_aliases", value: ":example.com" }, aliases));
    assert.ok(!holds({ kind: "event_property_contains", key: "content.alt_aliases", value: { x: 1 } }, aliases), "compound");
    assert.ok(!holds({ kind: "event_property_contains", key: "content.alias", value: "#a:b" }, { type: "t", content: { alias: "#a:b" } }), "not an array");
    assert.ok(holds({ kind: "event_property_contains", key: "content.n", value: false }, { type: "t", content: { n: [0, false] } }));
  });

  test("contains_display_name: word boundaries, case-insensitive, literal", () => {
    const cond = { kind: "contains_display_name" };
    const cases: [string | null, string, boolean][] = [
      ["alice", "Hi alice!", true],
      ["alice", "malice", false],
      ["Alice", "ALICE", true],
      ["alice", "alices", false],
      ["alice", "alice-bob", true],
      ["Alice Smith", "ping alice smith, please", true],
      ["Dr. Who?", "is that dr. who?!", true],
      ["a?c", "abc", false],
      ["*", "anything", false],
      ["", "", false],
      [null, "Alice", false],
    ];
    for (const [displayName, body, expected] of cases) assert.equal(holds(cond, msg(body), { displayName }), expected, `${displayName} in ${body}`);
    assert.ok(!holds(cond, { type: "m.room.message", content: { body: 5 } }), "no string body");
  });

  test("room_member_count", () => {
    const table: [string, number, boolean][] = [
      ["2", 2, true], ["2", 3, false], ["==2", 2, true], ["<3", 2, true], ["<3", 3, false], [">1", 2, true],
      [">2", 2, false], ["<=2", 2, true], [">=3", 2, false], [">=2", 10, true], ["=2", 2, false], ["two", 2, false], ["", 0, false],
    ];
    for (const [is, memberCount, expected] of table) assert.equal(holds({ kind: "room_member_count", is }, msg("x"), { memberCount }), expected, `${is} @${memberCount}`);
    assert.ok(!holds({ kind: "room_member_count" }, msg("x")), "no is");
  });

  test("sender_notification_permission", () => {
    const cond = (key: string) => ({ kind: "sender_notification_permission", key });
    assert.ok(holds(cond("room"), msg("x"), { senderPowerLevel: 50, notificationPowerLevels: {} }), "room defaults to 50");
    assert.ok(!holds(cond("room"), msg("x"), { senderPowerLevel: 49, notificationPowerLevels: {} }));
    assert.ok(holds(cond("room"), msg("x"), { senderPowerLevel: 0, notificationPowerLevels: { room: 0 } }));
    assert.ok(holds(cond("ring"), msg("x"), { senderPowerLevel: 10, notificationPowerLevels: { room: 50, ring: 10 } }));
    assert.ok(!holds(cond("constructor"), msg("x"), { senderPowerLevel: 10 }), "not an inherited property");
  });

  test("unknown kinds, and known kinds with bad parameters, never match", () => {
    for (const cond of [{ kind: "org.example.magic" }, { kind: "event_match", key: "type" }, { kind: "event_match", pattern: "*" }, { noKind: true }]) {
      assert.ok(!holds(cond, msg("x")), JSON.stringify(cond));
    }
    assert.ok(holds({ kind: "event_match", key: "type", pattern: "m.room.*" }, msg("x")));
  });
});

describe("dotted keys, globs, actions, and rule kinds", () => {
  test("escaping in dotted keys", () => {
    assert.deepEqual(parseKey("content.m\\.mentions.user_ids"), ["content", "m.mentions", "user_ids"]);
    assert.deepEqual(parseKey("content.m\\\\foo"), ["content", "m\\foo"]);
    assert.deepEqual(parseKey("content.\\x"), ["content", "\\x"]);
    assert.deepEqual(parseKey("a\\\\.b"), ["a\\", "b"]);
    // The spec's collision: `m.foo` inside `m`, against a key named `m.foo`.
    const event = { type: "t", content: { m: { foo: "bar" }, "m.foo": "baz" } };
    const is = (key: string, value: string) => evaluatePush({ override: [{ rule_id: "r", default: false, enabled: true, actions: ["notify"], conditions: [{ kind: "event_property_is", key, value }] }], content: [], room: [], sender: [], underride: [] }, ctx(event)) !== undefined;
    assert.ok(is("content.m.foo", "bar"));
    assert.ok(is("content.m\\.foo", "baz"));
    assert.ok(!is("content.m\\.foo", "bar"));
  });

  test("glob edge cases", () => {
    const whole = (pattern: string, value: string) => matchWhole(compileGlob(pattern), value.toLowerCase());
    const words = (pattern: string, value: string) => matchWords(compileGlob(pattern), value.toLowerCase());
    const table: [string, string, boolean][] = [
      ["*", "", true], ["*", "anything", true], ["?", "", false], ["?", "x", true], ["?", "😀", true], ["??", "😀", false],
      ["a*b*c", "abc", true], ["a*b*c", "aXbYc", true], ["a*b*c", "acb", false], ["*a", "ba", true], ["a*", "ab", true],
      ["a*a", "a", false], ["a*a", "aa", true], ["a.b", "aXb", false], ["[x]", "[x]", true], ["[x]", "x", false],
      ["a**b", "ab", true], ["?*?", "a", false], ["?*?", "ab", true], ["a*b", "a\nb", true], ["M.ROOM.*", "m.room.message", true],
    ];
    for (const [pattern, value, expected] of table) assert.equal(whole(pattern, value), expected, `${pattern} ~ ${JSON.stringify(value)}`);
    const wordTable: [string, string, boolean][] = [
      ["cake*lie", "The cake is a lie.", true], ["cake*lie", "pancake is a lie", false], ["cake*lie", "cake is a lies", false],
      ["@room", "x@room", true], ["room", "@room!", true], ["alice", "alice_", false], ["jo", "joé", true],
      ["*lie", "a lie", true], ["li?", "a lie", true], ["li?", "a lies", false], ["", "", true],
    ];
    for (const [pattern, value, expected] of wordTable) assert.equal(words(pattern, value), expected, `${pattern} in ${JSON.stringify(value)}`);
  });

  // No timing threshold: a backtracking matcher would not finish within the suite's timeout.
  test("pathological globs finish (no regex backtracking)", () => {
    const hay = "a".repeat(60_000);
    assert.equal(matchWhole(compileGlob("*a*a*a*a*a*a*b"), hay), false);
    assert.equal(matchWords(compileGlob("a*a*a*a*a*a*b"), hay), false);
    assert.equal(matchWords(compileGlob("?a?a?a?b"), hay), false);
  });

  test("legacy actions, highlight values, and unknown tweaks", () => {
    const rules = (actions: PushRule["actions"]): Ruleset => ({ override: [{ rule_id: "r", default: false, enabled: true, conditions: [], actions }], content: [], room: [], sender: [], underride: [] });
    assert.equal(evaluatePush(rules(["dont_notify"]), ctx(msg("x"))), undefined);
    assert.equal(evaluatePush(rules(["coalesce"]), ctx(msg("x"))), undefined);
    assert.deepEqual(evaluatePush(rules(["notify", "coalesce"]), ctx(msg("x")))?.actions, ["notify"]);
    assert.equal(evaluatePush(rules(["notify", { set_tweak: "highlight", value: false }]), ctx(msg("x")))?.highlight, false);
    assert.equal(evaluatePush(rules(["notify", { set_tweak: "highlight", value: true }]), ctx(msg("x")))?.highlight, true);
    const custom = evaluatePush(rules(["notify", { set_tweak: "led", value: "red" }, { set_tweak: "sound", value: "bell" }]), ctx(msg("x")));
    assert.deepEqual([custom?.highlight, custom?.sound, custom?.actions.length], [false, "bell", 3]);
  });

  test("room, sender and content rules by rule ID and pattern, in kind order", () => {
    const rules = cloneRules();
    rules.room.push({ rule_id: ROOM, default: false, enabled: true, actions: [] });
    rules.sender.push({ rule_id: "@bob:example.org", default: false, enabled: true, actions: ["notify", { set_tweak: "sound", value: "bob" }] });
    rules.content.push({ rule_id: "cake", default: false, enabled: true, pattern: "cake*", actions: ["notify", { set_tweak: "sound", value: "cake" }] });
    assert.equal(ruleId(msg("hello"), {}, rules), ROOM, "room before sender");
    assert.equal(evaluatePush(rules, ctx(msg("hello"))), undefined, "room rule silences");
    assert.equal(evaluatePush(rules, ctx(msg("cakes!")))?.sound, "cake", "content before room");
    assert.equal(evaluatePush(rules, ctx({ ...msg("hi"), room_id: "!other:example.org" }))?.sound, "bob", "sender elsewhere");
    assert.equal(ruleId({ ...msg("hi"), room_id: "!other:example.org", sender: "@BOB:example.org" }, {}, rules), ".m.rule.message", "IDs are exact");
    assert.equal(ruleId({ ...msg("hi"), room_id: "!ROOM:example.org", sender: "@carol:example.org" }, {}, rules), ".m.rule.message");
    rules.room[0]!.enabled = false;
    assert.equal(evaluatePush(rules, ctx(msg("hello")))?.sound, "bob", "disabled rules never match");
  });

  test("many recipients of one large event", () => {
    const body = `${"word ".repeat(12_000)}@room`;
    const event = msg(body);
    for (let i = 0; i < 2000; i++) {
      const userId = `@user${i}:example.org`;
      const out = evaluatePush(defaultPushRules(userId), { ...ctx(event), userId, displayName: `User ${i}` });
      assert.equal(out?.ruleId, ".m.rule.message");
    }
  });
});
