/**
 * The CLI contract, checked against the real binary: generate-config,
 * check-config, register-user, serve, usage errors and signals.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { parse, stringify } from "yaml";
import { parseConfig } from "../src/config/load.js";

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../src/main.js");
const TIMEOUT = { timeout: 90_000 };

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface Serving {
  child: ChildProcess;
  /** The URLs from the "Switchboard is running" log line. */
  listening: string[];
  exited: Promise<Result>;
  stderr(): string;
  stdout(): string;
}

const children = new Set<ChildProcess>();
const dirs: string[] = [];

after(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-cli-"));
  dirs.push(dir);
  return dir;
}

function start(args: string[], cwd: string): { child: ChildProcess; exited: Promise<Result>; out: { stdout: string; stderr: string } } {
  // The spawn timeout only stops a process that should have exited but kept serving.
  const child = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ["ignore", "pipe", "pipe"], timeout: 60_000 });
  children.add(child);
  const out = { stdout: "", stderr: "" };
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (out.stdout += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (out.stderr += d));
  const exited = new Promise<Result>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, ...out }));
  });
  return { child, exited, out };
}

/** Runs a command that is expected to finish on its own. */
function run(args: string[], cwd: string): Promise<Result> {
  return start(args, cwd).exited;
}

/** Starts `switchboard [args]` and waits for its "Switchboard is running" log line. */
async function serve(args: string[], cwd: string): Promise<Serving> {
  const { child, exited, out } = start(args, cwd);
  const listening = await new Promise<string[]>((resolve, reject) => {
    let buffer = "";
    child.stdout!.on("data", (d: string) => {
      buffer += d;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        let entry: { msg?: string; listening?: string[] } = {};
        try {
          entry = JSON.parse(line) as typeof entry;
        } catch {
          continue;
        }
        if (entry.msg === "Switchboard is running") resolve(entry.listening ?? []);
      }
    });
    exited.then((r) => reject(new Error(`switchboard exited (${r.code}/${r.signal}) before it was ready:\n${r.stderr}`)), reject);
  });
  return { child, listening, exited, stderr: () => out.stderr, stdout: () => out.stdout };
}

function freePort(host = "127.0.0.1", port = 0): Promise<number | undefined> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once("error", () => resolve(undefined));
    probe.listen(port, host, () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === "object" && address ? address.port : undefined));
    });
  });
}

