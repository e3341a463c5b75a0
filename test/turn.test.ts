/** TURN credentials: shape, HMAC, guests, and a real coturn accepting them (reference §6). */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { loadSdk } from "./helpers/matrix-sdk.js";
import { freePort } from "./helpers/ports.js";
import { registerUser, request, startServer, type TestServer } from "./helpers/server.js";

const TURN = "/_matrix/client/v3/voip/turnServer";
const SECRET = "coturn-shared-secret-for-tests";
const URIS = ["turn:127.0.0.1:3478?transport=udp"];

describe("turnServer with a shared secret", () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ turn_uris: URIS, turn_shared_secret: SECRET, turn_user_lifetime: "2h", allow_guest_access: true });
  });
  after(async () => server?.stop());

  test("mints time-limited HMAC-SHA1 credentials", async () => {
    const alice = await registerUser(server.baseUrl, "turnalice");
    const before = Math.floor(Date.now() / 1000);
    const res = await request(server.baseUrl, "GET", TURN, { token: alice.access_token });
    assert.equal(res.status, 200);
    assert.equal(res.body.ttl, 7200);
    assert.deepEqual(res.body.uris, URIS);
    const username = res.body.username as string;
    const [expiry, user] = [Number(username.split(":")[0]), username.slice(username.indexOf(":") + 1)];
    assert.equal(user, alice.user_id);
    assert.ok(expiry >= before + 7200 && expiry <= before + 7200 + 5);
    assert.equal(res.body.password, createHmac("sha1", SECRET).update(username).digest("base64"));
  });

  test("guests get credentials while turn_allow_guests is true (the default)", async () => {
    const guest = await request(server.baseUrl, "POST", "/_matrix/client/v3/register?kind=guest", { body: {} });
    const res = await request(server.baseUrl, "GET", TURN, { token: guest.body.access_token as string });
    assert.equal(res.status, 200);
    assert.equal(typeof res.body.username, "string");
  });

  test("needs a token", async () => {
    const res = await request(server.baseUrl, "GET", TURN);
    assert.equal(res.status, 401);
    assert.deepEqual(res.body, { errcode: "M_MISSING_TOKEN", error: "Missing access token" });
  });

  test("matrix-js-sdk turnServer() returns the credentials", async () => {
    const bob = await registerUser(server.baseUrl, "turnbob");
    const sdk = await loadSdk();
    const client = sdk.createClient({ baseUrl: server.baseUrl, accessToken: bob.access_token, userId: bob.user_id, deviceId: bob.device_id });
    const creds = await client.turnServer();
    assert.deepEqual(creds.uris, URIS);
    assert.match(creds.username, new RegExp(`^[0-9]+:${bob.user_id}$`));
    assert.equal(creds.ttl, 7200);
  });
});

describe("turnServer, other configurations", () => {
  test("static credentials are returned as configured", async () => {
    const server = await startServer({ turn_uris: URIS, turn_username: "static", turn_password: "static-pass" });
    try {
      const alice = await registerUser(server.baseUrl, "static");
      const res = await request(server.baseUrl, "GET", TURN, { token: alice.access_token });
      assert.equal(res.status, 200);
      assert.deepEqual(res.body, { username: "static", password: "static-pass", uris: URIS, ttl: 3600 });
    } finally {
      await server.stop();
    }
  });

  test("no TURN configured answers 200 {}", async () => {
    const server = await startServer();
    try {
      const alice = await registerUser(server.baseUrl, "noturn");
      const res = await request(server.baseUrl, "GET", TURN, { token: alice.access_token });
      assert.equal(res.status, 200);
      assert.deepEqual(res.body, {});
    } finally {
      await server.stop();
    }
  });

  test("guests are refused when turn_allow_guests is false", async () => {
    const server = await startServer({ turn_uris: URIS, turn_shared_secret: SECRET, turn_allow_guests: false, allow_guest_access: true });
    try {
      const guest = await request(server.baseUrl, "POST", "/_matrix/client/v3/register?kind=guest", { body: {} });
      const res = await request(server.baseUrl, "GET", TURN, { token: guest.body.access_token as string });
      assert.equal(res.status, 403);
      assert.deepEqual(res.body, { errcode: "M_GUEST_ACCESS_FORBIDDEN", error: "Guest access is not allowed here" });
    } finally {
      await server.stop();
    }
  });
});

/** One allocation by turnutils_uclient: its exit status (0 when allocated) and what it printed. */
function allocate(port: number, username: string, password: string): { status: number | null; output: string } {
  const res = spawnSync(
    "turnutils_uclient",
    ["-y", "-n", "5", "-m", "1", "-l", "100", "-p", String(port), "-u", username, "-w", password, "127.0.0.1"],
    { encoding: "utf8", timeout: 60_000 },
  );
  return { status: res.status, output: `${res.stdout}${res.stderr}` };
}

const haveCoturn = spawnSync("which", ["turnserver"]).status === 0 && spawnSync("which", ["turnutils_uclient"]).status === 0;

describe("a real coturn", { skip: haveCoturn ? false : "coturn is not installed (.ci/run installs it)" }, () => {
  let turn: ChildProcess;
  let port: number;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "switchboard-coturn-"));
    port = await freePort();
    const relayBase = 49160 + (port % 200) * 4;
    turn = spawn(
      "turnserver",
      [
        "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", `--listening-port=${port}`,
        `--min-port=${relayBase}`, `--max-port=${relayBase + 40}`, "--realm=switchboard.test",
        "--use-auth-secret", `--static-auth-secret=${SECRET}`, "--allow-loopback-peers", "--no-tls", "--no-dtls",
        "--no-cli", `--userdb=${path.join(dir, "turndb")}`, "--simple-log", "--fingerprint",
      ],
      { stdio: "ignore" },
    );
  });
  after(() => {
    turn?.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  test("allocates with credentials from /voip/turnServer, and refuses expired ones", async () => {
    const uris = [`turn:127.0.0.1:${port}?transport=udp`];
    const server = await startServer({ turn_uris: uris, turn_shared_secret: SECRET });
    // The same secret, but a clock two hours behind: these credentials expired an hour ago.
    const past = await startServer(
      { turn_uris: uris, turn_shared_secret: SECRET },
      { clock: { now: () => Date.now() - 2 * 3600_000 } },
    );
    try {
      const alice = await registerUser(server.baseUrl, "coturn");
      const fresh = await request(server.baseUrl, "GET", TURN, { token: alice.access_token });
      // coturn may take a moment to open its socket: retry only the good credential.
      const good = () => allocate(port, fresh.body.username as string, fresh.body.password as string);
      let result = good();
      for (let i = 0; i < 10 && result.status !== 0; i++) {
        assert.equal(turn.exitCode, null, `turnserver exited (${turn.exitCode}); is port ${port} taken?`);
        await new Promise((r) => setTimeout(r, 500));
        result = good();
      }
      assert.equal(result.status, 0, `coturn allocates with a freshly minted credential:\n${result.output}`);

      const bob = await registerUser(past.baseUrl, "expired");
      const stale = await request(past.baseUrl, "GET", TURN, { token: bob.access_token });
      const refused = allocate(port, stale.body.username as string, stale.body.password as string);
      assert.notEqual(refused.status, 0);
      // Refused by coturn's check, not for want of a server: it answered, and still allocates for the fresh one.
      assert.match(refused.output, /Cannot complete Allocation/);
      assert.doesNotMatch(refused.output, /Connection refused/);
      assert.equal(good().status, 0, "the fresh credential still allocates after the stale one was refused");
    } finally {
      await server.stop();
      await past.stop();
    }
  });
});
