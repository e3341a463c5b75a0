/**
 * The CLI contract, checked against the real binary: generate-config,
 * check-config, register-user, serve, usage errors and the log. Stopping on a
 * signal is in cli_stop.test.ts.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import { parse, stringify } from "yaml";
import { parseConfig } from "../src/config/load.js";
import { BIN, children, generated, getJson, login, run, serve, tempDir, TIMEOUT } from "./helpers/cli.js";
import { freePort, portIsFree } from "./helpers/ports.js";

describe("switchboard CLI", { concurrency: 3 }, () => {
  test("generate-config writes a commented 0600 YAML file with fresh secrets that check-config accepts", TIMEOUT, async () => {
    const dir = tempDir();
    const data = path.join(dir, "state");
    const first = path.join(dir, "conf", "first.yaml");
    const second = path.join(dir, "conf", "second.yaml");
    const [r1, r2] = await Promise.all([
      run(["generate-config", "--server-name", "example.org", "--output", first, "--data-dir", data], dir),
      run(["generate-config", "--server-name", "example.org", "--output", second, "--data-dir", data], dir),
    ]);
    assert.equal(r1.code, 0, r1.stderr);
    assert.equal(r1.stdout.trim(), `Wrote ${first}`);
    assert.equal(r2.code, 0, r2.stderr);

    assert.equal(statSync(first).mode & 0o777, 0o600);
    const text = readFileSync(first, "utf8");
    assert.ok(text.split("\n").filter((l) => l.trimStart().startsWith("#")).length >= 5, "the file explains itself in comments");
    const raw = parse(text) as Record<string, unknown>;
    assert.equal(raw.server_name, "example.org");
    assert.equal(typeof raw.registration_shared_secret, "string");
    assert.equal(raw.serve_server_wellknown, true, "a config for a real domain answers /.well-known/matrix/server");
    assert.ok((raw.registration_shared_secret as string).length >= 32);
    const other = parse(readFileSync(second, "utf8")) as Record<string, unknown>;
    assert.notEqual(other.registration_shared_secret, raw.registration_shared_secret, "each run makes its own secret");

    const { config } = parseConfig(text, first);
    assert.ok(config.signingKeyPath.startsWith(data + path.sep), `${config.signingKeyPath} is under ${data}`);
    assert.equal(config.database.kind, "sqlite");
    assert.ok(config.database.kind === "sqlite" && config.database.path.startsWith(data + path.sep));

    const check = await run(["check-config", "--config", first], dir);
    assert.equal(check.code, 0, check.stderr);
    assert.equal(check.stdout.trim(), `${first}: OK`);
    assert.equal(check.stderr, "");
  });

  test("generate-config refuses to overwrite an existing file", TIMEOUT, async () => {
    const dir = tempDir();
    const file = path.join(dir, "switchboard.yaml");
    writeFileSync(file, "# mine\n");
    const r = await run(["generate-config", "--server-name", "example.org", "--output", file], dir);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /already exists; not overwriting it/);
    assert.ok(r.stderr.includes(file));
    assert.equal(readFileSync(file, "utf8"), "# mine\n");
  });

  test("generate-config without --server-name exits 2 naming the flag", TIMEOUT, async () => {
    const dir = tempDir();
    const r = await run(["generate-config", "--output", "x.yaml"], dir);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /generate-config needs --server-name/);
    assert.match(r.stderr, /Usage:/);
    assert.equal(existsSync(path.join(dir, "x.yaml")), false);
  });

  test("bad usage exits 2 with the problem and the usage", TIMEOUT, async () => {
    const dir = tempDir();
    const [command, flag, misplaced] = await Promise.all([
      run(["frobnicate"], dir),
      run(["check-config", "--config", "x.yaml", "--frob"], dir),
      run(["check-config", "--config", "x.yaml", "--admin"], dir),
    ]);
    assert.equal(command.code, 2);
    assert.match(command.stderr, /^switchboard: unknown command: frobnicate$/m);
    assert.match(command.stderr, /^Usage:$/m);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /'--frob'/);
    assert.match(flag.stderr, /^Usage:$/m);
    assert.equal(misplaced.code, 2);
    assert.match(misplaced.stderr, /--admin does not apply to check-config/);
    for (const r of [command, flag, misplaced]) assert.equal(r.stdout, "");
    assert.equal(existsSync(path.join(dir, "switchboard.yaml")), false, "bad usage writes nothing");
  });

  test("a --worker-id that is not a plain name, or given to another command, exits 2 naming the flag", TIMEOUT, async () => {
    const dir = tempDir();
    const [bad, misplaced] = await Promise.all([
      run(["--worker-id", "a b%"], dir),
      run(["check-config", "--config", "x.yaml", "--worker-id", "w1"], dir),
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--worker-id takes 1 to 40 letters, digits, dots, dashes or underscores/);
    assert.equal(misplaced.code, 2);
    assert.match(misplaced.stderr, /--worker-id does not apply to check-config/);
    assert.equal(existsSync(path.join(dir, "switchboard.yaml")), false, "bad usage writes nothing");
  });

  test("--help prints the usage and exits 0", TIMEOUT, async () => {
    const r = await run(["--help"], tempDir());
    assert.equal(r.code, 0);
    assert.equal(r.stderr, "");
    for (const part of ["Usage:", "--config FILE", "generate-config --server-name NAME", "check-config", "register-user", "--admin"]) {
      assert.ok(r.stdout.includes(part), `usage mentions ${part}`);
    }
  });

  test("a --config file that does not exist is an error, for serve and check-config", TIMEOUT, async () => {
    const dir = tempDir();
    const [served, checked] = await Promise.all([run(["--config", "missing.yaml"], dir), run(["check-config", "-c", "missing.yaml"], dir)]);
    for (const r of [served, checked]) {
      assert.equal(r.code, 2);
      assert.match(r.stderr, /config file not found: missing\.yaml/);
    }
    assert.equal(existsSync(path.join(dir, "missing.yaml")), false, "a named file is never generated");
  });

  test("generate-config → register-user → serve → login, and a signing key in Synapse's format", TIMEOUT, async () => {
    const dir = tempDir();
    const port = await freePort();
    assert.ok(port);
    const file = await generated(dir, "example.org", port);
    const keyFile = path.join(dir, "data", "example.org.signing.key");
    assert.equal(existsSync(keyFile), false, "generate-config leaves the signing key to the first start");

    const [alice, bob] = await Promise.all([
      run(["register-user", "--config", file, "--user", "alice", "--password", "alice pw", "--admin"], dir),
      run(["register-user", "-c", file, "-u", "bob", "-p", "bob pw"], dir),
    ]);
    // Both opened the new database at once: one made the schema, the other waited for it.
    assert.equal(alice.code, 0, alice.stderr);
    assert.equal(alice.stdout.trim(), "Created admin user @alice:example.org");
    assert.equal(bob.code, 0, bob.stderr);
    assert.equal(bob.stdout.trim(), "Created user @bob:example.org");

    const again = await run(["register-user", "--config", file, "--user", "alice", "--password", "other"], dir);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /M_USER_IN_USE/);
    assert.equal(again.stdout, "");
    // A name no server would accept is bad usage: exit 2, naming the problem.
    const badName = await run(["register-user", "--config", file, "--user", "Bad Name", "--password", "pw"], dir);
    assert.equal(badName.code, 2);
    assert.match(badName.stderr, /M_INVALID_USERNAME/);
    assert.equal(badName.stdout, "");

    // register-user may already have made the key; serving must then keep it.
    const keyBefore = existsSync(keyFile) ? readFileSync(keyFile, "utf8") : undefined;
    const server = await serve(["--config", file], dir);
    try {
      assert.deepEqual(server.listening, [`http://127.0.0.1:${port}`]);
      const base = server.listening[0]!;
      const key = readFileSync(keyFile, "utf8");
      assert.match(key, /^ed25519 a_[A-Za-z0-9_]+ [A-Za-z0-9+/]{43}\n$/);
      if (keyBefore !== undefined) assert.equal(key, keyBefore);
      assert.equal(statSync(keyFile).mode & 0o777, 0o600);

      const res = await login(base, "alice", "alice pw");
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.user_id, "@alice:example.org");
      assert.equal(typeof res.body.access_token, "string");
      const who = await getJson(`${base}/_matrix/client/v3/account/whoami`, res.body.access_token as string);
      assert.equal(who.status, 200);
      assert.equal(who.body.user_id, "@alice:example.org");
      // --admin made alice an admin, and only her.
      const adminCall = await getJson(`${base}/_synapse/admin/v1/registration_tokens`, res.body.access_token as string);
      assert.equal(adminCall.status, 200, JSON.stringify(adminCall.body));

      const bobLogin = await login(base, "bob", "bob pw");
      assert.equal(bobLogin.status, 200);
      const notAdmin = await getJson(`${base}/_synapse/admin/v1/registration_tokens`, bobLogin.body.access_token as string);
      assert.equal(notAdmin.status, 403);

      const wrong = await login(base, "alice", "not it");
      assert.equal(wrong.status, 403);
      assert.equal(wrong.body.errcode, "M_FORBIDDEN");

      // register-user beside the running server, on the same database: the server sees the user.
      const dave = await run(["register-user", "--config", file, "--user", "dave", "--password", "dave pw"], dir);
      assert.equal(dave.code, 0, dave.stderr);
      const daveLogin = await login(base, "dave", "dave pw");
      assert.equal(daveLogin.status, 200, JSON.stringify(daveLogin.body));
      assert.equal(daveLogin.body.user_id, "@dave:example.org");
    } finally {
      server.child.kill("SIGTERM");
    }
    const end = await server.exited;
    assert.equal(end.code, 0, end.stderr);
  });

  test("serve with no --config writes ./switchboard.yaml, says so, and serves on 127.0.0.1:8008", TIMEOUT, async (t) => {
    if (!(await portIsFree(8008))) {
      t.skip("port 8008 on 127.0.0.1 is in use on this machine");
      return;
    }
    const dir = tempDir();
    const server = await serve([], dir);
    try {
      const file = path.join(dir, "switchboard.yaml");
      assert.equal(server.stderr(), `No switchboard.yaml here, so wrote a new one: ${file}\n`);
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.deepEqual(server.listening, ["http://127.0.0.1:8008"]);
      const { config } = parseConfig(readFileSync(file, "utf8"), file);
      assert.equal(config.serverName, "localhost");
      assert.equal(config.database.kind === "sqlite" && config.database.path, path.join(dir, "data", "homeserver.db"));
      const versions = await getJson("http://127.0.0.1:8008/_matrix/client/versions");
      assert.equal(versions.status, 200);
      assert.ok(existsSync(path.join(dir, "data", "homeserver.db")));
    } finally {
      server.child.kill("SIGTERM");
    }
    const end = await server.exited;
    assert.equal(end.code, 0, end.stderr);
  });

  test("on a terminal the log is readable text, not JSON", TIMEOUT, async (t) => {
    // `script` (util-linux) runs the server on a pseudo-terminal.
    if (!["/usr/bin/script", "/bin/script"].some((p) => existsSync(p))) return t.skip("no `script` command to make a terminal");
    const dir = tempDir();
    const file = await generated(dir, "localhost", 0);
    const command = [process.execPath, BIN, "--config", file].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
    const child = spawn("script", ["-qec", command, "/dev/null"], { cwd: dir, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    let out = "";
    child.stdout.setEncoding("utf8");
    const closed = new Promise<void>((resolve) => child.on("close", () => resolve()));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (d: string) => {
          out += d;
          if (out.includes("Switchboard is running")) resolve();
        });
        void closed.then(() => reject(new Error(`exited before it was running:\n${out}`)));
      });
    } finally {
      try {
        process.kill(-child.pid!, "SIGTERM"); // `script` and the server under it
      } catch {
        // already gone
      }
    }
    await closed;
    // eslint-disable-next-line no-control-regex
    const plain = out.replace(/\x1b\[[0-9;]*m/g, "");
    const line = plain.split(/\r?\n/).find((l) => l.includes("Switchboard is running"));
    assert.ok(line, plain);
    assert.match(line, /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [+-]\d{4}\] INFO \(\d+\): Switchboard is running$/);
  });

  test("config warnings are printed by check-config and logged when serving", TIMEOUT, async () => {
    const dir = tempDir();
    const file = await generated(dir, "example.org", 0);
    const raw = parse(readFileSync(file, "utf8")) as Record<string, unknown>;
    raw.matrix_rtc = {
      transports: [
        { type: "livekit", livekit_service_url: "http://127.0.0.1:8080/livekit/jwt" },
        { type: "org.example.custom", url: "https://focus.example.org" },
      ],
    };
    writeFileSync(file, stringify(raw));
    const expected = [
      "matrix_rtc.transports[0].livekit_service_url uses plain http; that only works for clients on this machine",
      'matrix_rtc.transports[1] has type "org.example.custom", which Switchboard does not know; it is served to clients as written',
    ];

    const check = await run(["check-config", "--config", file], dir);
    assert.equal(check.code, 0, check.stderr);
    assert.equal(check.stdout.trim(), `${file}: OK`);
    assert.deepEqual(check.stderr.trim().split("\n"), expected.map((w) => `warning: ${w}`));

    const server = await serve(["-c", file], dir);
    server.child.kill("SIGTERM");
    const end = await server.exited;
    const warned = end.stdout
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { level: number; msg: string })
      .filter((l) => l.level === 40)
      .map((l) => l.msg);
    assert.deepEqual(warned, expected);
  });
});