async function postJson(url: string, body: unknown, token?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function getJson(url: string, token?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const login = (baseUrl: string, user: string, password: string) =>
  postJson(`${baseUrl}/_matrix/client/v3/login`, { type: "m.login.password", identifier: { type: "m.id.user", user }, password });

/** generate-config into dir/switchboard.yaml with its data under dir/data, listening on `port`. */
async function generated(dir: string, serverName: string, port: number): Promise<string> {
  const file = path.join(dir, "switchboard.yaml");
  const r = await run(["generate-config", "--server-name", serverName, "--output", file, "--data-dir", path.join(dir, "data")], dir);
  assert.equal(r.code, 0, r.stderr);
  const text = readFileSync(file, "utf8");
  assert.match(text, /^ {2}- port: 8008$/m);
  writeFileSync(file, text.replace(/^ {2}- port: 8008$/m, `  - port: ${port}`));
  return file;
}

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
    if ((await freePort("127.0.0.1", 8008)) === undefined) {
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

  interface Answer {
    status: number | undefined;
    connection: string | undefined;
    body: Record<string, unknown>;
  }

  /**
   * Logs in with `Expect: 100-continue`: once the "100 Continue" arrives the
   * server has taken the request in, and only then is `signal` sent and the body
   * written. `agent` keeps connections alive, as clients do.
   */
  function loginAcrossSignal(baseUrl: string, agent: http.Agent, child: ChildProcess, signal: NodeJS.Signals): Promise<Answer> {
    const url = new URL(`${baseUrl}/_matrix/client/v3/login`);
    const body = JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: "carol" }, password: "carol pw" });
    return new Promise<Answer>((resolve, reject) => {
      const req = http.request(url, {
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), expect: "100-continue" },
      });
      req.on("continue", () => {
        if (!child.kill(signal)) reject(new Error(`could not send ${signal}`));
        req.end(body);
      });
      req.on("response", (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (d: string) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode, connection: res.headers.connection, body: JSON.parse(text) as Record<string, unknown> }));
        res.on("error", reject);
      });
      req.on("error", reject);
      req.flushHeaders();
    });
  }

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

  test("SIGTERM and SIGINT let an in-flight request finish, then exit 0", TIMEOUT, async (t) => {
    const dir = tempDir();
    const file = await generated(dir, "example.org", 0);
    const made = await run(["register-user", "--config", file, "--user", "carol", "--password", "carol pw"], dir);
    assert.equal(made.code, 0, made.stderr);
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      await t.test(signal, async () => {
        const server = await serve(["-c", file], dir);
        // The client holds its connection open until the server is gone: stopping must not wait for it.
        const agent = new http.Agent({ keepAlive: true });
        let answer, end;
        try {
          answer = await loginAcrossSignal(server.listening[0]!, agent, server.child, signal);
          end = await server.exited;
        } finally {
          if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill("SIGKILL");
          agent.destroy();
        }
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        assert.equal(answer.body.user_id, "@carol:example.org");
        assert.equal(answer.connection, "close", "the answer ends its keep-alive connection, so the close need not wait for the client");
        assert.equal(end.signal, null);
        assert.equal(end.code, 0, end.stderr);
        const lines = end.stdout
          .split("\n")
          .filter((l) => l.startsWith("{"))
          .map((l) => JSON.parse(l) as { msg: string; signal?: string; path?: string; status?: number });
        const stopping = lines.findIndex((l) => l.msg === "stopping: finishing in-flight requests" && l.signal === signal);
        const served = lines.findIndex((l) => l.msg === "request" && l.path === "/_matrix/client/v3/login" && l.status === 200);
        const stopped = lines.findIndex((l) => l.msg === "stopped");
        assert.ok(stopping >= 0 && served > stopping && stopped > served, `the log shows stop, the request, then stopped:\n${end.stdout}`);
      });
    }
  });

  test("once stopping, new connections are refused while a request in flight still finishes", TIMEOUT, async () => {
    const dir = tempDir();
    const file = await generated(dir, "example.org", 0);
    const made = await run(["register-user", "--config", file, "--user", "dan", "--password", "dan pw"], dir);
    assert.equal(made.code, 0, made.stderr);
    const server = await serve(["-c", file], dir);
    const url = new URL(`${server.listening[0]!}/_matrix/client/v3/login`);
    const body = JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: "dan" }, password: "dan pw" });
    const half = body.length >> 1;
    // The test holds the request in flight by sending only half of its body until the end. The
    // signal waits for "100 Continue": by then the server has the request, not just bytes in a socket.
    const req = http.request(url, {
      method: "POST",
      agent: false,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), expect: "100-continue" },
    });
    const received = new Promise<void>((resolve) => req.once("continue", () => resolve()));
    try {
      const answered = new Promise<{ status?: number; connection?: string; body: Record<string, unknown> }>((resolve, reject) => {
        req.on("response", (res) => {
          let text = "";
          res.setEncoding("utf8").on("data", (d: string) => (text += d));
          res.on("end", () => resolve({ status: res.statusCode, connection: res.headers.connection, body: JSON.parse(text) as Record<string, unknown> }));
          res.on("error", reject);
        });
        req.on("error", reject);
      });
      answered.catch(() => {}); // awaited below; a failure before then is reported by its own assertion
      req.flushHeaders();
      await received;
      await new Promise<void>((resolve) => req.write(body.slice(0, half), () => resolve()));
      assert.ok(server.child.kill("SIGTERM"));

      // The listener closes at once: a new connection is refused (the request above is still open).
      const connect = () =>
        new Promise<string>((resolve) => {
          const socket = net.connect(Number(url.port), url.hostname);
          socket.once("connect", () => {
            socket.destroy();
            resolve("accepted");
          });
          socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
        });
      let outcome = await connect();
      for (let i = 0; i < 300 && outcome === "accepted"; i++) {
        await new Promise((r) => setTimeout(r, 50));
        outcome = await connect();
      }
      assert.equal(outcome, "ECONNREFUSED");
      assert.equal(server.child.exitCode, null, "still running while the request is in flight");

      req.end(body.slice(half));
      const answer = await answered;
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(answer.body.user_id, "@dan:example.org");
      assert.equal(answer.connection, "close");
      const end = await server.exited;
      assert.equal(end.code, 0, end.stderr);
      assert.equal(end.signal, null);
    } finally {
      req.destroy(); // a failed assertion must not leave the server waiting for the rest of the body
      if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill("SIGKILL");
    }
  });
});
