/** How `database.args` becomes a PostgreSQL connection: precedence, TLS modes, and no password in messages. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConnectionSettingsError, describeConnection, resolveConnection, tlsOptions } from "../src/storage/postgres/connection.js";
import { refusedProblems } from "./helpers/config.js";

describe("resolveConnection", () => {
  test("the dsn gives every part, and each explicit key overrides the part it names", () => {
    const dsn = "postgres://alice:s%40cret@db.example:6543/matrix?sslmode=verify-full";
    assert.deepEqual(resolveConnection({ dsn }), {
      host: "db.example",
      port: 6543,
      user: "alice",
      password: "s@cret",
      database: "matrix",
      sslmode: "verify-full",
      sslrootcert: undefined,
    });
    const c = resolveConnection({ dsn, port: 5433, password: "other", user: "bob", database: "synapse", sslmode: "require", host: "10.0.0.5" });
    assert.deepEqual(
      [c.host, c.port, c.user, c.password, c.database, c.sslmode],
      ["10.0.0.5", 5433, "bob", "other", "synapse", "require"],
    );
  });

  test("a dsn without a password takes the `password` key", () => {
    assert.equal(resolveConnection({ dsn: "postgres://alice@h/db", password: "pw" }).password, "pw");
  });

  test("a Unix socket folder given as the host parameter of the URL", () => {
    assert.equal(resolveConnection({ dsn: "postgresql:///matrix?host=/var/run/postgresql&user=synapse" }).host, "/var/run/postgresql");
  });

  test("the message form names user, host, port and database, never the password", () => {
    const text = describeConnection(resolveConnection({ dsn: "postgres://alice:hunter2@h:5/db" }));
    assert.equal(text, "alice@h:5/db");
  });

  test("an sslmode that libpq does not have is refused, wherever it was written", () => {
    assert.throws(() => resolveConnection({ dsn: "postgres://a@h/db?sslmode=strict" }), ConnectionSettingsError);
  });

  test("a dsn that is no URL is refused without repeating it", () => {
    assert.throws(
      () => resolveConnection({ dsn: "postgres://alice:hunter2@[bad/db" }),
      (err: unknown) => err instanceof ConnectionSettingsError && !err.message.includes("hunter2"),
    );
  });
});

describe("tlsOptions", () => {
  const mode = (sslmode: string) => tlsOptions(resolveConnection({ host: "h", user: "u", database: "d", sslmode }));
  test("disable never uses TLS; require encrypts without checking the certificate", () => {
    assert.equal(mode("disable"), false);
    assert.deepEqual(mode("require"), { rejectUnauthorized: false });
  });

  test("verify-ca checks the chain but not the name; verify-full checks both", () => {
    const ca = mode("verify-ca");
    assert.ok(ca && ca.rejectUnauthorized === true && ca.checkServerIdentity !== undefined);
    assert.equal(ca.checkServerIdentity!("other.example", {} as never), undefined);
    const full = mode("verify-full");
    assert.ok(full && full.rejectUnauthorized === true && full.checkServerIdentity === undefined);
  });
});

describe("database.args.dsn in the config", () => {
  test("a dsn of another scheme is refused without printing it (it may hold the password)", () => {
    const problems = refusedProblems("server_name: example.org\ndatabase:\n  name: psycopg2\n  args:\n    dsn: mysql://u:hunter2@h/db\n");
    assert.equal(problems.length, 1, problems.join("\n"));
    assert.match(problems[0]!, /`database\.args\.dsn` is set to a value, which is not allowed: expected a postgres:\/\/ or postgresql:\/\/ URL/);
    assert.equal(problems[0]!.includes("hunter2"), false);
  });
});
