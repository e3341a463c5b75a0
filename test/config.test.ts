/**
 * Configuration: bad files make both `check-config` and serve exit 2 with a
 * message naming the key and its line; the loader's durations, defaults and
 * secrets, checked directly.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { inspect } from "node:util";
import { ConfigError } from "../src/config/errors.js";
import { parseConfig } from "../src/config/load.js";
import { refusedProblems } from "./helpers/config.js";

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../src/main.js");

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const children = new Set<ChildProcess>();
const dirs: string[] = [];
after(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function run(args: string[], cwd: string): Promise<Result> {
  // The spawn timeout only stops a server that should have refused to start but did not.
  const child = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ["ignore", "pipe", "pipe"], timeout: 60_000 });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** Writes `text` as dir/switchboard.yaml in a new temp dir; a valid config would listen on a free port there. */
function configFile(text: string): { dir: string; file: string } {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-config-"));
  dirs.push(dir);
  const file = path.join(dir, "switchboard.yaml");
  writeFileSync(file, text);
  return { dir, file };
}

/** The valid start of every bad file below: two lines, so the bad key's line is known. */
const BASE = "server_name: example.org\nlisteners:\n  - port: 0\n";

interface BadCase {
  name: string;
  text: string;
  /** Every one must appear in stderr. */
  says: (string | RegExp)[];
}

const BAD: BadCase[] = [
  {
    name: "an unknown top-level key",
    text: `${BASE}log_level: info\nwhat_is_this: 1\n`,
    says: ["line 5: unknown key `what_is_this`", /the keys allowed here are: .*server_name/],
  },
  {
    name: "an unknown nested key",
    text: `${BASE}    foo: bar\n`,
    says: ["line 4: unknown key `listeners[0].foo`", "the keys allowed here are: port, bind_addresses"],
  },
  {
    name: "a wrong type",
    text: 'server_name: example.org\nlisteners:\n  - port: "abc"\n',
    says: ['line 3: `listeners[0].port` is "abc", which is not allowed: expected an integer from 0 to 65535'],
  },
  {
    name: "an out-of-range value",
    text: "server_name: example.org\nlisteners:\n  - port: 70000\n",
    says: ["line 3: `listeners[0].port` is 70000, which is not allowed: expected an integer from 0 to 65535"],
  },
  {
    name: "a bad duration",
    text: `${BASE}max_event_delay_duration: "soon"\n`,
    says: ['line 4: `max_event_delay_duration` is "soon", which is not allowed: expected a duration', "24h"],
  },
  {
    name: "a bad enum value",
    text: `${BASE}log_level: loud\n`,
    says: ['line 4: `log_level` is "loud", which is not allowed: expected one of trace, debug, info, warn, error, fatal'],
  },
  {
    name: "a YAML syntax error",
    text: `${BASE}bad: "x" y\n`,
    says: ["line 4: YAML syntax error"],
  },
  {
    name: "a missing server_name",
    text: "listeners:\n  - port: 0\n",
    says: ["missing required key `server_name`", "a host name"],
  },
  {
    name: "open registration without enable_registration_without_verification",
    text: `${BASE}enable_registration: true\n`,
    says: ["`enable_registration` is true", "`enable_registration_without_verification: true`", "`registration_requires_token: true`"],
  },
];

