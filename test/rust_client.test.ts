/**
 * The engine inside Element X against Switchboard: test/rust_client, a small client on
 * matrix-rust-sdk 0.18 set up as Element X sets it up, logs in with a password and runs the
 * SDK's own encryption bootstrap (cross-signing without UIA, key backup, recovery). The test
 * reads what it prints and checks the server's side over HTTP.
 *
 * The client is built with cargo into ~/.cache/switchboard-rust (outside the clone, so later
 * runs reuse it). `.ci/run` builds it before the suite; here cargo only checks it is up to date
 * (or builds it, which takes minutes the first time).
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createInterface } from "node:readline";
import { homedir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import type { MatrixEvent } from "matrix-js-sdk";
import { freePort } from "./helpers/ports.js";
import { quietSdkLogs } from "./helpers/matrix-sdk.js";
import { ok, User } from "./helpers/rooms.js";
import { SdkClients } from "./helpers/sdk_clients.js";
import { startServer, type TestServer } from "./helpers/server.js";

const PASSWORD = "correct horse battery staple";
const CRATE = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "test", "rust_client");
const TARGET = path.join(homedir(), ".cache", "switchboard-rust", "target");
const BINARY = path.join(TARGET, "debug", "switchboard-rust-client");
/** A cold build of the SDK takes about six minutes on two cores; this only guards against a hang. */
const BUILD_GIVE_UP_MS = 40 * 60_000;
const CARGO_PATH = `${process.env.PATH ?? ""}${path.delimiter}${path.join(homedir(), ".cargo", "bin")}`;
/**
 * Outside CI, a machine without Rust skips these tests (as the LiveKit and browser tests skip
 * without their binaries); in CI (`CI` set) `.ci/run` has built the client, so they must run.
 */
const skip =
  !process.env.CI && spawnSync("cargo", ["--version"], { env: { ...process.env, PATH: CARGO_PATH } }).status !== 0
    ? "cargo (Rust 1.93 or newer) is not installed: the matrix-rust-sdk client cannot be built"
    : false;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], env: Record<string, string> = {}, timeout = 120_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"], timeout });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** The JSON lines the client printed, by their `step`. */
function steps(out: string): Map<string, Record<string, unknown>> {
  const lines = out.split("\n").filter((l) => l.trim().startsWith("{"));
  return new Map(lines.map((l) => JSON.parse(l) as Record<string, unknown>).map((l) => [l.step as string, l]));
}

let server: TestServer;
let clients: SdkClients | undefined;

before(
  async () => {
    if (skip) return;
    // rustup puts cargo in ~/.cargo/bin, which a non-login shell may not have on its PATH.
    const env = { CARGO_TARGET_DIR: TARGET, PATH: CARGO_PATH };
    const build = await run("cargo", ["build", "-j2", "--locked", "--manifest-path", path.join(CRATE, "Cargo.toml")], env, BUILD_GIVE_UP_MS);
    assert.equal(build.code, 0, `cargo build failed:\n${build.stderr.slice(-4000)}`);
    // The SDK moves to the `well_known` base URL of the login response, so it must be this one.
    const port = await freePort();
    server = await startServer({ public_baseurl: `http://127.0.0.1:${port}/`, listeners: [{ port, bind_addresses: ["127.0.0.1"] }] });
  },
  { timeout: BUILD_GIVE_UP_MS },
);
after(async () => {
  clients?.stopAll();
  await server?.stop();
});

