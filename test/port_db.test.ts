/**
 * `switchboard port-db`, against the real binary: a server on SQLite gets real traffic, is
 * stopped and ported into PostgreSQL, and a server on the copy carries on where it left off:
 * the same access tokens, `/sync` continuing from the old `next_batch` without repeating or
 * missing anything, the device keys, and a pending delayed event that fires once. Also the
 * refusals (while the SQLite server runs; into a database that has data) and a copy that fails
 * part-way, which leaves no row behind. Needs a PostgreSQL server (SWITCHBOARD_TEST_POSTGRES);
 * the usage checks run without one.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import Database from "better-sqlite3";
import pg from "pg";
import { databaseSection as portedSection, maskedDsn } from "../src/storage/port/index.js";
import { run, tempDir } from "./helpers/cli.js";
import { createTestDatabase, dropTestDatabase, postgresUrl, TEST_POSTGRES } from "./helpers/database.js";
import { delayedSend, delayIdOf, finalised, manage, sharedRoom, statusOf, withMarker } from "./helpers/delayed.js";
import { enc, ok, User } from "./helpers/rooms.js";
import { request, startServer, type TestServer } from "./helpers/server.js";

const LONG = { timeout: 180_000 };
const STICKY = "org.matrix.msc4354.sticky_duration_ms";

interface Ev {
  event_id?: string;
  type: string;
  content: Record<string, unknown>;
}
interface SyncBody {
  next_batch: string;
  account_data?: { events: Ev[] };
  to_device?: { events: Ev[] };
  device_one_time_keys_count?: Record<string, number>;
  rooms?: { join?: Record<string, { timeline: { events: Ev[] }; msc4354_sticky?: { events: Ev[] } }> };
}

async function sync(u: User, query: Record<string, string | number> = {}): Promise<SyncBody> {
  const qs = new URLSearchParams(Object.entries(query).map(([k, v]): [string, string] => [k, String(v)]));
  return ok(await request(u.baseUrl, "GET", `/_matrix/client/v3/sync?${qs}`, { token: u.token })) as unknown as SyncBody;
}

const timelineOf = (s: SyncBody, roomId: string) => (s.rooms?.join?.[roomId]?.timeline.events ?? []).map((e) => e.event_id);
/** The same login on another server (the one on the ported database). */
const on = (baseUrl: string, u: User) => new User(baseUrl, u.userId, u.token, u.deviceId);

describe("port-db: usage", () => {
  test("a missing or non-PostgreSQL --to-postgres, and a config that is not on SQLite, are bad usage (exit 2)", LONG, async () => {
    const dir = tempDir();
    const sqlite = path.join(dir, "sqlite.yaml");
    writeFileSync(sqlite, JSON.stringify({ server_name: "localhost", database: { name: "sqlite3", args: { database: path.join(dir, "h.db") } } }));
    const noTarget = await run(["port-db", "--config", sqlite], dir);
    assert.equal(noTarget.code, 2);
    assert.match(noTarget.stderr, /port-db needs --to-postgres/);
    const notPostgres = await run(["port-db", "--config", sqlite, "--to-postgres", "mysql://localhost/x"], dir);
    assert.equal(notPostgres.code, 2);
    assert.match(notPostgres.stderr, /--to-postgres takes a PostgreSQL URL/);
    const onPostgres = path.join(dir, "pg.yaml");
    writeFileSync(onPostgres, JSON.stringify({ server_name: "localhost", database: { name: "psycopg2", args: { dsn: "postgres://u@127.0.0.1:1/x" } } }));
    const wrongSource = await run(["port-db", "--config", onPostgres, "--to-postgres", "postgres://u@127.0.0.1:1/y"], dir);
    assert.equal(wrongSource.code, 2);
    assert.match(wrongSource.stderr, /`database\.name` in .* is not sqlite3/);
    const missing = await run(["port-db", "--config", sqlite, "--to-postgres", "postgres://u@127.0.0.1:1/y"], dir);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, `switchboard: there is no SQLite database at ${path.join(dir, "h.db")}\n`);
  });

  test("the config block shows the password as <password>, in the user part or a parameter", () => {
    assert.equal(maskedDsn("postgres://sb:s3cret@db.example:5433/matrix?sslmode=require"), "postgres://sb:<password>@db.example:5433/matrix?sslmode=require");
    assert.equal(maskedDsn("postgresql://sb@db.example/matrix?password=s3cret"), "postgresql://sb@db.example/matrix?password=<password>");
    assert.equal(maskedDsn("postgres://sb@db.example/matrix"), "postgres://sb@db.example/matrix");
    assert.equal(portedSection("postgres://sb:s3cret@h/m"), 'database:\n  name: psycopg2\n  args:\n    dsn: "postgres://sb:<password>@h/m"');
  });
});

