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
import { after, describe, test, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import type { MatrixClient } from "matrix-js-sdk";
import pg from "pg";
import { parse, stringify } from "yaml";
import { refusedProblems } from "./helpers/config.js";
import { delayedSend, delayIdOf, finalised, sleep, waitFor } from "./helpers/delayed.js";
import { serve, start, tempDir } from "./helpers/cli.js";
import { freePort } from "./helpers/ports.js";
import { loadSdk } from "./helpers/matrix-sdk.js";
import { enc, ok, User, type Ev } from "./helpers/rooms.js";
import { request } from "./helpers/server.js";
import { baseConfig, killed, on, skipWithoutPostgres, startWorkers, type Worker } from "./helpers/workers.js";

const skip = skipWithoutPostgres;
const RTC_MEMBER = fileURLToPath(new URL("./helpers/rtc_member.js", import.meta.url));

const clients: MatrixClient[] = [];
const extraChildren: ChildProcess[] = [];
after(() => {
  for (const c of clients) c.stopClient();
  for (const c of extraChildren) if (c.exitCode === null) c.kill("SIGKILL");
});

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
 * A client that syncs through each process in turn (long-polls), recording everything in
 * `roomIds` (ephemeral data of the first only). Stops once `done(seen)` holds after a sync.
 */
async function alternatingSync(u: User, workers: Worker[], roomIds: string[], seen: Seen, done: (s: Seen) => boolean): Promise<Seen> {
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
    for (const roomId of roomIds) {
      const room = body.rooms?.join?.[roomId];
      if (since) assert.notEqual(room?.timeline?.limited, true, "an incremental sync left a gap");
      for (const e of room?.timeline?.events ?? []) if (e.type === "m.room.message") seen.timeline.push(e.event_id!);
    }
    for (const e of body.rooms?.join?.[roomIds[0]!]?.ephemeral?.events ?? []) {
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

/**
 * Three users on `n` processes (one each, the third alternating) send, change state, type, read
 * and message each other in `roomCount` rooms at once: a raw /sync client alternating between
 * the processes and matrix-js-sdk clients all end up with every room's timeline and state, none
 * missing or repeating anything.
 */
async function agreement(t: TestContext, n: number, roomCount: number): Promise<void> {
  const ws = await startWorkers(n);
  const last = ws[n - 1]!;
  const alice = await User.register(ws[0]!.url, "alice");
  const bob = on(await User.register(ws[1]!.url, "bob"), ws[1]!);
  const carol = on(await User.register(last.url, "carol"), last);
  const roomIds: string[] = [];
  for (let r = 0; r < roomCount; r++) {
    const roomId = await alice.createRoom({ invite: [bob.userId, carol.userId], power_level_content_override: { state_default: 0 } });
    await bob.join(roomId);
    await carol.join(roomId);
    roomIds.push(roomId);
  }
  const roomId = roomIds[0]!;
  const aliceSdk = await sdkClient(alice, [ws[0]!]);
  const bobSdk = await sdkClient(bob, [ws[1]!]);
  const carolSdk = await sdkClient(await carol.newDevice(), ws);
  // Stopped before the processes are (after the last test), so that no sync meets a closed port.
  t.after(() => {
    for (const client of [aliceSdk, bobSdk, carolSdk]) client.stopClient();
  });

  const PER_SENDER = 15;
  const seen: Seen = { timeline: [], typing: [], receipts: [], accountData: [], toDevice: [] };
  const syncing = alternatingSync(carol, ws, roomIds, seen, (s) => s.timeline.length >= 3 * PER_SENDER && s.receipts.length > 0 && s.accountData.length > 0 && s.toDevice.length > 0 && s.typing.includes("[]"));
  // State changes through several processes at once, beside the messages.
  const stateChanges = Promise.all([
    alice.putState(roomId, "m.room.name", "", { name: "Across processes" }),
    bob.putState(roomIds.at(-1)!, "org.example.state", "bob", { n: 1 }),
    on(carol, ws[0]!).putState(roomId, "org.example.state", "carol", { n: 2 }),
    on(carol, ws[1]!).putState(roomIds.at(-1)!, "org.example.state", "carol", { n: 3 }),
  ]);
  // Three senders at once, each going round the rooms, carol's requests spread over every process.
  const sendAll = async (name: string, via: (i: number) => User) => {
    const ids = [];
    for (let i = 0; i < PER_SENDER; i++) ids.push(await via(i).send(roomIds[i % roomCount]!, `${name} ${i}`));
    return ids;
  };
  const sent = (await Promise.all([sendAll("alice", () => alice), sendAll("bob", () => bob), sendAll("carol", (i) => on(carol, ws[i % n]!))])).flat();
  // Typing starts on one process and stops on another; a receipt, account data and a to-device message on others.
  ok(await alice.req("PUT", `/rooms/${enc(roomId)}/typing/${enc(alice.userId)}`, { typing: true, timeout: 30_000 }));
  await waitFor("carol to see alice typing", async () => (seen.typing.includes(JSON.stringify([alice.userId])) ? true : undefined), 15_000);
  const lastInFirstRoom = sent.filter((_, k) => (k % PER_SENDER) % roomCount === 0).at(-1)!;
  ok(await bob.req("POST", `/rooms/${enc(roomId)}/receipt/m.read/${enc(lastInFirstRoom)}`, {}));
  ok(await on(carol, ws[0]!).req("PUT", `/user/${enc(carol.userId)}/account_data/org.example.workers`, { n: 1 }));
  ok(await alice.req("PUT", `/sendToDevice/org.example.ping/${Date.now()}`, { messages: { [carol.userId]: { [carol.deviceId]: { ping: 1 } } } }));
  ok(await on(alice, ws[1]!).req("PUT", `/rooms/${enc(roomId)}/typing/${enc(alice.userId)}`, { typing: false }));

  await syncing;
  // The raw client: every message once, in its room's order; every other change once.
  const orders = new Map<string, string[]>();
  for (const r of roomIds) orders.set(r, (await timeline(on(alice, last), r)).filter((e) => e.type === "m.room.message").map((e) => e.event_id!));
  const all = [...orders.values()].flat();
  assert.equal(all.length, 3 * PER_SENDER);
  assert.deepEqual([...all].sort(), [...sent].sort());
  assert.equal(seen.timeline.length, all.length, "the alternating client saw each message once");
  for (const [r, order] of orders) {
    const mine = new Set(order);
    assert.deepEqual(seen.timeline.filter((id) => mine.has(id)), order, `the alternating client saw ${r}'s messages in order`);
  }
  assert.deepEqual(seen.accountData, ['{"n":1}']);
  assert.deepEqual(seen.toDevice, ['{"ping":1}']);
  assert.equal(new Set(seen.receipts).size, seen.receipts.length, "each receipt once");
  assert.ok(seen.receipts.includes(lastInFirstRoom));
  assert.equal(seen.typing.at(-1), "[]", "typing stopped");
  assert.equal(seen.typing.filter((t) => t === "[]").length, 1, "the stop arrived once");

  // The matrix-js-sdk clients, one per process and one alternating, hold the same timelines.
  for (const client of [aliceSdk, bobSdk, carolSdk]) {
    for (const [r, order] of orders) {
      const ids = await waitFor(`${client.getUserId()} to have every message of ${r}`, async () => {
        const events = client.getRoom(r)?.getLiveTimeline().getEvents() ?? [];
        const messages = events.filter((e) => e.getType() === "m.room.message").map((e) => e.getId()!);
        return messages.length >= order.length ? messages : undefined;
      }, 20_000);
      assert.deepEqual(ids, order, `${client.getUserId()} (${client === carolSdk ? "alternating" : "one process"}) in ${r}`);
    }
  }
  // And the same room state as the server, whichever process each client talked to.
  await stateChanges;
  for (const r of roomIds) {
    const serverState = (await on(bob, last).fullState(r)).map((e) => `${e.type}|${e.state_key}|${e.event_id}`).sort();
    for (const client of [aliceSdk, bobSdk, carolSdk]) {
      await waitFor(`${client.getUserId()} to hold the state of ${r}`, async () => {
        const state = client.getRoom(r)?.currentState;
        const mine = [...(state?.events.values() ?? [])].flatMap((byKey) => [...byKey.values()]).map((e) => `${e.getType()}|${e.getStateKey()}|${e.getId()}`).sort();
        return JSON.stringify(mine) === JSON.stringify(serverState) ? true : undefined;
      }, 20_000);
    }
  }
}

describe("several processes on one PostgreSQL database", { skip }, () => {
  test("3 processes, one room: clients on different processes, and one alternating between them, agree on everything; none misses or repeats anything", { timeout: 120_000 }, (t) => agreement(t, 3, 1));

  test("2 processes, two rooms: the same", { timeout: 120_000 }, (t) => agreement(t, 2, 2));

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
    // The survivors keep answering: an authenticated request and a send on each, seen on the other.
    for (const [w, other] of [
      [ws[1]!, ws[2]!],
      [ws[2]!, ws[1]!],
    ] as const) {
      assert.equal(ok(await on(owner, w).req("GET", "/account/whoami")).user_id, owner.userId);
      const id = await on(owner, w).send(roomId, `after the kill, through ${w.url}`);
      assert.equal(ok(await on(owner, other).req("GET", `/rooms/${enc(roomId)}/event/${enc(id)}`)).event_id, id);
    }
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
    const port = await freePort();
    const file = path.join(path.dirname(running), "again.yaml");
    writeFileSync(file, stringify({ ...config, listeners: (config.listeners as Record<string, unknown>[]).map((l) => ({ ...l, port })) }));
    const { exited } = start(["--config", file, "--worker-id", "w0"], path.dirname(running));
    const r = await exited;
    assert.notEqual(r.code, 0);
    assert.match(r.stderr + r.stdout, /already runs as worker `w0`/);
  });

  test("worker_processes: 2 starts two processes on one port; a killed one is started again, also when its first restarts fail; SIGTERM stops all", { timeout: 90_000 }, async () => {
    const dir = tempDir();
    const port = await freePort();
    const file = path.join(dir, "cluster.yaml");
    const config: Record<string, unknown> = { ...(await baseConfig(dir, port)), worker_processes: 2 };
    writeFileSync(file, stringify(config));
    const serving = await serve(["--config", file, "--worker-id", "cl"], dir);
    const running = () => serving.stdout().split("\n").filter((l) => l.includes('"Switchboard is running"')).map((l) => JSON.parse(l) as { pid: number; worker: string });
    await waitFor("both workers", async () => (running().length === 2 ? true : undefined), 20_000);
    const url = serving.listening[0]!;
    const henry = await User.register(url, "henry");
    const roomId = await henry.createRoom({});
    for (let i = 0; i < 10; i++) await henry.send(roomId, `m${i}`);
    // While a connection on the database calls itself the killed worker (as the dead process's
    // own may, for a while), every restart of it is refused as a duplicate worker ID. That must
    // not stop the server: the worker has served before, so the parent retries.
    const victim = running()[0]!;
    const dsn = (config.database as { args: { dsn: string } }).args.dsn;
    const impostor = new pg.Client({ connectionString: dsn, application_name: `switchboard/${victim.worker.slice(0, victim.worker.lastIndexOf("#"))}#impostor` });
    await impostor.connect();
    try {
      process.kill(victim.pid, "SIGKILL");
      await waitFor("a restart to be refused", async () => (serving.stdout().includes('"a worker process failed to start again; retrying"') ? true : undefined), 30_000);
      assert.match(serving.stderr() + serving.stdout(), /already runs as worker `cl-\d`/);
      assert.equal(serving.child.exitCode, null, "the parent stopped the server");
      // The other worker serves meanwhile.
      ok(await henry.req("GET", "/account/whoami"));
    } finally {
      await impostor.end();
    }
    await waitFor("the killed worker to be started again", async () => (running().length === 3 ? true : undefined), 40_000);
    ok(await henry.req("GET", "/account/whoami"));
    await henry.send(roomId, "after the restart");
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
