/**
 * Each user's push rules: the server defaults (base_rules.ts) merged with what the user added
 * or changed through the Push Rules API, for `GET /pushrules`, for the `m.push_rules` account
 * data that `/sync` delivers, and for the evaluator, which reads them for every recipient of
 * every event and so through a cache.
 *
 * The cache is per process, and every process must drop a user's entry when their rules change,
 * wherever the change was made. A change writes the user's `m.push_rules` account data in the
 * same transaction, which moves the account-data stream that every process tracks: before
 * answering from the cache, a process that sees the stream moved asks which users' `m.push_rules`
 * changed in between, and forgets them.
 */
import { Errors } from "../../errors.js";
import type { Storage, Stores } from "../../storage/interfaces.js";
import type { PushRuleChange, UserPushRule, UserPushRules } from "../../storage/push_rules.js";
import type { Notifier } from "../sync/notifier.js";
import { defaultPushRules, PUSH_RULE_KINDS, type Action, type DefaultRuleOptions, type PushRule, type PushRuleKind, type Ruleset } from "./base_rules.js";
import { actionsFromBody, checkKind, checkRuleId, enabledFromBody, ruleFromBody } from "./rule_input.js";
import { trimOldest } from "../bounded_map.js";

/** Users whose merged rules are kept; the least recently used go first. */
const CACHE_SIZE = 10_000;

/** The rule that stays above every user rule (spec: it is the highest-priority override). */
const MASTER = ".m.rule.master";

/** A user rule as clients see it: room and sender rules have neither conditions nor pattern. */
function clientRule(r: UserPushRule): PushRule {
  return {
    rule_id: r.ruleId,
    default: false,
    enabled: r.enabled,
    actions: r.actions as Action[],
    ...(r.conditions !== undefined && (r.kind === "override" || r.kind === "underride") ? { conditions: r.conditions } : {}),
    ...(r.pattern !== undefined && r.kind === "content" ? { pattern: r.pattern } : {}),
  };
}

export class PushRuleService {
  /** Merged rulesets by user, least recently used first. */
  readonly #cache = new Map<string, Ruleset>();
  /** The account-data position up to which changes have been applied to the cache. */
  #checkedUpTo = 0;
  /** Grows with every forgetting, so that a load that raced one is not cached. */
  #epoch = 0;
  #refreshing: Promise<void> | undefined;

  constructor(
    private readonly storage: Storage,
    private readonly notifier: Notifier,
    private readonly opts: DefaultRuleOptions = {},
  ) {}

