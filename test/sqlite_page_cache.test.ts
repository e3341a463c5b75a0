/**
 * `database.args.cache_size_mib` reaches SQLite: the page cache is the size the config names,
 * not the 16 MiB better-sqlite3 builds SQLite with.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { openSqliteFile } from "../src/storage/sqlite/driver.js";

const dir = mkdtempSync(path.join(tmpdir(), "switchboard-page-cache-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("the SQLite page cache is the configured number of MiB", () => {
  for (const [mib, kib] of [
    [4, 4096],
    [0.5, 512],
    [64, 65536],
  ] as const) {
    const opened = openSqliteFile(path.join(dir, `cache-${mib}.db`), "normal", mib);
    try {
      assert.equal(opened.db.pragma("cache_size", { simple: true }), -kib, `${mib} MiB`);
    } finally {
      opened.db.close();
    }
  }
});
