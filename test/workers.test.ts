/**
 * Several Switchboard processes on one PostgreSQL database (docs/workers.md): started separately
 * with `--worker-id`, or as `worker_processes: N` children of one parent. Real processes, real
 * clients (matrix-js-sdk, MatrixRTC participants), SIGKILL in the middle of work. Needs
 * SWITCHBOARD_TEST_POSTGRES; on SQLite only the refusal of several processes runs.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { MatrixClient } from "matrix-js-sdk";
import { parse, stringify } from "yaml";
import { refusedProblems } from "./helpers/config.js";
import { TEST_POSTGRES } from "./helpers/database.js";
import { delayedSend, delayIdOf, finalised, sleep, waitFor } from "./helpers/delayed.js";
import { freePort, generated, serve, start, tempDir, type Serving } from "./helpers/cli.js";
import { loadSdk } from "./helpers/matrix-sdk.js";
import { assertError, enc, ok, User, type Ev } from "./helpers/rooms.js";
import { request } from "./helpers/server.js";

const skip = TEST_POSTGRES ? false : "needs PostgreSQL (SWITCHBOARD_TEST_POSTGRES)";
const UNLIMITED = { per_second: 10_000, burst_count: 10_000 };
const RTC_MEMBER = fileURLToPath(new URL("./helpers/rtc_member.js", import.meta.url));

interface Worker {
  url: string;
  serving: Serving;
}

const clients: MatrixClient[] = [];
const extraChildren: ChildProcess[] = [];
after(() => {
  for (const c of clients) c.stopClient();
  for (const c of extraChildren) if (c.exitCode === null) c.kill("SIGKILL");
});

/** A config for `dir`'s database that lets a test send as fast as it likes. */
async function baseConfig(dir: string, port: number): Promise<Record<string, unknown>> {
  const file = await generated(dir, "workers.test", port);
  const config = parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  return {
    ...config,
    enable_registration: true,
    enable_registration_without_verification: true,
    rc_message: UNLIMITED,
    rc_registration: UNLIMITED,
    rc_login: { address: UNLIMITED, account: UNLIMITED, failed_attempts: UNLIMITED },
    rc_delayed_event_mgmt: UNLIMITED,
    experimental_features: { msc4140_enabled: true, msc4140_max_delayed_events_per_user: 1000 },
  };
}

/** `n` processes started separately on one database, each on its own port with `--worker-id wI`. */
async function startWorkers(n: number): Promise<Worker[]> {
  const dir = tempDir();
  const ports: number[] = [];
  for (let i = 0; i < n; i++) ports.push((await freePort())!);
  const config = await baseConfig(dir, ports[0]!);
  const workers: Worker[] = [];
  for (let i = 0; i < n; i++) {
    const file = path.join(dir, `worker${i}.yaml`);
    const listeners = (config.listeners as Record<string, unknown>[]).map((l) => ({ ...l, port: ports[i] }));
    writeFileSync(file, stringify({ ...config, listeners }));
    const serving = await serve(["--config", file, "--worker-id", `w${i}`], dir);
    workers.push({ url: serving.listening[0]!, serving });
  }
  return workers;
}

const on = (u: User, w: Worker) => new User(w.url, u.userId, u.token, u.deviceId);

function killed(w: Worker): Promise<void> {
  return new Promise((resolve) => {
    w.serving.child.once("exit", () => resolve());
    w.serving.child.kill("SIGKILL");
  });
}

/** Every event of a room, oldest first, read through one process. */
async function timeline(u: User, roomId: string): Promise<Ev[]> {
  const out: Ev[] = [];
  let from: string | undefined;
  for (;;) {
    const page = ok(await u.messages(roomId, { dir: "b", limit: 500, from })) as { chunk: Ev[]; end?: string };
    out.push(...page.chunk);
    if (!page.end || page.chunk.length === 0) return out.reverse();
    from = page.end;
  }
}

/** A matrix-js-sdk client whose requests go to the processes in turn when several are given. */
async function sdkClient(u: User, workers: Worker[]): Promise<MatrixClient> {
  const sdk = await loadSdk();
  let next = 0;
  const fetchFn = ((input: string | URL | Request, init?: RequestInit) => {
    const url = new URL(input instanceof Request ? input.url : input.toString());
    const target = new URL(workers[next++ % workers.length]!.url);
    url.host = target.host;
    return fetch(url, init);
  }) as typeof fetch;
  const client = sdk.createClient({ baseUrl: workers[0]!.url, accessToken: u.token, userId: u.userId, deviceId: u.deviceId, fetchFn });
  clients.push(client);
  const prepared = new Promise<void>((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
      if (state === "PREPARED") resolve();
      if (state === "ERROR") reject(data?.error ?? new Error("sync error"));
    });
  });
  await client.startClient({ initialSyncLimit: 100 });
  await prepared;
  return client;
}

