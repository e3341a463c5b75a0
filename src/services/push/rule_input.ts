/**
 * Checks on what a client sends to the push-rule endpoints (spec: Push Rules API), turning it
 * into a stored rule or a Matrix error. The spec's statuses: a malformed body is 400
 * `M_BAD_JSON`, a bad kind or rule ID 400 `M_INVALID_PARAM`.
 */
import { Errors } from "../../errors.js";
import type { StoredPushRuleKind, UserPushRule } from "../../storage/push_rules.js";
import { PUSH_RULE_KINDS } from "./base_rules.js";

/** Longer IDs and bodies are not rules anyone writes by hand, nor a room or user ID. */
const MAX_RULE_ID_LENGTH = 255;
const MAX_CONDITIONS = 20;

export function checkKind(kind: string): StoredPushRuleKind {
  if (!(PUSH_RULE_KINDS as string[]).includes(kind)) {
    throw Errors.invalidParam(`Unknown push rule kind ${JSON.stringify(kind)}: expected one of ${PUSH_RULE_KINDS.join(", ")}`);
  }
  return kind as StoredPushRuleKind;
}

/** A rule ID in a path: non-empty, no slashes (spec), not too long. */
export function checkRuleId(ruleId: string): void {
  if (ruleId === "" || ruleId.length > MAX_RULE_ID_LENGTH) throw Errors.invalidParam(`A rule ID must be 1 to ${MAX_RULE_ID_LENGTH} characters`);
  if (ruleId.includes("/") || ruleId.includes("\\")) throw Errors.invalidParam("A rule ID cannot contain slashes or backslashes");
}

const asObject = (v: unknown): Record<string, unknown> | undefined =>
  typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;

/** `notify`, the legacy `dont_notify`/`coalesce` (kept, and ignored when evaluating), or a `set_tweak`. */
export function checkActions(actions: unknown): unknown[] {
  if (!Array.isArray(actions)) throw Errors.badJson("'actions' must be an array");
  for (const a of actions) {
    if (a === "notify" || a === "dont_notify" || a === "coalesce") continue;
    const tweak = asObject(a);
    if (tweak && typeof tweak.set_tweak === "string" && tweak.set_tweak !== "") continue;
    throw Errors.badJson(`Unrecognised action ${JSON.stringify(a)}`);
  }
  return actions;
}

/** The body of `PUT /pushrules/global/{kind}/{ruleId}`, as the rule to store. */
export function ruleFromBody(kind: StoredPushRuleKind, ruleId: string, body: unknown): Omit<UserPushRule, "enabled"> {
  const obj = asObject(body);
  if (!obj) throw Errors.badJson("The body must be a JSON object");
  if (!("actions" in obj)) throw Errors.badJson("Missing 'actions'");
  const actions = checkActions(obj.actions);
  switch (kind) {
    case "override":
    case "underride": {
      const conditions = obj.conditions ?? [];
      if (!Array.isArray(conditions) || conditions.length > MAX_CONDITIONS) {
        throw Errors.badJson(`'conditions' must be an array of at most ${MAX_CONDITIONS} conditions`);
      }
      for (const c of conditions) {
        if (typeof asObject(c)?.kind !== "string") throw Errors.badJson("Every condition must be an object with a 'kind' string");
      }
      return { kind, ruleId, conditions: conditions as Record<string, unknown>[], actions };
    }
    case "content":
      if (typeof obj.pattern !== "string" || obj.pattern === "") throw Errors.badJson("A content rule needs a 'pattern' string");
      return { kind, ruleId, pattern: obj.pattern, actions };
    default:
      // Room and sender rules: the rule ID is the room or the sender.
      return { kind, ruleId, actions };
  }
}

/** The body of `PUT …/enabled`. */
export function enabledFromBody(body: unknown): boolean {
  const enabled = asObject(body)?.enabled;
  if (typeof enabled !== "boolean") throw Errors.badJson("'enabled' must be a boolean");
  return enabled;
}

/** The body of `PUT …/actions`. */
export function actionsFromBody(body: unknown): unknown[] {
  const obj = asObject(body);
  if (!obj || !("actions" in obj)) throw Errors.badJson("Missing 'actions'");
  return checkActions(obj.actions);
}