test("after a password login the Rust SDK sets up cross-signing (no UIA) and a key backup, as Element X does", { skip }, async () => {
  const alice = await User.register(server.baseUrl, "rustalice");
  const bob = await User.register(server.baseUrl, "rustbob");
  const result = await run(BINARY, ["e2ee", server.baseUrl, alice.userId, PASSWORD]);
  assert.equal(result.code, 0, `the client failed:\n${result.stderr.slice(-4000)}`);
  const out = steps(result.stdout);

  const login = out.get("logged_in")!;
  assert.equal(login.user_id, alice.userId);
  const deviceId = login.device_id as string;
  assert.deepEqual(out.get("e2ee"), {
    step: "e2ee",
    cross_signing: { master: true, self_signing: true, user_signing: true },
    backup_state: "Enabled",
    backup_enabled: true,
    backup_on_server: true,
  });
  assert.deepEqual(out.get("own_device"), { step: "own_device", verified: true });
  assert.ok(out.has("done"));

  // The server's side: Bob sees Alice's identity and her new device signed by it.
  const seen = ok(await bob.req("POST", "/keys/query", { device_keys: { [alice.userId]: [] } })) as {
    device_keys: Record<string, Record<string, { signatures: Record<string, Record<string, string>> }>>;
    master_keys: Record<string, unknown>;
    self_signing_keys: Record<string, { keys: Record<string, string> }>;
    user_signing_keys: Record<string, unknown>;
  };
  assert.ok(seen.master_keys[alice.userId]);
  assert.deepEqual(seen.user_signing_keys, {});
  const [selfSigningKeyId] = Object.keys(seen.self_signing_keys[alice.userId]!.keys);
  assert.ok(selfSigningKeyId! in seen.device_keys[alice.userId]![deviceId]!.signatures[alice.userId]!, "the device is signed by the self-signing key");

  // The backup it created is the current one, signed by the new identity.
  const backup = ok(await alice.req("GET", "/room_keys/version")) as { version: string; auth_data: { signatures: Record<string, unknown> } };
  assert.equal(backup.version, "1");
  assert.ok(alice.userId in backup.auth_data.signatures);
  // What it marked in account data.
  assert.deepEqual(ok(await alice.req("GET", `/user/${encodeURIComponent(alice.userId)}/account_data/m.org.matrix.custom.backup_disabled`)), {
    disabled: false,
  });
});

/** The client in `rooms` mode, running until stdin closes, with its output read line by line. */
class RunningClient {
  readonly lines: Record<string, unknown>[] = [];
  #stderr = "";
  #waiters: (() => void)[] = [];
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcessWithoutNullStreams;