/** What a raw `/sync` loop has seen, counted, so that anything seen twice shows. */
interface Seen {
  timeline: string[];
  typing: string[];
  receipts: string[];
  accountData: string[];
  toDevice: string[];
}

/**
 * A client that syncs through each process in turn (long-polls), recording everything. Stops
 * once `done(seen)` holds after a sync.
 */
async function alternatingSync(u: User, workers: Worker[], roomId: string, seen: Seen, done: (s: Seen) => boolean): Promise<Seen> {
  const filter = enc(JSON.stringify({ room: { timeline: { limit: 1000 } } }));
  let since: string | undefined;
  const deadline = Date.now() + 60_000;
  for (let i = 0; Date.now() < deadline; i++) {
    const w = workers[i % workers.length]!;
    const q = since ? `?since=${enc(since)}&timeout=1000&filter=${filter}` : `?timeout=0&filter=${filter}`;
    const res = await request(w.url, "GET", `/_matrix/client/v3/sync${q}`, { token: u.token });
    const body = ok(res) as {
      next_batch: string;
      rooms?: { join?: Record<string, { timeline?: { events: Ev[]; limited?: boolean }; ephemeral?: { events: Ev[] } }> };
      account_data?: { events: Ev[] };
      to_device?: { events: Ev[] };
    };
    const room = body.rooms?.join?.[roomId];
    if (since) assert.notEqual(room?.timeline?.limited, true, "an incremental sync left a gap");
    for (const e of room?.timeline?.events ?? []) if (e.type === "m.room.message") seen.timeline.push(e.event_id!);
    for (const e of room?.ephemeral?.events ?? []) {
      if (e.type === "m.typing") seen.typing.push(JSON.stringify((e.content as { user_ids: string[] }).user_ids));
      if (e.type === "m.receipt") seen.receipts.push(...Object.keys(e.content));
    }
    for (const e of body.account_data?.events ?? []) if (e.type === "org.example.workers") seen.accountData.push(JSON.stringify(e.content));
    for (const e of body.to_device?.events ?? []) seen.toDevice.push(JSON.stringify(e.content));
    since = body.next_batch;
    if (done(seen)) return seen;
  }
  assert.fail(`the alternating client did not see everything: ${JSON.stringify(seen)}`);
}

