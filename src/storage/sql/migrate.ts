/** Brings a database's schema to the newest version, the same steps on both dialects. */
import type { SqlDatabase } from "./executor.js";
import { ddlFor, MIGRATIONS } from "./migrations.js";

export class NewerSchemaError extends Error {}

/**
 * One transaction reads the version and applies what is missing, so a second process opening
 * the same database (register-user beside serve, or another worker) waits, then sees the
 * result: SQLite's IMMEDIATE transaction and PostgreSQL's advisory lock both serialise it.
 */
export async function migrate(db: SqlDatabase): Promise<void> {
  const found = await db.transaction(async (tx) => {
    // Any fixed number works as the lock's key; this one spells "SB".
    await tx.get({ sqlite: "SELECT 1", postgres: "SELECT pg_advisory_xact_lock(21314)" });
    await tx.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    const row = await tx.get<{ version: number }>("SELECT version FROM schema_version");
    const current = row?.version ?? 0;
    if (current >= MIGRATIONS.length) return current;
    for (let v = current; v < MIGRATIONS.length; v++) await tx.exec(ddlFor(MIGRATIONS[v]!, tx.dialect));
    await tx.run("DELETE FROM schema_version");
    await tx.run("INSERT INTO schema_version (version) VALUES (?)", [MIGRATIONS.length]);
    return current;
  });
  if (found > MIGRATIONS.length) {
    await db.close();
    throw new NewerSchemaError(
      `the database is at schema version ${found}, but this Switchboard knows only up to ${MIGRATIONS.length}: ` +
        "it was written by a newer Switchboard. Run that version, or restore a backup made for this one.",
    );
  }
}
