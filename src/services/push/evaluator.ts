/**
 * Push-rule evaluation (spec: "Push Rules", "Conditions"): which rule, if any, an event matches
 * for one recipient, and what that means. Pure and synchronous; it runs for every local
 * recipient of every event, so it allocates little: globs are compiled once per pattern, dotted
 * keys parsed once per key, and the event is walked, never re-serialised.
 */
import { type Action, type Condition, PUSH_RULE_KINDS, type PushRule, type PushRuleKind, type Ruleset } from "./base_rules.js";
import { compileGlob, containsWord, matchWhole, matchWords } from "./glob.js";
import { trimOldest } from "../bounded_map.js";

export interface PushEventContext {
  /** The event as a client sees it: type, content, sender, state_key, room_id, event_id, … */
  event: Record<string, unknown>;
  /** The recipient, their display name in the room (null if none), and the room's joined member count. */
  userId: string;
  displayName: string | null;
  memberCount: number;
  /** The sender's power level, and the room's `notifications` power levels (default {room: 50}). */
  senderPowerLevel: number;
  notificationPowerLevels: Record<string, number>;
}

export interface PushOutcome {
  ruleId: string;
  /** The rule's actions, less the historical `dont_notify`/`coalesce` (spec: to be ignored). */
  actions: Action[];
  notify: boolean;
  highlight: boolean;
  sound?: string;
}

/**
 * The first enabled rule (override, content, room, sender, underride order) whose conditions all
 * hold; undefined if none (or the match has no notify). A matching rule that does not notify
 * still ends the search: that is how `.m.rule.suppress_notices` and friends silence an event.
 * Rules are taken in the ruleset's order, which must already put `.m.rule.master` first.
 */
export function evaluatePush(rules: Ruleset, ctx: PushEventContext): PushOutcome | undefined {
  const rule = matchingRule(rules, ctx);
  return rule ? outcome(rule) : undefined;
}

/** The rule that decides the event for this recipient, notifying or not; undefined if none matches. */
export function matchingRule(rules: Ruleset, ctx: PushEventContext): PushRule | undefined {
  const content = asObject(ctx.event.content);
  // Spec v1.7: the legacy mention rules apply only to events without `m.mentions` (Synapse
  // checks the key's presence, whatever its value), so a mention-aware client that mentions
  // nobody does not notify everyone whose name happens to be in the text.
  const hasMentions = content !== undefined && Object.hasOwn(content, "m.mentions");
  for (const kind of PUSH_RULE_KINDS) {
    const ofKind = rules[kind];
    if (!ofKind) continue;
    for (const rule of ofKind) {
      if (!rule.enabled) continue;
      if (hasMentions && isLegacyMentionRule(kind, rule.rule_id)) continue;
      if (ruleMatches(kind, rule, ctx)) return rule;
    }
  }
  return undefined;
}

function isLegacyMentionRule(kind: PushRuleKind, ruleId: string): boolean {
  return (
    (kind === "override" && (ruleId === ".m.rule.contains_display_name" || ruleId === ".m.rule.roomnotif")) ||
    (kind === "content" && ruleId === ".m.rule.contains_user_name")
  );
}

function ruleMatches(kind: PushRuleKind, rule: PushRule, ctx: PushEventContext): boolean {
  switch (kind) {
    case "override":
    case "underride":
      // No conditions (or an empty list) matches every event: `.m.rule.master`.
      return allHold(rule.conditions, ctx);
    case "content": {
      // The pattern is a glob over `content.body`, at word boundaries, like `event_match` there.
      const body = asObject(ctx.event.content)?.body;
      return typeof rule.pattern === "string" && typeof body === "string" && matchWords(compileGlob(rule.pattern), lowerBody(body));
    }
    case "room":
      return ctx.event.room_id === rule.rule_id;
    case "sender":
      return ctx.event.sender === rule.rule_id;
  }
}

function outcome(rule: PushRule): PushOutcome | undefined {
  const actions = rule.actions.filter((a) => a !== "dont_notify" && a !== "coalesce");
  if (!actions.includes("notify")) return undefined;
  let highlight: boolean | undefined;
  let sound: string | undefined;
  for (const action of actions) {
    if (typeof action !== "object" || action === null) continue;
    // The first of each tweak counts, as the push gateway would see it in `tweaks`.
    if (action.set_tweak === "highlight" && highlight === undefined) highlight = action.value !== false;
    if (action.set_tweak === "sound" && sound === undefined && typeof action.value === "string") sound = action.value;
  }
  return { ruleId: rule.rule_id, actions, notify: true, highlight: highlight ?? false, ...(sound !== undefined ? { sound } : {}) };
}

