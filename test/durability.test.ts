/**
 * Durability, against the real binary: an acknowledged registration survives
 * `kill -9`, and a database from a newer Switchboard is refused. On SQLite or, with
 * SWITCHBOARD_TEST_POSTGRES, on PostgreSQL (see helpers/database.ts).
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { databaseYaml, openTestDatabase, removeTestData } from "./helpers/database.js";

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../src/main.js");
const TIMEOUT = { timeout: 90_000 };

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface Running {
  child: ChildProcess;
  exited: Promise<Result>;
  /** Resolves to the first listening URL, from the "Switchboard is running" log line. */
  ready: Promise<string>;
}

const children = new Set<ChildProcess>();
const dirs: string[] = [];
after(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const dir of dirs) await removeTestData(dir);
});

function start(args: string[], cwd: string): Running {
  const child = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ["ignore", "pipe", "pipe"], timeout: 60_000 });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8");
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const exited = new Promise<Result>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  const ready = new Promise<string>((resolve, reject) => {
    let buffer = "";
    child.stdout.on("data", (d: string) => {
      stdout += d;
      buffer += d;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        try {
          const entry = JSON.parse(line) as { msg?: string; listening?: string[] };
          if (entry.msg === "Switchboard is running" && entry.listening?.[0]) resolve(entry.listening[0]);
        } catch {
          // not a log line
        }
      }
    });
    exited.then((r) => reject(new Error(`switchboard exited (${r.code}/${r.signal}) before it was ready:\n${r.stderr}`)), reject);
  });
  ready.catch(() => {}); // a test that expects an exit awaits `exited` instead
  return { child, exited, ready };
}

/**
 * A config in a new temp dir: open registration, a free port, everything under the dir (the
 * SQLite file `db` included; on PostgreSQL the dir's own database).
 */
async function setup(): Promise<{ dir: string; file: string; db: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-durability-"));
  dirs.push(dir);
  const file = path.join(dir, "switchboard.yaml");
  writeFileSync(
    file,
    [
      "server_name: durable.test",
      "listeners:",
      "  - port: 0",
      "    bind_addresses: ['127.0.0.1']",
      (await databaseYaml(dir, "db/homeserver.db")).trimEnd(),
      "signing_key_path: keys/signing.key",
      "enable_registration: true",
      "enable_registration_without_verification: true",
      "log_level: info",
      "",
    ].join("\n"),
  );
  return { dir, file, db: path.join(dir, "db", "homeserver.db") };
}

