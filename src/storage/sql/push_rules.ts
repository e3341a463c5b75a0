/** Per-user push rules over SQL; see storage/push_rules.ts. */
import type {
  DefaultRuleSetting,
  PushRuleChange,
  PushRuleChangeResult,
  PushRuleStore,
  StoredPushRuleKind,
  UserPushRule,
  UserPushRules,
} from "../push_rules.js";
import { inJsonList, sql, type Executor, type Transaction } from "./executor.js";

interface RuleRow {
  user_id: string;
  kind: StoredPushRuleKind;
  rule_id: string;
  conditions: string | null;
  pattern: string | null;
  actions: string;
  enabled: number;
}

interface SettingRow {
  user_id: string;
  kind: StoredPushRuleKind;
  rule_id: string;
  enabled: number | null;
  actions: string | null;
}

/** Where `m.push_rules` lives in account_data (global: room_id ""). */
const ACCOUNT_DATA_TYPE = "m.push_rules";

/** Thrown inside a change's transaction to roll it back with a result. */
class Refused extends Error {
  constructor(readonly result: Exclude<PushRuleChangeResult, "ok">) {
    super(result);
  }
}

const toRule = (r: RuleRow): UserPushRule => ({
  kind: r.kind,
  ruleId: r.rule_id,
  ...(r.conditions !== null ? { conditions: JSON.parse(r.conditions) as Record<string, unknown>[] } : {}),
  ...(r.pattern !== null ? { pattern: r.pattern } : {}),
  actions: JSON.parse(r.actions) as unknown[],
  enabled: Number(r.enabled) === 1,
});

const toSetting = (r: SettingRow): DefaultRuleSetting => ({
  kind: r.kind,
  ruleId: r.rule_id,
  ...(r.enabled !== null ? { enabled: Number(r.enabled) === 1 } : {}),
  ...(r.actions !== null ? { actions: JSON.parse(r.actions) as unknown[] } : {}),
});

export class SqlPushRuleStore implements PushRuleStore {
  constructor(private readonly db: Executor) {}

  async of(userIds: readonly string[]): Promise<Map<string, UserPushRules>> {
    const out = new Map<string, UserPushRules>();
    if (userIds.length === 0) return out;
    for (const u of userIds) out.set(u, { rules: [], settings: [] });
    const list = JSON.stringify(userIds);
    const rules = await this.db.all<RuleRow>(
      sql`SELECT user_id, kind, rule_id, conditions, pattern, actions, enabled FROM push_rules
          WHERE ${inJsonList("user_id")} ORDER BY user_id, kind, priority DESC`,
      [list],
    );
    for (const r of rules) out.get(r.user_id)?.rules.push(toRule(r));
    const settings = await this.db.all<SettingRow>(
      sql`SELECT user_id, kind, rule_id, enabled, actions FROM push_rule_settings WHERE ${inJsonList("user_id")}`,
      [list],
    );
    for (const s of settings) out.get(s.user_id)?.settings.push(toSetting(s));
    return out;
  }

  async change(userId: string, change: PushRuleChange, render: (rules: UserPushRules) => Record<string, unknown>): Promise<PushRuleChangeResult> {
    try {
      await this.db.transaction(async (tx) => {
        // Touching the user's m.push_rules row first locks it: concurrent changes of one user
        // (which renumber priorities) run one after the other.
        const position = await tx.nextPosition("account_data");
        await tx.run(
          `INSERT INTO account_data (user_id, room_id, type, content, stream_id) VALUES (?, '', ?, '{}', ?)
           ON CONFLICT (user_id, room_id, type) DO UPDATE SET stream_id = excluded.stream_id`,
          [userId, ACCOUNT_DATA_TYPE, position],
        );
        await apply(tx, userId, change);
        const rules = (await new SqlPushRuleStore(tx).of([userId])).get(userId)!;
        await tx.run("UPDATE account_data SET content = ? WHERE user_id = ? AND room_id = '' AND type = ?", [
          JSON.stringify(render(rules)),
          userId,
          ACCOUNT_DATA_TYPE,
        ]);
      });
      return "ok";
    } catch (err) {
      if (err instanceof Refused) return err.result;
      throw err;
    }
  }

  async changedUsers(from: number, to: number): Promise<string[]> {
    const rows = await this.db.all<{ user_id: string }>(
      "SELECT user_id FROM account_data WHERE type = ? AND stream_id > ? AND stream_id <= ? AND room_id = ''",
      [ACCOUNT_DATA_TYPE, from, to],
    );
    return rows.map((r) => r.user_id);
  }
}

const RULE_KEY = "user_id = ? AND kind = ? AND rule_id = ?";

async function apply(tx: Transaction, userId: string, change: PushRuleChange): Promise<void> {
  switch (change.op) {
    case "put":
      return put(tx, userId, change);
    case "delete":
      if ((await tx.run(`DELETE FROM push_rules WHERE ${RULE_KEY}`, [userId, change.kind, change.ruleId])) === 0) throw new Refused("not_found");
      return;
    case "enabled":
    case "actions": {
      const column = change.op;
      const value = change.op === "enabled" ? (change.enabled ? 1 : 0) : JSON.stringify(change.actions);
      if (change.isDefault) {
        await tx.run(
          `INSERT INTO push_rule_settings (user_id, kind, rule_id, ${column}) VALUES (?, ?, ?, ?)
           ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET ${column} = excluded.${column}`,
          [userId, change.kind, change.ruleId, value],
        );
        return;
      }
      if ((await tx.run(`UPDATE push_rules SET ${column} = ? WHERE ${RULE_KEY}`, [value, userId, change.kind, change.ruleId])) === 0) {
        throw new Refused("not_found");
      }
      return;
    }
  }
}

/** Synapse's placement: a higher priority runs first; a new or replaced rule goes first unless placed. */
async function put(tx: Transaction, userId: string, change: Extract<PushRuleChange, { op: "put" }>): Promise<void> {
  const { rule } = change;
  await tx.run(`DELETE FROM push_rules WHERE ${RULE_KEY}`, [userId, rule.kind, rule.ruleId]);
  let priority: number;
  const relativeTo = change.before ?? change.after;
  if (relativeTo !== undefined) {
    const row = await tx.get<{ priority: number }>(`SELECT priority FROM push_rules WHERE ${RULE_KEY}`, [userId, rule.kind, relativeTo]);
    if (!row) throw new Refused("relative_not_found");
    // Before: just above it. After: take its place and move it (and all above) up one.
    priority = Number(row.priority) + (change.before !== undefined ? 1 : 0);
    await tx.run("UPDATE push_rules SET priority = priority + 1 WHERE user_id = ? AND kind = ? AND priority >= ?", [userId, rule.kind, priority]);
  } else {
    const top = await tx.get<{ top: number | null }>("SELECT MAX(priority) AS top FROM push_rules WHERE user_id = ? AND kind = ?", [userId, rule.kind]);
    priority = top?.top === null || top?.top === undefined ? 0 : Number(top.top) + 1;
  }
  await tx.run(
    `INSERT INTO push_rules (user_id, kind, rule_id, priority, conditions, pattern, actions, enabled) VALUES (?, ?, ?, ?, ?, ?, ?, 1)`,
    [
      userId,
      rule.kind,
      rule.ruleId,
      priority,
      rule.conditions !== undefined ? JSON.stringify(rule.conditions) : null,
      rule.pattern ?? null,
      JSON.stringify(rule.actions),
    ],
  );
}