describe("a bad config file exits 2, naming the key and line", { concurrency: 3 }, () => {
  for (const c of BAD) {
    test(c.name, { timeout: 90_000 }, async () => {
      const { dir, file } = configFile(c.text);
      const [checked, served] = await Promise.all([run(["check-config", "--config", file], dir), run(["--config", file], dir)]);
      for (const [what, r] of [["check-config", checked], ["serve", served]] as const) {
        assert.equal(r.code, 2, `${what} exits 2\n${r.stdout}${r.stderr}`);
        assert.equal(r.stdout, "", `${what} prints nothing on stdout`);
        assert.ok(r.stderr.startsWith(`switchboard: configuration error:\n  ${file}: `), `${what}: ${r.stderr}`);
        for (const s of c.says) {
          if (typeof s === "string") assert.ok(r.stderr.includes(s), `${what} says ${JSON.stringify(s)}:\n${r.stderr}`);
          else assert.match(r.stderr, s);
        }
      }
    });
  }

  test("every problem in a file is reported, in line order", { timeout: 90_000 }, async () => {
    const { dir, file } = configFile(`${BASE}log_level: loud\nunknown_one: 1\n`);
    const r = await run(["check-config", "--config", file], dir);
    assert.equal(r.code, 2);
    const lines = r.stderr.trim().split("\n").slice(1);
    assert.equal(lines.length, 2, r.stderr);
    assert.match(lines[0]!, /line 4: `log_level` is "loud"/);
    assert.match(lines[1]!, /line 5: unknown key `unknown_one`/);
  });

  test("more than eight problems are all reported, not only the first few", () => {
    const wrong = ["enable_registration", "allow_guest_access", "turn_allow_guests", "serve_server_wellknown", "registration_requires_token"];
    const text = `${BASE}log_level: loud\n${wrong.map((k) => `${k}: "maybe"\n`).join("")}${["a", "b", "c", "d", "e"].map((k) => `unknown_${k}: 1\n`).join("")}`;
    const problems = refusedProblems(text, "/srv/switchboard.yaml");
    assert.equal(problems.length, 11, problems.join("\n"));
    for (const key of ["log_level", ...wrong]) assert.ok(problems.some((p) => p.includes(`\`${key}\` is `)), `${key} is reported`);
    for (const k of ["a", "b", "c", "d", "e"]) assert.ok(problems.some((p) => p.includes(`unknown key \`unknown_${k}\``)), `unknown_${k} is reported`);
  });

  test("PostgreSQL settings that reach no server: check-config passes, serve refuses naming the keys and the host tried", { timeout: 90_000 }, async () => {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    const { dir, file } = configFile(
      `${BASE}database:\n  name: psycopg2\n  args:\n    user: synapse\n    password: pw-secret-cafe\n    host: 127.0.0.1\n    port: 1\n    database: synapse\n`,
    );
    const [checked, served] = await Promise.all([run(["check-config", "--config", file], dir), run(["--config", file], dir)]);
    assert.equal(checked.code, 0, checked.stderr);
    assert.equal(served.code, 1, served.stderr);
    assert.match(served.stderr, /could not open the PostgreSQL database synapse@127\.0\.0\.1:1\/synapse: .*ECONNREFUSED.*check `database\.args`/);
    assert.equal(served.stderr.includes("pw-secret-cafe"), false, "the password is never printed");
  });

  test("SQLite-only database keys under PostgreSQL are refused with exit 2, naming the key and its line", { timeout: 90_000 }, async () => {
    const { dir, file } = configFile(`${BASE}database:\n  name: psycopg2\n  args:\n    host: localhost\n    synchronous: full\n`);
    const r = await run(["check-config", "--config", file], dir);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(
      r.stderr,
      `switchboard: configuration error:\n  ${file}: line ${BASE.split("\n").length + 4}: \`database.args.synchronous\` is for SQLite; PostgreSQL's durability is its own \`synchronous_commit\` setting\n`,
    );
  });
});