/** Whether every condition holds (a loop, not `every`: no closure per rule per recipient). */
function allHold(conditions: readonly Condition[] | undefined, ctx: PushEventContext): boolean {
  if (!conditions) return true;
  for (const cond of conditions) if (!conditionHolds(cond, ctx)) return false;
  return true;
}

/** Whether one condition holds. Unknown kinds, and known kinds with bad parameters, never do. */
function conditionHolds(cond: Condition, ctx: PushEventContext): boolean {
  switch (cond.kind) {
    case "event_match": {
      if (typeof cond.key !== "string" || typeof cond.pattern !== "string") return false;
      const value = lookup(ctx.event, cond.key);
      if (typeof value !== "string") return false;
      if (cond.key === "content.body") return matchWords(compileGlob(cond.pattern), lowerBody(value));
      // Most checks are `type` against an exact type: settle those without lower-casing.
      return value === cond.pattern || matchWhole(compileGlob(cond.pattern), value.toLowerCase());
    }
    case "event_property_is": {
      if (typeof cond.key !== "string" || !isSimple(cond.value)) return false;
      const value = lookup(ctx.event, cond.key);
      return isSimple(value) && value === cond.value;
    }
    case "event_property_contains": {
      if (typeof cond.key !== "string" || !isSimple(cond.value)) return false;
      const value = lookup(ctx.event, cond.key);
      // Compound or non-integer elements can never be `===` a simple value, so they are ignored.
      return Array.isArray(value) && value.includes(cond.value);
    }
    case "contains_display_name": {
      // An empty name would match every body, so it matches none (as Synapse does). The name is
      // text, not a glob: a `?` or `*` in it means itself (Synapse, unlike the spec, globs it).
      const name = ctx.displayName;
      const body = asObject(ctx.event.content)?.body;
      return !!name && typeof body === "string" && containsWord(lowerBody(body), name.toLowerCase());
    }
    case "room_member_count":
      return typeof cond.is === "string" && memberCountMatches(cond.is, ctx.memberCount);
    case "sender_notification_permission": {
      if (typeof cond.key !== "string") return false;
      const levels = ctx.notificationPowerLevels;
      const required = Object.hasOwn(levels, cond.key) ? levels[cond.key] : undefined;
      // The power-levels event defaults `notifications.room` to 50; Synapse uses 50 for any key.
      return ctx.senderPowerLevel >= (typeof required === "number" ? required : 50);
    }
    default:
      return false;
  }
}

const MEMBER_COUNT = /^(==|<=|>=|<|>)?([0-9]+)$/;

function memberCountMatches(is: string, count: number): boolean {
  const m = MEMBER_COUNT.exec(is);
  if (!m) return false;
  const n = Number(m[2]);
  switch (m[1]) {
    case "<":
      return count < n;
    case ">":
      return count > n;
    case "<=":
      return count <= n;
    case ">=":
      return count >= n;
    default:
      return count === n;
  }
}

/** Strings, booleans, null and integers in canonical JSON's range: what the `…property…` kinds compare. */
function isSimple(v: unknown): v is string | number | boolean | null {
  return v === null || typeof v === "string" || typeof v === "boolean" || Number.isSafeInteger(v);
}

function asObject(v: unknown): Record<string, unknown> | undefined {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

/** The property at a dotted key, walking own properties of objects only (never into arrays). */
function lookup(event: Record<string, unknown>, key: string): unknown {
  let cur: unknown = event;
  for (const name of parseKey(key)) {
    const obj = asObject(cur);
    if (!obj || !Object.hasOwn(obj, name)) return undefined;
    cur = obj[name];
  }
  return cur;
}

const MAX_CACHED_KEYS = 1024;
const keyCache = new Map<string, string[]>();

/**
 * A dotted key's property names (spec appendix "Dot-separated property paths"): `\.` is a
 * literal dot, `\\` a literal backslash, and any other backslash is itself.
 */
export function parseKey(key: string): string[] {
  let path = keyCache.get(key);
  if (path) return path;
  path = [];
  let name = "";
  for (let i = 0; i < key.length; i++) {
    const ch = key[i]!;
    const next = key[i + 1];
    if (ch === "\\" && (next === "." || next === "\\")) {
      name += next;
      i++;
    } else if (ch === ".") {
      path.push(name);
      name = "";
    } else {
      name += ch;
    }
  }
  path.push(name);
  keyCache.set(key, path);
  trimOldest(keyCache, MAX_CACHED_KEYS);
  return path;
}

// The body is lower-cased for up to three rules per recipient, and every recipient of an event
// sees the same string: remembering the last one makes that once per event. Comparing against
// the remembered string is by identity first, so a hit costs nothing and a miss is still right.
let lastBody = "";
let lastLowerBody = "";

function lowerBody(body: string): string {
  if (body !== lastBody) {
    lastBody = body;
    lastLowerBody = body.toLowerCase();
  }
  return lastLowerBody;
}
