/**
 * Push rules as `GET /pushrules` serves them. Switchboard keeps no per-user rules yet, so every
 * user has the server-default ruleset; clients such as matrix-js-sdk read it at startup and
 * evaluate it themselves (after decrypting), so it must be the same ruleset the server evaluates.
 */
import { defaultPushRules, PUSH_RULE_KINDS, type DefaultRuleOptions, type PushRule, type PushRuleKind, type Ruleset } from "./base_rules.js";

export class PushRuleService {
  constructor(private readonly opts: DefaultRuleOptions = {}) {}

  /** The user's ruleset, in evaluation order (what the push evaluator runs). */
  ruleset(userId: string): Ruleset {
    return defaultPushRules(userId, this.opts);
  }

  /** `GET /pushrules/`: the user's rules under `global`. */
  all(userId: string): { global: Ruleset } {
    return { global: this.ruleset(userId) };
  }

  /** One rule, or undefined when the kind or rule ID is unknown. */
  find(userId: string, kind: string, ruleId: string): PushRule | undefined {
    if (!(PUSH_RULE_KINDS as string[]).includes(kind)) return undefined;
    return this.ruleset(userId)[kind as PushRuleKind].find((r) => r.rule_id === ruleId);
  }
}
