/**
 * Each user's own push rules, and their changes to the server-default ones (spec: Push Rules
 * API). The server-default rules themselves are code (services/push/base_rules.ts): only what
 * a user changed is stored.
 */

export type StoredPushRuleKind = "override" | "content" | "room" | "sender" | "underride";

/** A rule a user added. */
export interface UserPushRule {
  kind: StoredPushRuleKind;
  ruleId: string;
  /** Override and underride rules only. */
  conditions?: Record<string, unknown>[];
  /** Content rules only. */
  pattern?: string;
  actions: unknown[];
  enabled: boolean;
}

/** A user's change to a server-default rule: `enabled`, `actions`, or both. */
export interface DefaultRuleSetting {
  kind: StoredPushRuleKind;
  ruleId: string;
  enabled?: boolean;
  actions?: unknown[];
}

export interface UserPushRules {
  /** Highest priority first within each kind. */
  rules: UserPushRule[];
  settings: DefaultRuleSetting[];
}

export type PushRuleChange =
  /** Adds a rule, or replaces the one with its kind and ID; `before`/`after` name a user rule of the same kind. */
  | { op: "put"; rule: Omit<UserPushRule, "enabled">; before?: string; after?: string }
  | { op: "delete"; kind: StoredPushRuleKind; ruleId: string }
  /** On a user rule, or (`isDefault`) on a server-default rule the caller has checked exists. */
  | { op: "enabled"; kind: StoredPushRuleKind; ruleId: string; enabled: boolean; isDefault: boolean }
  | { op: "actions"; kind: StoredPushRuleKind; ruleId: string; actions: unknown[]; isDefault: boolean };

/**
 * What a change came to: `not_found` when the user rule it names does not exist,
 * `relative_not_found` when `before`/`after` names no user rule of that kind.
 */
export type PushRuleChangeResult = "ok" | "not_found" | "relative_not_found";

export interface PushRuleStore {
  /** The stored rules and settings of these users (users with none get empty lists). */
  of(userIds: readonly string[]): Promise<Map<string, UserPushRules>>;
  /**
   * Applies `change` and, in the same transaction, stores `render(rules after the change)` as
   * the user's `m.push_rules` account data, so that `/sync` delivers it and every process sees
   * the account-data stream move (which is how their rule caches learn of the change). Nothing
   * is written unless the result is `ok`. Changes of one user are serialised.
   */
  change(userId: string, change: PushRuleChange, render: (rules: UserPushRules) => Record<string, unknown>): Promise<PushRuleChangeResult>;
  /** Users whose `m.push_rules` account data changed at account-data positions in (from, to]. */
  changedUsers(from: number, to: number): Promise<string[]>;
}