describe("parseConfig", () => {
  const at = (text: string, file = "/srv/switchboard/switchboard.yaml") => parseConfig(text, file).config;

  test("durations take Synapse's forms and resolve to milliseconds", () => {
    const cases: [string | number, number][] = [
      ["24h", 86_400_000],
      ["5m", 300_000],
      ["30s", 30_000],
      ["500ms", 500],
      ["7d", 604_800_000],
      [1500, 1500],
    ];
    for (const [value, ms] of cases) {
      const config = at(`server_name: example.org\nmax_event_delay_duration: ${JSON.stringify(value)}\nturn_user_lifetime: ${JSON.stringify(value)}\n`);
      assert.equal(config.delayedEvents.maxDelayMs, ms, `max_event_delay_duration ${value}`);
      assert.equal(config.turn.lifetimeMs, ms, `turn_user_lifetime ${value}`);
    }
    assert.equal(at("server_name: example.org\n").delayedEvents.maxDelayMs, 86_400_000, "the default is 24h");
  });

  test("defaults: registration off, 127.0.0.1:8008, data/ beside the config file, https://<server_name>/", () => {
    const config = at("server_name: example.org\n", "/srv/switchboard/switchboard.yaml");
    assert.equal(config.configPath, "/srv/switchboard/switchboard.yaml");
    assert.equal(config.serverName, "example.org");
    assert.equal(config.publicBaseUrl, "https://example.org/");
    assert.deepEqual(config.registration, { enabled: false, requiresToken: false, sharedSecret: undefined, allowGuests: false });
    assert.equal(config.listeners.length, 1);
    const [listener] = config.listeners;
    assert.equal(listener!.port, 8008);
    assert.deepEqual(listener!.bindAddresses, ["127.0.0.1"]);
    assert.equal(listener!.xForwarded, false);
    assert.deepEqual([...listener!.resources].sort(), ["client", "federation"]);
    assert.deepEqual(config.database, { kind: "sqlite", path: "/srv/switchboard/data/homeserver.db", synchronous: "normal", cacheMib: 4 });
    assert.equal(config.signingKeyPath, "/srv/switchboard/data/example.org.signing.key");
    assert.equal(config.logLevel, "info");
  });

  test("relative paths resolve from the config file's folder, not the working directory", () => {
    const config = at(
      "server_name: example.org\ndatabase:\n  name: sqlite3\n  args:\n    database: state/hs.db\nsigning_key_path: ../keys/k.key\n",
      "/etc/switchboard/main.yaml",
    );
    assert.deepEqual(config.database, { kind: "sqlite", path: "/etc/switchboard/state/hs.db", synchronous: "normal", cacheMib: 4 });
    assert.equal(config.signingKeyPath, "/etc/keys/k.key");
  });

  test("public_baseurl always ends with a slash", () => {
    assert.equal(at("server_name: example.org\npublic_baseurl: https://matrix.example.org\n").publicBaseUrl, "https://matrix.example.org/");
  });

  test("secrets never appear in JSON or util.inspect output", () => {
    const secrets = ["registration-secret-f00d", "turn-secret-beef"];
    const config = at(
      `server_name: example.org\nregistration_shared_secret: ${secrets[0]}\nturn_shared_secret: ${secrets[1]}\n`,
    );
    for (const shown of [JSON.stringify(config), inspect(config, { depth: null })]) {
      for (const s of secrets) assert.ok(!shown.includes(s), `${s} leaked into ${shown}`);
    }
    assert.ok(JSON.stringify(config).includes('"sharedSecret":"[secret]"'));
    assert.equal(config.registration.sharedSecret?.reveal(), secrets[0]);
    assert.equal(config.turn.sharedSecret?.reveal(), secrets[1]);
  });

  const problems = (text: string): string[] => refusedProblems(text, "/srv/switchboard/switchboard.yaml");

  test("more problems: a negative rate, a key given twice, a file that is not a mapping", () => {
    const file = "/srv/switchboard/switchboard.yaml";
    assert.deepEqual(problems(`${BASE}rc_login:\n  address:\n    per_second: -1\n    burst_count: 5\n`), [
      `${file}: line 6: \`rc_login.address.per_second\` is -1, which is not allowed: expected a number of at least 0`,
    ]);
    assert.deepEqual(problems(`${BASE}server_name: example.com\n`), [`${file}: line 4: YAML syntax error: Map keys must be unique`]);
    assert.deepEqual(problems("- server_name: example.org\n"), [`${file}: the file must be a YAML mapping of keys to values`]);
  });

  test("database.args.synchronous takes normal or full, and names the key when wrong", () => {
    const db = (mode: string) => `${BASE}database:\n  name: sqlite3\n  args:\n    synchronous: ${mode}\n`;
    assert.equal((at(db("full")).database as { synchronous: string }).synchronous, "full");
    const [problem] = problems(db("fast"));
    assert.match(problem!, /`database\.args\.synchronous` is "fast", which is not allowed: expected normal or full/);
  });

  test("database.args.cache_size_mib sizes SQLite's page cache, 4 MiB unless set, and names the key and line when wrong", () => {
    const db = (mib: string) => `${BASE}database:\n  name: sqlite3\n  args:\n    cache_size_mib: ${mib}\n`;
    assert.equal((at(db("64")).database as { cacheMib: number }).cacheMib, 64);
    assert.equal((at(db("0.5")).database as { cacheMib: number }).cacheMib, 0.5);
    const line = BASE.split("\n").length + 3;
    for (const bad of ["0", "-1", "70000", "lots"]) {
      const [problem] = problems(db(bad));
      assert.match(problem!, new RegExp(`line ${line}: \`database\\.args\\.cache_size_mib\` is .*which is not allowed: expected a number of MiB from 0\\.5 to 65536`), bad);
    }
    const [pg] = problems(`${BASE}database:\n  name: psycopg2\n  args:\n    host: localhost\n    cache_size_mib: 64\n`);
    assert.match(pg!, new RegExp(`line ${line + 1}: \`database\\.args\\.cache_size_mib\` is for SQLite; PostgreSQL's cache is its own \`shared_buffers\` setting`));
  });

  test("problems come as a ConfigError that names the key and line", () => {
    assert.throws(
      () => at("server_name: example.org\nlisteners:\n  - port: 8008\n    bind_addresses: []\n"),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.problems.length === 1 &&
        err.problems[0] ===
          "/srv/switchboard/switchboard.yaml: line 4: `listeners[0].bind_addresses` is [], which is not allowed: expected a list with at least 1 item(s)",
    );
  });
});