describe("several processes on one PostgreSQL database", { skip }, () => {
  test("clients on different processes, and one alternating between them, agree on everything; none misses or repeats anything", { timeout: 120_000 }, async (t) => {
    const ws = await startWorkers(3);
    const alice = await User.register(ws[0]!.url, "alice");
    const bob = on(await User.register(ws[1]!.url, "bob"), ws[1]!);
    const carol = on(await User.register(ws[2]!.url, "carol"), ws[2]!);
    const roomId = await alice.createRoom({ invite: [bob.userId, carol.userId], power_level_content_override: { state_default: 0 } });
    await bob.join(roomId);
    await carol.join(roomId);
    const aliceSdk = await sdkClient(alice, [ws[0]!]);
    const bobSdk = await sdkClient(bob, [ws[1]!]);
    const carolSdk = await sdkClient(await carol.newDevice(), ws);
    // Stopped before the processes are (after the last test), so that no sync meets a closed port.
    t.after(() => {
      for (const client of [aliceSdk, bobSdk, carolSdk]) client.stopClient();
    });

    const PER_SENDER = 15;
    const seen: Seen = { timeline: [], typing: [], receipts: [], accountData: [], toDevice: [] };
    const syncing = alternatingSync(carol, ws, roomId, seen, (s) => s.timeline.length >= 3 * PER_SENDER && s.receipts.length > 0 && s.accountData.length > 0 && s.toDevice.length > 0 && s.typing.includes("[]"));
    // State changes through three processes at once, beside the messages.
    const stateChanges = Promise.all([
      alice.putState(roomId, "m.room.name", "", { name: "Across processes" }),
      bob.putState(roomId, "org.example.state", "bob", { n: 1 }),
      on(carol, ws[0]!).putState(roomId, "org.example.state", "carol", { n: 2 }),
      on(carol, ws[1]!).putState(roomId, "org.example.state", "carol", { n: 3 }),
    ]);
    // Three senders at once, carol's requests spread over every process.
    const sent = (
      await Promise.all([
        (async () => {
          const ids = [];
          for (let i = 0; i < PER_SENDER; i++) ids.push(await alice.send(roomId, `alice ${i}`));
          return ids;
        })(),
        (async () => {
          const ids = [];
          for (let i = 0; i < PER_SENDER; i++) ids.push(await bob.send(roomId, `bob ${i}`));
          return ids;
        })(),
        (async () => {
          const ids = [];
          for (let i = 0; i < PER_SENDER; i++) ids.push(await on(carol, ws[i % 3]!).send(roomId, `carol ${i}`));
          return ids;
        })(),
      ])
    ).flat();
    // Typing starts on one process and stops on another; a receipt, account data and a to-device message on others.
    ok(await alice.req("PUT", `/rooms/${enc(roomId)}/typing/${enc(alice.userId)}`, { typing: true, timeout: 30_000 }));
    await waitFor("carol to see alice typing", async () => (seen.typing.includes(JSON.stringify([alice.userId])) ? true : undefined), 15_000);
    ok(await bob.req("POST", `/rooms/${enc(roomId)}/receipt/m.read/${enc(sent.at(-1)!)}`, {}));
    ok(await on(carol, ws[0]!).req("PUT", `/user/${enc(carol.userId)}/account_data/org.example.workers`, { n: 1 }));
    ok(await alice.req("PUT", `/sendToDevice/org.example.ping/${Date.now()}`, { messages: { [carol.userId]: { [carol.deviceId]: { ping: 1 } } } }));
    ok(await on(alice, ws[1]!).req("PUT", `/rooms/${enc(roomId)}/typing/${enc(alice.userId)}`, { typing: false }));

    await syncing;
    // The raw client: every message once, in the room's order; every other change once.
    const order = (await timeline(on(alice, ws[2]!), roomId)).filter((e) => e.type === "m.room.message").map((e) => e.event_id!);
    assert.equal(order.length, 3 * PER_SENDER);
    assert.deepEqual([...order].sort(), [...sent].sort());
    assert.deepEqual(seen.timeline, order, "the alternating client saw each message once, in order");
    assert.deepEqual(seen.accountData, ['{"n":1}']);
    assert.deepEqual(seen.toDevice, ['{"ping":1}']);
    assert.equal(new Set(seen.receipts).size, seen.receipts.length, "each receipt once");
    assert.ok(seen.receipts.includes(sent.at(-1)!));
    assert.equal(seen.typing.at(-1), "[]", "typing stopped");
    assert.equal(seen.typing.filter((t) => t === "[]").length, 1, "the stop arrived once");

    // The matrix-js-sdk clients, one per process and one alternating, hold the same timeline.
    for (const client of [aliceSdk, bobSdk, carolSdk]) {
      const ids = await waitFor(`${client.getUserId()} to have every message`, async () => {
        const events = client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
        const messages = events.filter((e) => e.getType() === "m.room.message").map((e) => e.getId()!);
        return messages.length >= order.length ? messages : undefined;
      }, 20_000);
      assert.deepEqual(ids, order, `${client.getUserId()} (${client === carolSdk ? "alternating" : "one process"})`);
    }
    // And the same room state as the server, whichever process each client talked to.
    await stateChanges;
    const serverState = (await on(bob, ws[2]!).fullState(roomId)).map((e) => `${e.type}|${e.state_key}|${e.event_id}`).sort();
    for (const client of [aliceSdk, bobSdk, carolSdk]) {
      await waitFor(`${client.getUserId()} to hold the room's state`, async () => {
        const state = client.getRoom(roomId)?.currentState;
        const mine = [...(state?.events.values() ?? [])].flatMap((byKey) => [...byKey.values()]).map((e) => `${e.getType()}|${e.getStateKey()}|${e.getId()}`).sort();
        return JSON.stringify(mine) === JSON.stringify(serverState) ? true : undefined;
      }, 20_000);
    }
  });

  test("logout through one process: the token is refused at once by another that had it cached", async () => {
    const ws = await startWorkers(2);
    const dave = await User.register(ws[0]!.url, "dave");
    ok(await on(dave, ws[1]!).req("GET", "/account/whoami"));
    ok(await dave.req("POST", "/logout", {}));
    assertError(await on(dave, ws[1]!).req("GET", "/account/whoami"), 401, "M_UNKNOWN_TOKEN");
  });

  test("media: an ID reserved on one process, awaited on another, filled through a third", async () => {
    const ws = await startWorkers(3);
    const erin = await User.register(ws[0]!.url, "erin");
    const auth = { authorization: `Bearer ${erin.token}` };
    const created = ok(await request(ws[0]!.url, "POST", "/_matrix/media/v1/create", { token: erin.token }));
    const id = (created.content_uri as string).split("/").pop()!;
    const download = `/_matrix/client/v1/media/download/workers.test/${id}`;
    const waiting = fetch(`${ws[1]!.url}${download}?timeout_ms=30000`, { headers: auth });
    const bytes = Buffer.from("a file uploaded through the third process");
    const put = await fetch(`${ws[2]!.url}/_matrix/media/v3/upload/workers.test/${id}`, {
      method: "PUT",
      headers: { ...auth, "content-type": "text/plain" },
      body: bytes,
    });
    assert.equal(put.status, 200);
    const got = await waiting;
    assert.equal(got.status, 200);
    assert.deepEqual(Buffer.from(await got.arrayBuffer()), bytes);
    // A second upload to the same ID through yet another process is refused.
    const again = await fetch(`${ws[0]!.url}/_matrix/media/v3/upload/workers.test/${id}`, { method: "PUT", headers: auth, body: "x" });
    assert.equal(again.status, 409);
  });

  test("SIGKILL of a process during a burst of sends and while 200 delayed events fall due: every acknowledged event once, every delayed event sent once", { timeout: 120_000 }, async () => {
    const ws = await startWorkers(3);
    const owner = await User.register(ws[0]!.url, "erin");
    const roomId = await owner.createRoom({});
    // 200 delayed events, half scheduled through the process that will die, all due at about the same moment.
    const dueAt = Date.now() + 6000;
    const delayIds: string[] = [];
    for (let i = 0; i < 200; i++) {
      const via = on(owner, ws[i % 2]!);
      delayIds.push(delayIdOf(await delayedSend(via, roomId, { body: `delayed ${i}`, marker: `d${i}` }, Math.max(0, dueAt - Date.now()))));
    }
    const acked: string[] = [];
    let sending = true;
    const senders = ws.map(async (w, n) => {
      for (let i = 0; sending; i++) {
        try {
          const res = await on(owner, w).sendRaw(roomId, "m.room.message", { body: `burst ${n}.${i}` });
          if (res.status === 200) acked.push((res.body as { event_id: string }).event_id);
        } catch {
          if (n === 0) return; // the killed process refuses connections
        }
      }
    });
    await sleep(Math.max(0, dueAt - Date.now()) + 30);
    await killed(ws[0]!);
    await sleep(1500);
    sending = false;
    await Promise.all(senders);
    const survivor = on(owner, ws[1]!);
    for (const id of delayIds) {
      const status = await finalised(survivor, id, 30_000);
      assert.equal(status.outcome, "send", `${id}: ${JSON.stringify(status)}`);
    }
    const events = await timeline(survivor, roomId);
    const ids = events.map((e) => e.event_id!);
    assert.equal(new Set(ids).size, ids.length, "no event twice");
    const have = new Set(ids);
    for (const id of acked) assert.ok(have.has(id), `acknowledged ${id} is there`);
    const markers = events.map((e) => (e.content as { marker?: string }).marker).filter((m) => m !== undefined);
    assert.equal(markers.length, 200, "each delayed event was sent exactly once");
    assert.equal(new Set(markers).size, 200);
    // The survivors keep answering.
    for (const w of ws.slice(1)) ok(await request(w.url, "GET", "/_matrix/client/versions"));
  });

  test("a MatrixRTC participant killed with SIGKILL is cleaned up although the process that scheduled its leave is dead too", { timeout: 90_000 }, async (t) => {
    const ws = await startWorkers(2);
    const frank = await User.register(ws[0]!.url, "frank");
    const gina = on(await User.register(ws[1]!.url, "gina"), ws[1]!);
    const roomId = await frank.createRoom({ invite: [gina.userId], power_level_content_override: { events: { "org.matrix.msc3401.call.member": 0 } } });
    await gina.join(roomId);
    const observer = await sdkClient(gina, [ws[1]!]);
    t.after(() => observer.stopClient());
    const room = await waitFor("gina to know the room", async () => observer.getRoom(roomId) ?? undefined);
    const session = observer.matrixRTC.getRoomSession(room);
    const member = spawn(process.execPath, [RTC_MEMBER, ws[0]!.url, frank.userId, frank.token, frank.deviceId, roomId, "4000", "500"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    extraChildren.push(member);
    const delayId = await new Promise<string>((resolve, reject) => {
      let out = "";
      member.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /JOINED (\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      member.on("exit", (code) => reject(new Error(`participant exited (${code}) before joining`)));
    });
    await waitFor("gina to see frank in the call", async () => (session.memberships.some((m) => m.sender === frank.userId) ? true : undefined), 15_000);
    await sleep(1500); // a few restarts of the leave, all through the process about to die
    member.kill("SIGKILL");
    await killed(ws[0]!);
    await waitFor("frank's membership to go", async () => (session.memberships.length === 0 ? true : undefined), 4000 + 10_000);
    const status = await finalised(on(frank, ws[1]!), delayId);
    assert.equal(status.outcome, "send");
    assert.equal(status.reason, "delay");
    await session.stop();
  });

  test("a second process with the same --worker-id is refused, naming the ID", async () => {
    const ws = await startWorkers(1);
    // The running worker's config (so the same database), on another port.
    const running = configOf(ws[0]!);
    const config = parse(readFileSync(running, "utf8")) as Record<string, unknown>;
    const port = (await freePort())!;
    const file = path.join(path.dirname(running), "again.yaml");
    writeFileSync(file, stringify({ ...config, listeners: (config.listeners as Record<string, unknown>[]).map((l) => ({ ...l, port })) }));
    const { exited } = start(["--config", file, "--worker-id", "w0"], path.dirname(running));
    const r = await exited;
    assert.notEqual(r.code, 0);
    assert.match(r.stderr + r.stdout, /already runs as worker `w0`/);
  });

  test("worker_processes: 2 starts two processes on one port; a killed one is started again; SIGTERM stops all", { timeout: 90_000 }, async () => {
    const dir = tempDir();
    const port = (await freePort())!;
    const file = path.join(dir, "cluster.yaml");
    writeFileSync(file, stringify({ ...(await baseConfig(dir, port)), worker_processes: 2 }));
    const serving = await serve(["--config", file], dir);
    const running = () => serving.stdout().split("\n").filter((l) => l.includes('"Switchboard is running"')).map((l) => JSON.parse(l) as { pid: number; worker: string });
    await waitFor("both workers", async () => (running().length === 2 ? true : undefined), 20_000);
    const url = serving.listening[0]!;
    const henry = await User.register(url, "henry");
    const roomId = await henry.createRoom({});
    for (let i = 0; i < 10; i++) await henry.send(roomId, `m${i}`);
    process.kill(running()[0]!.pid, "SIGKILL");
    await waitFor("the killed worker to be started again", async () => (running().length === 3 ? true : undefined), 20_000);
    ok(await henry.req("GET", "/account/whoami"));
    serving.child.kill("SIGTERM");
    const r = await serving.exited;
    assert.equal(r.code, 0, r.stderr);
  });
});

/** The config file a worker was started with (the `--config` argument). */
function configOf(w: Worker): string {
  const args = w.serving.child.spawnargs;
  return args[args.indexOf("--config") + 1]!;
}

test("with SQLite, more than one worker process is refused, naming the key and why", () => {
  const problems = refusedProblems("server_name: example.org\nworker_processes: 2\n", "/tmp/sb.yaml");
  assert.equal(problems.length, 1);
  assert.match(problems[0]!, /line 2: `worker_processes` is 2, but SQLite serves one process: several processes need PostgreSQL/);
});

test("worker_processes must be a whole number from 1 to 64, or auto", () => {
  for (const value of ["0", "65", "2.5", "many"]) {
    const problems = refusedProblems(`server_name: example.org\nworker_processes: ${value}\n`, "/tmp/sb.yaml");
    assert.equal(problems.length, 1, value);
    assert.match(problems[0]!, /line 2: `worker_processes` is .*, which is not allowed: expected an integer from 1 to 64, or auto/);
  }
});
