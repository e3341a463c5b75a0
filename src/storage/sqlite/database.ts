/** Opens the SQLite file, sets the pragmas durability needs, runs migrations. */
import { mkdirSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { MIGRATIONS } from "./migrations.js";

export class NewerSchemaError extends Error {}

export function openDatabase(file: string, synchronous: "normal" | "full" = "normal"): Database.Database {
  if (file !== ":memory:") mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  // First, so that two processes opening one new file wait for each other instead of failing.
  db.pragma("busy_timeout = 5000");
  db.pragma("journal_mode = WAL");
  // In WAL mode, NORMAL writes each commit to the WAL before the request is answered, so it
  // survives the process dying; FULL adds an fsync per commit, which power loss needs.
  db.pragma(`synchronous = ${synchronous === "full" ? "FULL" : "NORMAL"}`);
  db.pragma("foreign_keys = ON");
  migrate(db);
  return db;
}

function migrate(db: Database.Database): void {
  // One IMMEDIATE transaction reads the version and applies what is missing, so a second
  // process opening the same file (register-user beside serve) waits, then sees the result.
  const step = db.transaction((): number => {
    db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    const row = db.prepare("SELECT version FROM schema_version").get() as { version: number } | undefined;
    const current = row?.version ?? 0;
    if (current >= MIGRATIONS.length) return current;
    for (let v = current; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v]!);
    db.prepare("DELETE FROM schema_version").run();
    db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(MIGRATIONS.length);
    return current;
  });
  const current = step.immediate();
  if (current > MIGRATIONS.length) {
    db.close();
    throw new NewerSchemaError(
      `the database is at schema version ${current}, but this Switchboard knows only up to ${MIGRATIONS.length}: ` +
        "it was written by a newer Switchboard. Run that version, or restore a backup made for this one.",
    );
  }
}
