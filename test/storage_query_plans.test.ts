/**
 * Reads on the send path stay proportional to what they ask for, not to the room: a room with
 * a few hundred members is seeded, and each backend's own planner is asked how it runs the
 * query (SQLite's EXPLAIN QUERY PLAN; PostgreSQL's EXPLAIN ANALYZE, whose row counts show what
 * was read). No timings: the plan is the property.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { describe, test } from "node:test";
import Database from "better-sqlite3";
import pg from "pg";
import { Q } from "../src/storage/sql/room_queries.js";
import { textOf } from "../src/storage/sql/executor.js";
import { databaseNameFor, postgresUrl } from "./helpers/database.js";
import { appendLocked, BACKENDS, freshDatabase, seedRoom, type Backend } from "./helpers/storage.js";

const ROOM = "!big:test";
const MEMBERS = 300;

/** A room whose current state is its create event, its power levels and MEMBERS joins. */
async function seedBigRoom(storage: Awaited<ReturnType<ReturnType<typeof freshDatabase>["open"]>>): Promise<void> {
  await seedRoom(storage, ROOM, "@u0:test");
  const state: [string, string][] = [
    ["m.room.create", ""],
    ["m.room.power_levels", ""],
    ...Array.from({ length: MEMBERS }, (_, i): [string, string] => ["m.room.member", `@u${i}:test`]),
  ];
  for (const [k, [type, stateKey]] of state.entries()) {
    await appendLocked(storage, {
      eventId: `$s${k}`,
      roomId: ROOM,
      type,
      stateKey,
      sender: "@u0:test",
      originServerTs: 1,
      depth: k + 1,
      json: JSON.stringify({ type, state_key: stateKey, content: type === "m.room.member" ? { membership: "join" } : {} }),
      membership: type === "m.room.member" ? "join" : null,
    });
  }
}

/** Every node of a PostgreSQL JSON plan. */
function* planNodes(node: Record<string, unknown>): Generator<Record<string, unknown>> {
  yield node;
  for (const child of (node.Plans as Record<string, unknown>[] | undefined) ?? []) yield* planNodes(child);
}

async function explain(backend: Backend, dir: string, query: { sqlite: string; postgres: string }, params: unknown[]) {
  if (backend.name === "sqlite") {
    const db = new Database(path.join(dir, "homeserver.db"), { readonly: true });
    try {
      return { sqlite: (db.prepare(`EXPLAIN QUERY PLAN ${textOf(query, "sqlite")}`).all(...params) as { detail: string }[]).map((r) => r.detail) };
    } finally {
      db.close();
    }
  }
  const client = new pg.Client({ connectionString: postgresUrl(databaseNameFor(dir)) });
  await client.connect();
  try {
    let n = 0;
    const text = textOf(query, "postgres").replace(/\?/g, () => `$${++n}`);
    const rows = (await client.query(`EXPLAIN (ANALYZE, FORMAT JSON) ${text}`, params)).rows as { "QUERY PLAN": [{ Plan: Record<string, unknown> }] }[];
    return { postgres: [...planNodes(rows[0]!["QUERY PLAN"][0].Plan)] };
  } finally {
    await client.end();
  }
}

for (const backend of BACKENDS) {
  describe(`query plans on ${backend.name}`, () => {
    test("the auth state read looks up each key it is given, never the room's whole state", async (t) => {
      const db = freshDatabase(t, backend);
      const storage = await db.open();
      await seedBigRoom(storage);
      const keys = [
        ["m.room.create", ""],
        ["m.room.power_levels", ""],
        ["m.room.member", "@u7:test"],
      ] as const;

      const found = await storage.rooms.currentStateEvents(ROOM, keys);
      assert.deepEqual([...found.values()].map((e) => e.eventId).sort(), ["$s0", "$s1", "$s9"]);

      const plan = await explain(backend, db.dir, Q.currentStateEvents, [JSON.stringify(keys), ROOM]);
      if (plan.sqlite) {
        // The keys drive; each is one search on current_state's full key, then one on events.
        assert.match(plan.sqlite[0]!, /^SCAN k VIRTUAL TABLE/);
        assert.match(plan.sqlite[1]!, /^SEARCH c USING .*\(room_id=\? AND type=\? AND state_key=\?\)/);
        assert.match(plan.sqlite[2]!, /^SEARCH e USING .*\(event_id=\?\)/);
      } else {
        const stateReads = plan.postgres!.filter((n) => n["Relation Name"] === "current_state");
        assert.ok(stateReads.length > 0, "the plan reads current_state");
        for (const node of stateReads) {
          const examined = (Number(node["Actual Rows"]) + Number(node["Rows Removed by Filter"] ?? 0)) * Number(node["Actual Loops"]);
          assert.ok(examined <= keys.length, `current_state: ${node["Node Type"]} examined ${examined} rows for ${keys.length} keys`);
        }
      }
    });
  });
}