  /** The users' rulesets in evaluation order (what the evaluator runs). */
  /**
   * `stores`: the transaction to read through when called inside one (an event's push actions
   * are evaluated in its transaction). It must not wait for reads outside it: on SQLite those
   * wait for the transaction to end.
   */
  async rulesets(userIds: readonly string[], stores?: Stores): Promise<Map<string, Ruleset>> {
    if (stores) await this.#refreshThrough(stores);
    else await this.#refresh();
    const out = new Map<string, Ruleset>();
    const missing: string[] = [];
    for (const userId of userIds) {
      const hit = this.#cache.get(userId);
      if (hit) {
        this.#cache.delete(userId);
        this.#cache.set(userId, hit);
        out.set(userId, hit);
      } else {
        missing.push(userId);
      }
    }
    if (missing.length === 0) return out;
    const epoch = this.#epoch;
    const stored = await (stores ?? this.storage).pushRules.of(missing);
    for (const userId of missing) {
      const ruleset = this.#merge(userId, stored.get(userId) ?? { rules: [], settings: [] });
      out.set(userId, ruleset);
      if (epoch !== this.#epoch) continue;
      this.#cache.set(userId, ruleset);
      trimOldest(this.#cache, CACHE_SIZE);
    }
    return out;
  }

  async ruleset(userId: string): Promise<Ruleset> {
    return (await this.rulesets([userId])).get(userId)!;
  }

  /** `GET /pushrules/`: the user's rules under `global`. */
  async all(userId: string): Promise<{ global: Ruleset }> {
    return { global: await this.ruleset(userId) };
  }

  /** `GET /pushrules/global/{kind}/{ruleId}`; reading under a kind that does not exist finds no rule (404). */
  async get(userId: string, kind: string, ruleId: string): Promise<PushRule> {
    const rules = (PUSH_RULE_KINDS as string[]).includes(kind) ? (await this.ruleset(userId))[kind as PushRuleKind] : [];
    const rule = rules.find((r) => r.rule_id === ruleId);
    if (!rule) throw Errors.notFound("Unknown push rule");
    return rule;
  }

  /** `PUT /pushrules/global/{kind}/{ruleId}`: adds or replaces a user rule, placed by `before`/`after`. */
  async put(userId: string, kind: string, ruleId: string, body: unknown, place: { before?: string; after?: string }): Promise<void> {
    const k = checkKind(kind);
    checkRuleId(ruleId);
    if (ruleId.startsWith(".")) throw Errors.invalidParam("Rule IDs starting with '.' are reserved for server-default rules");
    const rule = ruleFromBody(k, ruleId, body);
    const before = place.before || undefined;
    const after = before === undefined ? place.after || undefined : undefined;
    const result = await this.#change(userId, { op: "put", rule, before, after });
    // The spec's example answer for a rule to place against that is not there.
    if (result === "relative_not_found") throw Errors.unknown(`before/after rule not found: ${before ?? after}`);
  }

  /** `DELETE /pushrules/global/{kind}/{ruleId}`. */
  async delete(userId: string, kind: string, ruleId: string): Promise<void> {
    const k = checkKind(kind);
    if (ruleId.startsWith(".")) {
      if (this.#isDefault(userId, k, ruleId)) throw Errors.invalidParam("Server-default rules cannot be deleted; disable them instead");
      throw Errors.notFound("Unknown push rule");
    }
    if ((await this.#change(userId, { op: "delete", kind: k, ruleId })) === "not_found") throw Errors.notFound("Unknown push rule");
  }

  /** `PUT …/enabled`, on a user rule or a server-default one. */
  async setEnabled(userId: string, kind: string, ruleId: string, body: unknown): Promise<void> {
    const k = checkKind(kind);
    const enabled = enabledFromBody(body);
    const isDefault = this.#checkTarget(userId, k, ruleId);
    if ((await this.#change(userId, { op: "enabled", kind: k, ruleId, enabled, isDefault })) === "not_found") {
      throw Errors.notFound("Unknown push rule");
    }
  }

  /** `PUT …/actions`, on a user rule or a server-default one. */
  async setActions(userId: string, kind: string, ruleId: string, body: unknown): Promise<void> {
    const k = checkKind(kind);
    const actions = actionsFromBody(body);
    const isDefault = this.#checkTarget(userId, k, ruleId);
    if ((await this.#change(userId, { op: "actions", kind: k, ruleId, actions, isDefault })) === "not_found") {
      throw Errors.notFound("Unknown push rule");
    }
  }

  /** Whether the rule is a server-default one (which must then exist); a user rule is checked by the store. */
  #checkTarget(userId: string, kind: PushRuleKind, ruleId: string): boolean {
    if (!ruleId.startsWith(".")) return false;
    if (!this.#isDefault(userId, kind, ruleId)) throw Errors.notFound("Unknown push rule");
    return true;
  }

  #isDefault(userId: string, kind: PushRuleKind, ruleId: string): boolean {
    return defaultPushRules(userId, this.opts)[kind].some((r) => r.rule_id === ruleId);
  }

  async #change(userId: string, change: PushRuleChange) {
    const result = await this.storage.pushRules.change(userId, change, (rules) => ({ global: this.#merge(userId, rules) }));
    if (result === "ok") {
      this.#forget([userId]);
      // Wakes the user's syncs here and in every other process: `m.push_rules` changed.
      this.notifier.notify({ userIds: [userId] });
    }
    return result;
  }

  /** Server defaults with the user's settings applied, and the user's rules placed before them. */
  #merge(userId: string, stored: UserPushRules): Ruleset {
    const defaults = defaultPushRules(userId, this.opts);
    for (const s of stored.settings) {
      const rule = defaults[s.kind]?.find((r) => r.rule_id === s.ruleId);
      if (!rule) continue;
      if (s.enabled !== undefined) rule.enabled = s.enabled;
      if (s.actions !== undefined) rule.actions = s.actions as Action[];
    }
    const out = {} as Ruleset;
    for (const kind of PUSH_RULE_KINDS) {
      const own = stored.rules.filter((r) => r.kind === kind).map(clientRule);
      const base = defaults[kind];
      // `.m.rule.master` stays above everything, as in Synapse; the other defaults come after the user's.
      const lead = kind === "override" ? base.filter((r) => r.rule_id === MASTER) : [];
      out[kind] = [...lead, ...own, ...base.filter((r) => !lead.includes(r))];
    }
    return out;
  }

  #forget(userIds: readonly string[]): void {
    if (userIds.length === 0) return;
    this.#epoch++;
    for (const u of userIds) this.#cache.delete(u);
  }

  /** As `#refresh`, through a transaction, without joining a refresh in flight outside it. */
  async #refreshThrough(stores: Stores): Promise<void> {
    const to = this.storage.streams.current("account_data");
    if (to > this.#checkedUpTo) await this.#applyChanges(stores, this.#checkedUpTo, to);
  }

  /** Forgets the users whose rules changed (in any process) since the last look; one read at a time. */
  async #refresh(): Promise<void> {
    while (this.storage.streams.current("account_data") > this.#checkedUpTo) {
      this.#refreshing ??= this.#applyChanges(this.storage, this.#checkedUpTo, this.storage.streams.current("account_data")).finally(
        () => (this.#refreshing = undefined),
      );
      await this.#refreshing;
    }
  }

  /** Forgets the cached rules of users whose rules changed between `from` and `to`. */
  async #applyChanges(stores: Stores, from: number, to: number): Promise<void> {
    // Nothing cached: nothing to forget, and no need to ask.
    if (this.#cache.size > 0) this.#forget(await stores.pushRules.changedUsers(from, to));
    else this.#epoch++;
    this.#checkedUpTo = Math.max(this.#checkedUpTo, to);
  }
}
