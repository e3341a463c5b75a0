/**
 * The server-default push rules (spec: "Push Notifications", "Predefined Rules"), in client
 * format and spec order. Each user's own rules and changes are merged in by rules_service.ts.
 */

export type Condition = Record<string, unknown>;
export type Action = string | Record<string, unknown>;

export interface PushRule {
  rule_id: string;
  default: boolean;
  enabled: boolean;
  actions: Action[];
  conditions?: Condition[];
  pattern?: string;
}

export type PushRuleKind = "override" | "content" | "room" | "sender" | "underride";
/** Rules by kind; within a kind, array order is priority order (first match wins). */
export type Ruleset = Record<PushRuleKind, PushRule[]>;

/** The kinds in the order they are evaluated. */
export const PUSH_RULE_KINDS: PushRuleKind[] = ["override", "content", "room", "sender", "underride"];

export interface DefaultRuleOptions {
  /**
   * Synapse's MSC4075 call-ringing override rules (its `experimental_features.msc4075_enabled`).
   * Default true: harmless where clients ignore them, and they make an unencrypted ring ring.
   */
  msc4075CallRules?: boolean;
}

/** MatrixRTC ring/notify event type (MSC4075 as js-sdk 43 sends it). */
const RTC_NOTIFICATION = "org.matrix.msc4075.rtc.notification";

const match = (key: string, pattern: string): Condition => ({ kind: "event_match", key, pattern });
const SOUND: Action = { set_tweak: "sound", value: "default" };
const RING: Action = { set_tweak: "sound", value: "ring" };
const HIGHLIGHT: Action = { set_tweak: "highlight" };
const ROOM_PERMISSION: Condition = { kind: "sender_notification_permission", key: "room" };

function rule(ruleId: string, conditions: Condition[], actions: Action[], enabled = true): PushRule {
  return { rule_id: ruleId, default: true, enabled, conditions, actions };
}

/** The two rules exactly as Synapse 1.163 serves them, with the user ID substituted. */
function callRules(userId: string): PushRule[] {
  return [
    rule(
      ".org.matrix.msc4075.rule.rtc.invite_for_me",
      [match("type", RTC_NOTIFICATION), { kind: "event_property_contains", key: "content.m\\.mentions.user_ids", value: userId }],
      ["notify", RING],
    ),
    rule(
      ".org.matrix.msc4075.rule.rtc.invite_for_room",
      [match("type", RTC_NOTIFICATION), { kind: "event_property_is", key: "content.m\\.mentions.room", value: true }, ROOM_PERMISSION],
      ["notify", RING],
    ),
  ];
}

/**
 * The spec's server-default rules for a user, in spec order, with Synapse's MSC4075 rules after
 * `.m.rule.member_event` (where Synapse puts them: before the mention rules, so a ring that
 * mentions someone rings rather than merely highlights).
 */
export function defaultPushRules(userId: string, opts: DefaultRuleOptions = {}): Ruleset {
  const localpart = userId.slice(1).split(":")[0] ?? "";
  return {
    override: [
      rule(".m.rule.master", [], [], false),
      rule(".m.rule.suppress_notices", [match("content.msgtype", "m.notice")], []),
      rule(
        ".m.rule.invite_for_me",
        [match("type", "m.room.member"), match("content.membership", "invite"), match("state_key", userId)],
        ["notify", SOUND],
      ),
      rule(".m.rule.member_event", [match("type", "m.room.member")], []),
      ...((opts.msc4075CallRules ?? true) ? callRules(userId) : []),
      rule(
        ".m.rule.is_user_mention",
        [{ kind: "event_property_contains", key: "content.m\\.mentions.user_ids", value: userId }],
        ["notify", SOUND, HIGHLIGHT],
      ),
      rule(".m.rule.contains_display_name", [{ kind: "contains_display_name" }], ["notify", SOUND, HIGHLIGHT]),
      rule(
        ".m.rule.is_room_mention",
        [{ kind: "event_property_is", key: "content.m\\.mentions.room", value: true }, ROOM_PERMISSION],
        ["notify", HIGHLIGHT],
      ),
      rule(".m.rule.roomnotif", [ROOM_PERMISSION, match("content.body", "@room")], ["notify", HIGHLIGHT]),
      rule(".m.rule.tombstone", [match("type", "m.room.tombstone"), match("state_key", "")], ["notify", HIGHLIGHT]),
      rule(".m.rule.reaction", [match("type", "m.reaction")], []),
      rule(".m.rule.room.server_acl", [match("type", "m.room.server_acl"), match("state_key", "")], []),
      rule(
        ".m.rule.suppress_edits",
        [{ kind: "event_property_is", key: "content.m\\.relates_to.rel_type", value: "m.replace" }],
        [],
      ),
    ],
    content: [
      {
        rule_id: ".m.rule.contains_user_name",
        default: true,
        enabled: true,
        pattern: localpart,
        actions: ["notify", SOUND, HIGHLIGHT],
      },
    ],
    room: [],
    sender: [],
    underride: [
      rule(".m.rule.call", [match("type", "m.call.invite")], ["notify", RING]),
      rule(
        ".m.rule.encrypted_room_one_to_one",
        [{ kind: "room_member_count", is: "2" }, match("type", "m.room.encrypted")],
        ["notify", SOUND],
      ),
      rule(".m.rule.room_one_to_one", [{ kind: "room_member_count", is: "2" }, match("type", "m.room.message")], ["notify", SOUND]),
      rule(".m.rule.message", [match("type", "m.room.message")], ["notify"]),
      rule(".m.rule.encrypted", [match("type", "m.room.encrypted")], ["notify"]),
    ],
  };
}
