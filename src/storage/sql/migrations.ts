/**
 * Forward-only schema migrations for both dialects, with one version number each. Append;
 * never change what a released step does. The index + 1 is the schema version recorded in the
 * database.
 *
 * A step is written once, in SQL both dialects read, and `ddlFor` adapts the one thing that
 * differs in every table: on PostgreSQL each INTEGER column is a BIGINT (SQLite's integers are
 * 64-bit already; timestamps in milliseconds need it). A step that differs in more than that
 * names both texts.
 */
import type { Dialect } from "./executor.js";
import { STEPS_1_TO_11 } from "./migrations/steps_1_to_11.js";
import { STEPS_FROM_12 } from "./migrations/steps_from_12.js";
import type { Migration } from "./migrations/types.js";

export type { Migration } from "./migrations/types.js";

/** Every step, in order; new ones are appended to STEPS_FROM_12. */
export const MIGRATIONS: readonly Migration[] = [...STEPS_1_TO_11, ...STEPS_FROM_12];

/** The text of a step for a dialect. */
export function ddlFor(step: Migration, dialect: Dialect): string {
  const text = typeof step === "string" ? step : step[dialect];
  if (dialect === "sqlite") return text;
  // Positions are always given explicitly (from sequences), so no column needs an identity.
  return text.replace(/\bINTEGER PRIMARY KEY AUTOINCREMENT\b/g, "BIGINT PRIMARY KEY").replace(/\bINTEGER\b/g, "BIGINT");
}
