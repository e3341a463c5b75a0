/**
 * Push rules (spec: "Push Notifications", "Predefined Rules"). Switchboard
 * does not send push notifications yet and keeps no per-user rules, so every
 * user has the server-default ruleset; clients such as matrix-js-sdk read it
 * at startup.
 */

type Condition = Record<string, unknown>;
type Action = string | Record<string, unknown>;

export interface PushRule {
  rule_id: string;
  default: boolean;
  enabled: boolean;
  actions: Action[];
  conditions?: Condition[];
  pattern?: string;
}

export type PushRuleKind = "override" | "content" | "room" | "sender" | "underride";
export type Ruleset = Record<PushRuleKind, PushRule[]>;

const match = (key: string, pattern: string): Condition => ({ kind: "event_match", key, pattern });
const SOUND: Action = { set_tweak: "sound", value: "default" };
const HIGHLIGHT: Action = { set_tweak: "highlight" };

function rule(ruleId: string, conditions: Condition[], actions: Action[], enabled = true): PushRule {
  return { rule_id: ruleId, default: true, enabled, conditions, actions };
}

/** The spec's server-default rules for a user, in their spec order. */
export function defaultPushRules(userId: string): Ruleset {
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
      rule(
        ".m.rule.is_user_mention",
        [{ kind: "event_property_contains", key: "content.m\\.mentions.user_ids", value: userId }],
        ["notify", SOUND, HIGHLIGHT],
      ),
      rule(".m.rule.contains_display_name", [{ kind: "contains_display_name" }], ["notify", SOUND, HIGHLIGHT]),
      rule(
        ".m.rule.is_room_mention",
        [
          { kind: "event_property_is", key: "content.m\\.mentions.room", value: true },
          { kind: "sender_notification_permission", key: "room" },
        ],
        ["notify", HIGHLIGHT],
      ),
      rule(
        ".m.rule.roomnotif",
        [{ kind: "sender_notification_permission", key: "room" }, match("content.body", "@room")],
        ["notify", HIGHLIGHT],
      ),
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
      rule(".m.rule.call", [match("type", "m.call.invite")], ["notify", { set_tweak: "sound", value: "ring" }]),
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

export const PUSH_RULE_KINDS: PushRuleKind[] = ["override", "content", "room", "sender", "underride"];

export class PushRuleService {
  /** `GET /pushrules/`: the user's rules under `global`. */
  all(userId: string): { global: Ruleset } {
    return { global: defaultPushRules(userId) };
  }

  /** One rule, or undefined when the kind or rule ID is unknown. */
  find(userId: string, kind: string, ruleId: string): PushRule | undefined {
    if (!(PUSH_RULE_KINDS as string[]).includes(kind)) return undefined;
    return defaultPushRules(userId)[kind as PushRuleKind].find((r) => r.rule_id === ruleId);
  }
}