describe("port-db: SQLite to PostgreSQL", { skip: TEST_POSTGRES ? false : "SWITCHBOARD_TEST_POSTGRES is not set: port-db needs a PostgreSQL server to port into" }, () => {
  let dir: string;
  let configFile: string;
  let target: string;
  let dsn: string;
  let sqliteServer: TestServer | undefined;
  let pgServer: TestServer | undefined;
  let alice: User;
  let bob: User;
  let roomId: string;
  let delayId: string;
  let stickyId: string;
  let oldBatch: string;
  const sent: string[] = [];
  const sqliteDb = () => ({ name: "sqlite3", args: { database: path.join(dir, "homeserver.db") } });

  before(async () => {
    dir = tempDir();
    target = await createTestDatabase(dir);
    dsn = postgresUrl(target);
    configFile = path.join(dir, "switchboard.yaml");
    writeFileSync(configFile, JSON.stringify({ server_name: "localhost", database: sqliteDb(), signing_key_path: path.join(dir, "signing.key") }));
    sqliteServer = await startServer({ database: sqliteDb() }, { dir });
    const base = sqliteServer.baseUrl;
    alice = await User.register(base, "alice");
    bob = await User.register(base, "bob");
    roomId = await sharedRoom(alice, [bob], { name: "ported" });
    for (let i = 0; i < 3; i++) sent.push(await alice.send(roomId, `before ${i}`), await bob.send(roomId, `reply ${i}`));
    ok(await alice.req("PUT", `/user/${enc(alice.userId)}/account_data/org.example.setting`, { theme: "dark" }));
    ok(await alice.req("PUT", `/user/${enc(alice.userId)}/rooms/${enc(roomId)}/account_data/org.example.room`, { pinned: true }));
    ok(await bob.req("POST", `/rooms/${enc(roomId)}/receipt/m.read/${enc(sent.at(-1)!)}`, {}));
    ok(
      await alice.req("POST", "/keys/upload", {
        device_keys: {
          user_id: alice.userId,
          device_id: alice.deviceId,
          algorithms: ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
          keys: { [`curve25519:${alice.deviceId}`]: "curve-a", [`ed25519:${alice.deviceId}`]: "ed-a" },
          signatures: { [alice.userId]: { [`ed25519:${alice.deviceId}`]: "sig" } },
        },
        one_time_keys: Object.fromEntries([0, 1, 2].map((i) => [`signed_curve25519:K${i}`, { key: `otk-${i}`, signatures: {} }])),
      }),
    );
    ok(await bob.req("PUT", `/sendToDevice/org.example.ping/t1`, { messages: { [alice.userId]: { [alice.deviceId]: { n: 1 } } } }));
    const res = await bob.req("PUT", `/rooms/${enc(roomId)}/send/org.example.sticky/s1?${STICKY}=3600000`, { msc4354_sticky_key: "k" });
    stickyId = ok(res).event_id as string;
    // Long enough to be pending at the port; restarted just before the stop, below.
    delayId = delayIdOf(await delayedSend(alice, roomId, { marker: "ported-delay" }, 10_000));
    oldBatch = (await sync(alice)).next_batch;
    // After alice's last sync: these must reach her on the ported server, once.
    ok(await bob.req("PUT", `/sendToDevice/org.example.ping/t2`, { messages: { [alice.userId]: { [alice.deviceId]: { n: 2 } } } }));
    ok(await alice.req("PUT", `/user/${enc(alice.userId)}/account_data/org.example.after`, { late: true }));
  });

  after(async () => {
    await sqliteServer?.stop();
    await pgServer?.stop();
    await dropTestDatabase(dir);
  });

  /** Runs a query on the target database. */
  async function onTarget<T extends pg.QueryResultRow>(sql: string): Promise<T[]> {
    const client = new pg.Client({ connectionString: dsn });
    await client.connect();
    try {
      return (await client.query<T>(sql)).rows;
    } finally {
      await client.end();
    }
  }

  test("refuses while the SQLite server runs, and leaves PostgreSQL untouched", LONG, async () => {
    const r = await run(["port-db", "--config", configFile, "--to-postgres", dsn], dir);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^switchboard: the SQLite database is in use by a running server \(.*homeserver\.db\): stop it, then run port-db again\n$/);
    const tables = await onTarget("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()");
    assert.deepEqual(tables, [], "nothing was created in the target");
  });

  test("a copy that fails part-way leaves no row behind", LONG, async () => {
    ok(await manage(sqliteServer!.baseUrl, delayId, "restart"));
    assert.equal((await statusOf(alice, delayId)).status, "scheduled");
    await sqliteServer!.stop();
    sqliteServer = undefined;
    // PostgreSQL's text cannot hold NUL; profiles is copied after users, rooms and events.
    // Closed before port-db runs, which would otherwise (rightly) find the file in use.
    const setName = (name: string | null) => {
      const file = new Database(path.join(dir, "homeserver.db"));
      try {
        const old = file.prepare("SELECT displayname FROM profiles WHERE user_id = ?").get(bob.userId) as { displayname: string | null };
        file.prepare("UPDATE profiles SET displayname = ? WHERE user_id = ?").run(name, bob.userId);
        return old.displayname;
      } finally {
        file.close();
      }
    };
    const displayname = setName("bob\0");
    const r = await run(["port-db", "--config", configFile, "--to-postgres", dsn], dir);
    setName(displayname);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, "switchboard: a value in profiles.displayname holds a NUL character, which PostgreSQL cannot store\n");
    assert.match(r.stdout, /^ {2}events +\d+$/m, "events were copied before the failure");
    const [counts] = await onTarget<{ users: string; events: string; rooms: string }>(
      "SELECT (SELECT COUNT(*) FROM users) AS users, (SELECT COUNT(*) FROM events) AS events, (SELECT COUNT(*) FROM rooms) AS rooms",
    );
    assert.deepEqual(counts, { users: "0", events: "0", rooms: "0" }, "the schema is there, without a row");
  });

  test("ports the stopped server's data into the database left by the failed port, and verifies it", LONG, async () => {
    const r = await run(["port-db", "--config", configFile, "--to-postgres", dsn], dir);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    assert.match(r.stdout, new RegExp(`into the PostgreSQL database ${target}, in one transaction:`));
    assert.match(r.stdout, /^ {2}users +2$/m);
    assert.match(r.stdout, /^ {2}e2e_one_time_keys +3$/m);
    assert.match(r.stdout, /^ {2}delayed_events +1$/m);
    assert.match(r.stdout, /Verified: every table has as many rows in PostgreSQL as in SQLite/);
    assert.ok(r.stdout.includes(portedSection(dsn)), r.stdout);
    const password = new URL(dsn).password;
    if (password) assert.ok(!r.stdout.includes(password), "the real password is never printed");
    // users must come before the tables that reference it.
    assert.ok(r.stdout.indexOf("  users ") < r.stdout.indexOf("  devices "));
  });

  test("refuses a target that has data, naming it, and leaves it as it was", LONG, async () => {
    const r = await run(["port-db", "--config", configFile, "--to-postgres", dsn], dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^switchboard: the PostgreSQL database ${target} has data \\(2 users, \\d+ events, 1 rooms\\)\n$`));
    assert.equal(r.stdout, "");
  });

  test("a server on PostgreSQL carries on: tokens, /sync, keys, sticky and delayed events", LONG, async () => {
    pgServer = await startServer({ database: { name: "psycopg2", args: { dsn } } }, { dir });
    const a = on(pgServer.baseUrl, alice);
    const b = on(pgServer.baseUrl, bob);
    for (const u of [a, b]) {
      assert.deepEqual(ok(await u.req("GET", "/account/whoami")), { user_id: u.userId, device_id: u.deviceId, is_guest: false });
    }

    const keys = ok(await b.req("POST", "/keys/query", { device_keys: { [a.userId]: [] } })) as { device_keys: Record<string, Record<string, { keys: unknown }>> };
    assert.deepEqual(keys.device_keys[a.userId]![a.deviceId]!.keys, { [`curve25519:${a.deviceId}`]: "curve-a", [`ed25519:${a.deviceId}`]: "ed-a" });
    assert.deepEqual(ok(await a.req("POST", "/keys/upload", {})), { one_time_key_counts: { signed_curve25519: 3 } });

    // The delayed event was pending in SQLite; it fires here, once.
    const done = await finalised(a, delayId, 60_000);
    assert.equal(done.outcome, "send");
    assert.equal(done.reason, "delay");
    const fired = await withMarker(b, roomId, "ported-delay");
    assert.deepEqual(fired.map((e) => e.event_id), [done.event_id]);

    // From the old next_batch: only what happened after it, nothing from before.
    const next = await sync(a, { since: oldBatch, timeout: 0 });
    assert.deepEqual(timelineOf(next, roomId), [done.event_id]);
    assert.deepEqual((next.to_device?.events ?? []).map((e) => e.content), [{ n: 2 }]);
    assert.deepEqual((next.account_data?.events ?? []).map((e) => e.type), ["org.example.after"]);
    assert.equal(next.device_one_time_keys_count?.signed_curve25519, 3);

    const fresh = await b.send(roomId, "after the port");
    assert.ok(!sent.includes(fresh));
    const last = await sync(a, { since: next.next_batch, timeout: 10_000 });
    assert.deepEqual(timelineOf(last, roomId), [fresh]);
    assert.deepEqual(last.to_device?.events ?? [], []);

    // The whole history is there, in order, and the sticky event is still live.
    const history = (ok(await a.messages(roomId, { dir: "f", limit: 100 })).chunk as Ev[]).map((e) => e.event_id);
    const positions = [...sent, stickyId, done.event_id, fresh].map((id) => history.indexOf(id));
    assert.ok(positions.every((p, i) => p >= 0 && (i === 0 || p > positions[i - 1]!)), JSON.stringify(positions));
    const initial = await sync(b, { filter: JSON.stringify({ room: { timeline: { limit: 1 } } }) });
    assert.deepEqual((initial.rooms?.join?.[roomId]?.msc4354_sticky?.events ?? []).map((e) => e.event_id), [stickyId]);
  });
});
