/**
 * Schema steps that rebuild a table keep its rows: a database at the version before the step,
 * with rows in the table, is migrated to the newest version and read back. SQLite only: on
 * PostgreSQL these steps change nothing (each says so in its text).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { migrate } from "../src/storage/sql/migrate.js";
import { ddlFor, MIGRATIONS } from "../src/storage/sql/migrations.js";
import { openSqliteFile } from "../src/storage/sqlite/driver.js";

const dir = mkdtempSync(path.join(tmpdir(), "switchboard-migrations-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A SQLite database at schema version `version` (its first `version` steps applied). */
async function databaseAt(version: number, name: string) {
  const db = openSqliteFile(path.join(dir, name), "normal", 1);
  await db.transaction(async (tx) => {
    for (const step of MIGRATIONS.slice(0, version)) await tx.exec(ddlFor(step, "sqlite"));
    await tx.exec("CREATE TABLE schema_version (version INTEGER NOT NULL)");
    await tx.run("INSERT INTO schema_version (version) VALUES (?)", [version]);
  });
  return db;
}

describe("schema migrations on SQLite", () => {
  test("step 28 keeps every transaction ID, keyed as before, in a table without rowids", async () => {
    const db = await databaseAt(27, "txns.db");
    try {
      const rows = [
        ["@alice:test", "DEV1", "m1.1", "$a"],
        ["@alice:test", "DEV1", "m1.2", "$b"],
        ["@alice:test", "DEV2", "m1.1", "$c"],
        ["@bob:test", "DEV1", "m1.1", "$d"],
      ];
      for (const r of rows) await db.run("INSERT INTO event_txns (user_id, device_id, txn_id, event_id) VALUES (?, ?, ?, ?)", r);

      await migrate(db);

      const version = await db.get<{ version: number }>("SELECT version FROM schema_version");
      assert.equal(version?.version, MIGRATIONS.length);
      const kept = await db.all<{ user_id: string; device_id: string; txn_id: string; event_id: string }>(
        "SELECT user_id, device_id, txn_id, event_id FROM event_txns ORDER BY event_id",
      );
      assert.deepEqual(
        kept.map((r) => [r.user_id, r.device_id, r.txn_id, r.event_id]),
        rows,
      );
      const table = await db.get<{ sql: string }>("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'event_txns'");
      assert.match(table!.sql, /WITHOUT ROWID/);
      // The key still refuses a second event for one transaction ID.
      await assert.rejects(
        db.run("INSERT INTO event_txns (user_id, device_id, txn_id, event_id) VALUES (?, ?, ?, ?)", ["@alice:test", "DEV1", "m1.1", "$e"]),
        /UNIQUE constraint failed/,
      );
      const lookup = await db.get<{ event_id: string }>("SELECT event_id FROM event_txns WHERE user_id = ? AND device_id = ? AND txn_id = ?", [
        "@bob:test",
        "DEV1",
        "m1.1",
      ]);
      assert.equal(lookup?.event_id, "$d");
    } finally {
      await db.close();
    }
  });
});