  constructor(args: string[]) {
    this.child = spawn(BINARY, args, { stdio: ["pipe", "pipe", "pipe"] });
    this.child.stderr.on("data", (d: Buffer) => (this.#stderr += d.toString()));
    createInterface({ input: this.child.stdout }).on("line", (line) => {
      if (line.trim().startsWith("{")) this.lines.push(JSON.parse(line) as Record<string, unknown>);
      for (const wake of this.#waiters.splice(0)) wake();
    });
    this.exited = new Promise((resolve) => this.child.on("close", (code) => {
      for (const wake of this.#waiters.splice(0)) wake();
      resolve(code);
    }));
  }

  /** The first line that satisfies `match`, waiting for it (or failing once the client exits). */
  async line(what: string, match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
    let exited = false;
    void this.exited.then(() => (exited = true));
    for (;;) {
      const found = this.lines.find(match);
      if (found) return found;
      if (exited || this.child.exitCode !== null) throw new Error(`the client exited before ${what}:\n${this.#stderr.slice(-4000)}`);
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  async stop(): Promise<number | null> {
    this.child.stdin.end();
    return this.exited;
  }
}

/** What the Rust client must show for a room. */
interface Expected {
  name: string;
  state: "Joined" | "Invited";
  /** The latest message, for a joined room. */
  latest?: { event_id: string; body: string; sender: string };
}

test("over simplified sliding sync it loads the whole room list past its first range, with names, invites and latest messages, then sees a new one", { skip }, async () => {
  const alice = await User.register(server.baseUrl, "roomsalice");
  const rusty = await User.register(server.baseUrl, "roomsrusty");
  clients = await SdkClients.create(server.baseUrl);
  await quietSdkLogs(["error"]);
  const ca = await clients.start({ user_id: alice.userId, access_token: alice.token, device_id: alice.deviceId });
  await ca.setDisplayName("Alice Liddell");
  const expected = new Map<string, Expected>();
  /** A room Alice creates with matrix-js-sdk and invites the Rust client's user to; it joins unless `invite` is set. */
  const room = async (name: string, opts: { invite?: boolean; messages?: string[] } = {}): Promise<string> => {
    const { room_id: roomId } = await ca.createRoom({ name, invite: [rusty.userId] });
    if (!opts.invite) await rusty.join(roomId);
    let latest: Expected["latest"];
    for (const body of opts.messages ?? []) latest = { event_id: (await ca.sendTextMessage(roomId, body)).event_id, body, sender: alice.userId };
    expected.set(roomId, { name, state: opts.invite ? "Invited" : "Joined", latest });
    return roomId;
  };

  // The rooms under test are the oldest, so they are past the first range ([0, 19]) of the list, ordered by recency.
  const joined = await room("Planning", { messages: ["see you at ten"] });
  const invited = await room("Party", { invite: true });
  // Alice starts a MatrixRTC call in "Standup" with matrix-js-sdk, as Element Call does.
  const standup = await room("Standup");
  await clients.until(ca, "Standup in Alice's client", () => ca.getRoom(standup) !== null);
  const session = ca.matrixRTC.getRoomSession(ca.getRoom(standup)!);
  const focus = { type: "livekit", livekit_service_url: "https://livekit.invalid", livekit_alias: standup };
  session.joinRoomSession([focus], undefined, { manageMediaKeys: false });
  try {
    await clients.until(ca, "Alice in the call", () => session.memberships.some((m) => m.sender === alice.userId));
    // The latest event is a message: the client does not show state events such as the membership as one.
    const call = (await ca.sendTextMessage(standup, "join the call")).event_id;
    expected.get(standup)!.latest = { event_id: call, body: "join the call", sender: alice.userId };
    const own = await rusty.createRoom({ name: "Notes to self" });
    const milk = await rusty.send(own, { msgtype: "m.text", body: "buy milk" });
    expected.set(own, { name: "Notes to self", state: "Joined", latest: { event_id: milk, body: "buy milk", sender: rusty.userId } });
    // A DM without a name: matrix-sdk names it after the other member (its display name).
    const { room_id: dm } = await ca.createRoom({ preset: clients.sdk.Preset.TrustedPrivateChat, is_direct: true, invite: [rusty.userId] });
    await rusty.join(dm);
    const hello = (await ca.sendTextMessage(dm, "it's Alice")).event_id;
    expected.set(dm, { name: "Alice Liddell", state: "Joined", latest: { event_id: hello, body: "it's Alice", sender: alice.userId } });
    // More rooms than the first range holds, some left as invites.
    for (let i = 1; i <= 22; i++) await room(`Room ${i}`, i % 6 === 0 ? { invite: true } : { messages: [`first in ${i}`, `last in ${i}`] });
    assert.ok(expected.size > 20);

    const client = new RunningClient(["rooms", server.baseUrl, rusty.userId, PASSWORD]);
    try {
      const ready = await client.line("the room list", (l) => l.step === "ready");
      assert.equal(ready.maximum, expected.size, "the server's count of rooms and invites");
      assert.equal(ready.count, expected.size);
      const rooms = new Map(client.lines.filter((l) => l.step === "room").map((l) => [l.room_id as string, l]));
      assert.deepEqual([...rooms.keys()].sort(), [...expected.keys()].sort());
      for (const [roomId, want] of expected) {
        const got = rooms.get(roomId)!;
        assert.equal(got.name, want.name, `the name of ${want.name} (its m.room.name in the client: ${JSON.stringify(got.state_name)})`);
        assert.equal(got.state, want.state, `the state of ${want.name}`);
        if (want.state === "Invited") assert.deepEqual(got.latest, { invite_from: alice.userId }, `the latest event of ${want.name}`);
        if (want.latest) assert.deepEqual(got.latest, { type: "m.room.message", ...want.latest }, `the latest event of ${want.name}`);
        assert.equal(got.active_call, roomId === standup, `whether ${want.name} has an active call`);
      }
      assert.equal(rooms.get(invited)!.name, "Party");
      assert.equal(rooms.get(standup)!.active_call, true, "the call's membership came through required_state");

      await alice.send(joined, { msgtype: "m.text", body: "make it eleven" });
      await client.line("the new message", (l) => l.step === "update" && l.room_id === joined && (l.latest as Record<string, unknown> | null)?.body === "make it eleven");
    } finally {
      assert.equal(await client.stop(), 0);
    }
  } finally {
    // Leaving ends the membership manager's delayed-event timers, which would outlive the test.
    assert.equal(await session.leaveRoomSession(20_000), true);
  }
});

test("in an encrypted room the Rust client and matrix-js-sdk (Rust crypto) decrypt each other's messages; the Rust client backs up its room key", { skip }, async () => {
  const alice = await User.register(server.baseUrl, "chatalice");
  const rusty = await User.register(server.baseUrl, "chatrusty");
  const roomId = await alice.createRoom({
    name: "Secrets",
    invite: [rusty.userId],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  await rusty.join(roomId);
  clients ??= await SdkClients.create(server.baseUrl);
  await quietSdkLogs(["error"]);
  const sdk = clients.sdk;
  const ca = await clients.start({ user_id: alice.userId, access_token: alice.token, device_id: alice.deviceId }, { rustCrypto: true });
  // Alice decrypts when the room key arrives, which may be after the message; take the first success.
  const fromRust = new Promise<string>((resolve) => {
    const settle = (event: MatrixEvent) => {
      if (event.getRoomId() === roomId && event.getType() === "m.room.message" && event.isEncrypted() && !event.isDecryptionFailure()) {
        resolve(event.getContent().body as string);
      }
    };
    ca.on(sdk.MatrixEventEvent.Decrypted, settle);
    ca.on(sdk.RoomEvent.Timeline, (event) => {
      if (event.getRoomId() === roomId && event.isEncrypted()) ca.decryptEventIfNeeded(event).then(() => settle(event), () => undefined);
    });
  });

  const client = new RunningClient(["chat", server.baseUrl, rusty.userId, PASSWORD, roomId, "hello from Rust"]);
  try {
    const rustDevice = (await client.line("the login", (l) => l.step === "logged_in")).device_id as string;
    await client.line("its message sent", (l) => l.step === "sent");
    assert.equal(await clients.within(ca, "the Rust client's message, decrypted", fromRust), "hello from Rust");

    // Alice's room key goes to the devices she knows when she sends.
    await clients.untilAsync(ca, "the Rust client's device", async () =>
      Boolean((await ca.getCrypto()!.getUserDeviceInfo([rusty.userId], true)).get(rusty.userId)?.has(rustDevice)),
    );
    await ca.sendTextMessage(roomId, "hello from JS");
    const got = await client.line("Alice's message", (l) => l.step === "message" && l.body === "hello from JS");
    assert.equal(got.encrypted, true);
    assert.equal(got.sender, alice.userId);
  } finally {
    assert.equal(await client.stop(), 0);
  }
  assert.ok(client.lines.some((l) => l.step === "backed_up"));
  const backup = ok(await rusty.req("GET", "/room_keys/version")) as { version: string; count: number };
  const keys = ok(await rusty.req("GET", `/room_keys/keys/${encodeURIComponent(roomId)}?version=${backup.version}`)) as { sessions: Record<string, unknown> };
  assert.ok(Object.keys(keys.sessions).length >= 1, "the room key is in the Rust client's backup");
  assert.equal(backup.count, Object.keys(keys.sessions).length);
});