async function call(
  base: string,
  method: string,
  urlPath: string,
  body?: unknown,
  token?: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(base + urlPath, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe("durability", { concurrency: 3 }, () => {
  test("a registration acknowledged just before kill -9 survives, with its access token", TIMEOUT, async () => {
    const { dir, file, db } = await setup();
    const first = start(["--config", file], dir);
    const base1 = await first.ready;

    // The user-interactive flow as a client runs it: ask, then complete m.login.dummy.
    const account = { username: "dana", password: "dana's password", initial_device_display_name: "laptop" };
    const ask = await call(base1, "POST", "/_matrix/client/v3/register", account);
    assert.equal(ask.status, 401);
    assert.equal(typeof ask.body.session, "string");
    const done = await call(base1, "POST", "/_matrix/client/v3/register", {
      ...account,
      auth: { type: "m.login.dummy", session: ask.body.session },
    });
    // No grace period: the process dies as soon as the answer is in.
    assert.ok(first.child.pid !== undefined);
    process.kill(first.child.pid, "SIGKILL");
    assert.equal(done.status, 200, JSON.stringify(done.body));
    assert.equal(done.body.user_id, "@dana:durable.test");
    const killed = await first.exited;
    assert.equal(killed.signal, "SIGKILL");

    const second = start(["--config", file], dir);
    try {
      const base2 = await second.ready;
      const who = await call(base2, "GET", "/_matrix/client/v3/account/whoami", undefined, done.body.access_token as string);
      assert.equal(who.status, 200, JSON.stringify(who.body));
      assert.deepEqual(who.body, { user_id: "@dana:durable.test", device_id: done.body.device_id, is_guest: false });

      const login = await call(base2, "POST", "/_matrix/client/v3/login", {
        type: "m.login.password",
        identifier: { type: "m.id.user", user: "dana" },
        password: account.password,
      });
      assert.equal(login.status, 200, JSON.stringify(login.body));
      assert.equal(login.body.user_id, "@dana:durable.test");
      assert.notEqual(login.body.device_id, done.body.device_id);

      const taken = await call(base2, "GET", "/_matrix/client/v3/register/available?username=dana");
      assert.equal(taken.status, 400);
      assert.equal(taken.body.errcode, "M_USER_IN_USE");
    } finally {
      second.child.kill("SIGTERM");
    }
    const end = await second.exited;
    assert.equal(end.code, 0, end.stderr);

    // At rest: a write-ahead log (SQLite's journal mode; PostgreSQL always has one), a
    // memory-hard password hash, and only hashes of tokens.
    const rest = await openTestDatabase(dir, { sqliteFile: db, readonly: true });
    try {
      if (rest.backend === "sqlite") {
        const [mode] = await rest.all<{ journal_mode: string }>("PRAGMA journal_mode");
        assert.equal(mode?.journal_mode, "wal");
      }
      const [user] = await rest.all<{ password_hash: string }>("SELECT password_hash FROM users WHERE user_id = ?", ["@dana:durable.test"]);
      assert.match(user!.password_hash, /^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
      const token = done.body.access_token as string;
      const hashes = (await rest.all<{ token_hash: string }>("SELECT token_hash FROM access_tokens")).map((r) => r.token_hash);
      assert.ok(hashes.includes(createHash("sha256").update(token).digest("hex")), "the token's SHA-256 is stored");
      assert.ok(!hashes.includes(token), "the token itself is not");
      if (rest.backend === "sqlite") {
        const file = readFileSync(db);
        for (const secret of [token, account.password]) assert.equal(file.indexOf(secret), -1, "no secret in the database file");
      } else {
        // No file to read: every row of every table of ours, as text, instead.
        const tables = await rest.all<{ name: string }>("SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()");
        assert.ok(tables.some((t) => t.name === "access_tokens"));
        for (const { name } of tables) {
          const rows = await rest.all<{ row: string }>(`SELECT t::text AS row FROM "${name}" t`);
          for (const { row } of rows) {
            for (const secret of [token, account.password]) assert.equal(row.indexOf(secret), -1, `no secret in table ${name}`);
          }
        }
      }
    } finally {
      await rest.close();
    }
  });

  test("a database written by a newer Switchboard is refused, and left as it was", TIMEOUT, async () => {
    const { dir, file, db } = await setup();
    const made = await start(["register-user", "--config", file, "--user", "erin", "--password", "pw"], dir).exited;
    assert.equal(made.code, 0, made.stderr);

    const edit = await openTestDatabase(dir, { sqliteFile: db });
    const [row] = await edit.all<{ version: number }>("SELECT version FROM schema_version");
    const known = row!.version;
    assert.ok(known >= 1);
    await edit.run("UPDATE schema_version SET version = 999");
    await edit.close();

    const [served, registered] = await Promise.all([
      start(["--config", file], dir).exited,
      start(["register-user", "--config", file, "--user", "frank", "--password", "pw"], dir).exited,
    ]);
    for (const [what, r] of [["serve", served], ["register-user", registered]] as const) {
      assert.equal(r.signal, null, what);
      assert.equal(r.code, 1, `${what}: ${r.stderr}`);
      assert.ok(
        r.stderr.includes(`the database is at schema version 999, but this Switchboard knows only up to ${known}`),
        `${what}: ${r.stderr}`,
      );
      assert.match(r.stderr, /it was written by a newer Switchboard/);
      assert.doesNotMatch(r.stdout, /Switchboard is running/);
    }

    const after = await openTestDatabase(dir, { sqliteFile: db, readonly: true });
    try {
      assert.deepEqual(await after.all("SELECT version FROM schema_version"), [{ version: 999 }]);
      const [users] = await after.all<{ n: number }>("SELECT CAST(count(*) AS INTEGER) AS n FROM users");
      assert.equal(users?.n, 1, "nothing was written");
    } finally {
      await after.close();
    }
  });

  test("an upload acknowledged just before kill -9 survives; one cut off by it leaves nothing behind", TIMEOUT, async () => {
    const { dir, file } = await setup();
    const store = path.join(dir, "data", "media_store");
    const first = start(["--config", file], dir);
    const base1 = await first.ready;
    const reg = await call(base1, "POST", "/_matrix/client/v3/register", { username: "fay", password: "pw", auth: { type: "m.login.dummy" } });
    const token = reg.body.access_token as string;

    // Half of a 2 MB upload is in, held open, when the process dies.
    const cut = httpRequest(`${base1}/_matrix/media/v3/upload`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/octet-stream", "content-length": String(2 * 1024 * 1024) },
    });
    cut.on("error", () => {}); // the server dies under it
    cut.write(Buffer.alloc(1024 * 1024, 1));
    await waitFor(() => listFiles(path.join(store, "tmp")).length === 1, "the cut-off upload's temporary file");

    const bytes = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251));
    const res = await fetch(`${base1}/_matrix/media/v3/upload?filename=kept.bin`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/octet-stream" },
      body: bytes,
    });
    assert.ok(first.child.pid !== undefined);
    process.kill(first.child.pid, "SIGKILL");
    assert.equal(res.status, 200);
    const id = ((await res.json()) as { content_uri: string }).content_uri.split("/").pop()!;
    await first.exited;

    const second = start(["--config", file], dir);
    try {
      const base2 = await second.ready;
      const got = await fetch(`${base2}/_matrix/client/v1/media/download/durable.test/${id}`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(got.status, 200);
      assert.deepEqual(Buffer.from(await got.arrayBuffer()), bytes);
      // The dead process's temporary file is swept (at once on SQLite; on PostgreSQL once the
      // processes on the database have had time to say they are alive).
      await waitFor(() => listFiles(path.join(store, "tmp")).length === 0, "the sweep of the dead process's temporary file");
      // Only the acknowledged upload has a file under a media ID.
      assert.deepEqual(listFiles(path.join(store, "local_content")), [path.join(id.slice(0, 2), id.slice(2, 4), id.slice(4))]);
    } finally {
      second.child.kill("SIGTERM");
    }
    assert.equal((await second.exited).code, 0);
  });
});

/** Every file under `dir`, relative to it. */
function listFiles(dir: string): string[] {
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
  } catch {
    return [];
  }
}

async function waitFor(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 600 && !done(); i++) await new Promise((resolve) => setTimeout(resolve, 50));
  if (!done()) throw new Error(`gave up waiting for ${what}`);
}
