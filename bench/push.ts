/**
 * Push benchmark: a real Switchboard process on SQLite. Messages go into a room of `MEMBERS`
 * users, each with an http pusher to a recording push gateway in this process, and into a room of
 * as many other users without pushers, in the same run, in rounds that alternate the order:
 *   - send throughput with pushers, as a ratio of without (target ≥ 0.7);
 *   - delivery latency: from each send's acknowledgement (the 200 of `/send`) to the gateway's
 *     receipt of each push for it, p50/p99 (target p99 < 200 ms);
 *   - server CPU per send in each room and in a room of the sender alone: what a room of
 *     `MEMBERS` costs more than a room of one, per recipient, bounds the cost of evaluating push
 *     rules for one recipient (it includes recording the notification and waking `/sync`).
 * Every member has the default rules: in a group room, a message notifies everyone (low prio).
 *
 * Environment:
 *   BENCH_PUSH_MEMBERS  members per room (default 100)
 *   BENCH_PUSH_SENDERS  members sending at once, each over its own connection (default 4)
 *   BENCH_PUSH_SENDS    sends per room and round (default 20)
 *   BENCH_PUSH_ROUNDS   measured rounds (default 2)
 *   BENCH_PUSH_CPU_PROF a directory: the server writes a V8 CPU profile there when it stops
 */
import http from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { CleanUps, envCount, printReport, runMain } from "./entry.js";
import { procCpuTime } from "./postgres.js";
import { closeClients, newAgent, request, type SendClient } from "./send_client.js";
import { spawnOnSqlite } from "./switchboard_process.js";

const MEMBERS = envCount("BENCH_PUSH_MEMBERS", 100);
const SENDERS = Math.min(envCount("BENCH_PUSH_SENDERS", 4), MEMBERS);
const SENDS = envCount("BENCH_PUSH_SENDS", 20);
const ROUNDS = envCount("BENCH_PUSH_ROUNDS", 2);
const TARGET_RATIO = 0.7;
const TARGET_P99_MS = 200;
/** How long the pushes of one round may take to arrive after its last send. */
const DRAIN_LIMIT_MS = 60_000;

const log = (msg: string) => console.error(`[bench:push] ${msg}`);
const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const cleanups = new CleanUps(log);

// ---- the gateway -------------------------------------------------------------

/** A push gateway that notes when each push arrives (this process's clock, as the acknowledgements). */
class Gateway {
  /** event ID → arrival times, one per pushkey. */
  readonly arrivals = new Map<string, number[]>();
  received = 0;
  readonly #server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const at = performance.now();
      const { notification } = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { notification: { event_id: string } };
      this.received++;
      const list = this.arrivals.get(notification.event_id);
      if (list) list.push(at);
      else this.arrivals.set(notification.event_id, [at]);
      res.writeHead(200, { "content-type": "application/json" }).end('{"rejected":[]}');
    });
  });

  url = "";

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    const addr = this.#server.address();
    this.url = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}/_matrix/push/v1/notify`;
    return this;
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

// ---- set-up ------------------------------------------------------------------

async function call<T>(base: string, method: string, p: string, token?: string, body?: unknown): Promise<T> {
  const res = await request(base, undefined, method, p, token, body);
  if (res.status !== 200) throw new Error(`${method} ${p}: ${res.status} ${res.body.slice(0, 300)}`);
  return JSON.parse(res.body) as T;
}

/** Registers `count` users, a few at a time. */
async function register(base: string, prefix: string, count: number): Promise<SendClient[]> {
  const out: SendClient[] = new Array<SendClient>(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let i = next++; i < count; i = next++) {
        const { access_token } = await call<{ access_token: string }>(base, "POST", "/_matrix/client/v3/register", undefined, {
          username: `${prefix}${i}`,
          password: "bench password, not secret",
          auth: { type: "m.login.dummy" },
        });
        out[i] = { token: access_token, agent: newAgent() };
      }
    }),
  );
  return out;
}

async function roomOf(base: string, users: SendClient[], name: string): Promise<string> {
  const { room_id } = await call<{ room_id: string }>(base, "POST", "/_matrix/client/v3/createRoom", users[0]!.token, { preset: "public_chat", name });
  const room = encodeURIComponent(room_id);
  for (let i = 1; i < users.length; i += 8) {
    await Promise.all(users.slice(i, i + 8).map((u) => call(base, "POST", `/_matrix/client/v3/join/${room}`, u.token, {})));
  }
  return room_id;
}

// ---- load --------------------------------------------------------------------

interface Batch {
  messages: number;
  wallMs: number;
  cpuUs: number;
  /** The server's CPU time when the batch started. */
  cpu0: number;
  failures: number;
  /** event ID → when its send was acknowledged. */
  acks: Map<string, number>;
}

/** `SENDS` sends shared out between the first `SENDERS` members, each one after another over its own connection. */
async function sendBatch(base: string, pid: number, roomId: string, senders: SendClient[], tag: string): Promise<Batch> {
  const room = encodeURIComponent(roomId);
  const acks = new Map<string, number>();
  let failures = 0;
  const cpu0 = procCpuTime(pid);
  const t0 = performance.now();
  await Promise.all(
    senders.map(async (client, k) => {
      const share = Math.floor(SENDS / senders.length) + (k < SENDS % senders.length ? 1 : 0);
      for (let i = 0; i < share; i++) {
        const txn = `${tag}-${k}-${i}`;
        const res = await request(base, client.agent, "PUT", `/_matrix/client/v3/rooms/${room}/send/m.room.message/${txn}`, client.token, {
          msgtype: "m.text",
          body: `message ${i} of ${txn}`,
        }).catch(() => ({ status: 0, body: "" }));
        const at = performance.now();
        if (res.status !== 200) failures++;
        else acks.set((JSON.parse(res.body) as { event_id: string }).event_id, at);
      }
    }),
  );
  const wallMs = performance.now() - t0;
  return { messages: acks.size, wallMs, cpuUs: procCpuTime(pid) - cpu0, cpu0, failures, acks };
}

function pct(sorted: number[], p: number): number {
  return round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN);
}

// ---- the run -----------------------------------------------------------------

async function main(): Promise<number> {
  const problems: string[] = [];
  const warnings: string[] = [];
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-bench-push-"));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  let report: Record<string, unknown>;
  try {
    const gateway = await new Gateway().start();
    cleanups.push(() => gateway.stop());
    // The gateway listens on loopback, which pushers may not reach unless allowed.
    const prof = process.env.BENCH_PUSH_CPU_PROF;
    const sw = await spawnOnSqlite(dir, { ip_range_whitelist: ["127.0.0.1/32"] }, prof ? ["--cpu-prof", `--cpu-prof-dir=${path.resolve(prof)}`] : []);
    cleanups.push(() => sw.stop());

    const t0 = performance.now();
    const pushed = await register(sw.url, "pushed", MEMBERS);
    const plain = await register(sw.url, "plain", MEMBERS);
    const [solo] = await register(sw.url, "solo", 1);
    cleanups.push(async () => closeClients([...pushed, ...plain, solo!]));
    const pushRoom = await roomOf(sw.url, pushed, "with pushers");
    const plainRoom = await roomOf(sw.url, plain, "without pushers");
    const soloRoom = await roomOf(sw.url, [solo!], "the sender alone");
    // Set after joining, so that nothing from the set-up is pushed.
    for (let i = 0; i < MEMBERS; i += 8) {
      await Promise.all(
        pushed.slice(i, i + 8).map((u, k) =>
          call(sw.url, "POST", "/_matrix/client/v3/pushers/set", u.token, {
            kind: "http",
            app_id: "org.example.bench",
            pushkey: `key-${i + k}`,
            app_display_name: "Bench",
            device_display_name: "Phone",
            lang: "en",
            data: { url: gateway.url },
          }),
        ),
      );
    }
    log(`set up ${MEMBERS} + ${MEMBERS} members in ${round((performance.now() - t0) / 1000, 1)} s`);

    const expectedPerSend = MEMBERS - 1;
    const sides = {
      with: { room: pushRoom, senders: pushed.slice(0, SENDERS), batches: [] as Batch[] },
      without: { room: plainRoom, senders: plain.slice(0, SENDERS), batches: [] as Batch[] },
      solo: { room: soloRoom, senders: [solo!], batches: [] as Batch[] },
    };
    const latencies: number[] = [];
    let missing = 0;
    let drainMs = 0;
    const runSide = async (key: keyof typeof sides, tag: string, measured: boolean) => {
      const side = sides[key];
      const b = await sendBatch(sw.url, sw.pid, side.room, side.senders, tag);
      if (b.failures) problems.push(`${key}: ${b.failures} sends failed in ${tag}`);
      if (key === "with") {
        // Every push of the batch, before anything else is measured.
        const d0 = performance.now();
        const want = b.messages * expectedPerSend;
        const got = () => [...b.acks.keys()].reduce((n, id) => n + (gateway.arrivals.get(id)?.length ?? 0), 0);
        while (got() < want && performance.now() - d0 < DRAIN_LIMIT_MS) await new Promise((r) => setTimeout(r, 5));
        // The pushes' CPU counts too, though they are sent after the acknowledgements.
        b.cpuUs = procCpuTime(sw.pid) - b.cpu0;
        if (measured) {
          drainMs = Math.max(drainMs, performance.now() - d0);
          for (const [id, ack] of b.acks) {
            const arrivals = gateway.arrivals.get(id) ?? [];
            missing += expectedPerSend - arrivals.length;
            for (const at of arrivals) latencies.push(at - ack);
          }
        }
      }
      if (measured) side.batches.push(b);
    };
    // One unmeasured round to warm up, then alternate the order.
    for (const key of ["with", "without", "solo"] as const) await runSide(key, `warm-${key}`, false);
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? (["with", "without", "solo"] as const) : (["without", "with", "solo"] as const);
      for (const key of order) await runSide(key, `r${r}-${key}`, true);
    }

    const sum = (bs: Batch[]) => bs.reduce((a, b) => ({ messages: a.messages + b.messages, wallMs: a.wallMs + b.wallMs, cpuUs: a.cpuUs + b.cpuUs }), { messages: 0, wallMs: 0, cpuUs: 0 });
    const figures = Object.fromEntries(
      Object.entries(sides).map(([k, s]) => {
        const t = sum(s.batches);
        return [k, { sends: t.messages, per_s: round((t.messages / t.wallMs) * 1000, 1), server_cpu_us_per_send: round(t.cpuUs / t.messages, 0), rounds_per_s: s.batches.map((b) => round((b.messages / b.wallMs) * 1000, 1)) }];
      }),
    ) as Record<keyof typeof sides, { sends: number; per_s: number; server_cpu_us_per_send: number; rounds_per_s: number[] }>;
    const ratio = round(figures.with.per_s / figures.without.per_s, 3);
    const pairs = sides.with.batches.map((b, i) => b.messages / b.wallMs / (sides.without.batches[i]!.messages / sides.without.batches[i]!.wallMs)).sort((a, b) => a - b);
    const mid = pairs.length >> 1;
    const sorted = latencies.sort((a, b) => a - b);
    const p99 = pct(sorted, 99);
    if (missing > 0) problems.push(`${missing} pushes never reached the gateway within ${DRAIN_LIMIT_MS / 1000} s of their round`);
    if (ratio < TARGET_RATIO) warnings.push(`send throughput with pushers is ${ratio} of without, below the ${TARGET_RATIO} target`);
    if (!(p99 < TARGET_P99_MS)) warnings.push(`push delivery p99 is ${p99} ms, above the ${TARGET_P99_MS} ms target`);
    const perRecipient = (figures.without.server_cpu_us_per_send - figures.solo.server_cpu_us_per_send) / (MEMBERS - 1);
    report = {
      description: `sends into a room of ${MEMBERS} members, each with an http pusher to a local gateway, against a room of ${MEMBERS} without pushers; ${SENDERS} senders at once`,
      members: MEMBERS,
      senders: SENDERS,
      rounds: ROUNDS,
      with_pushers: figures.with,
      without_pushers: figures.without,
      sender_alone: figures.solo,
      throughput: {
        ratio,
        ratio_median_of_rounds: round(pairs.length % 2 ? pairs[mid]! : (pairs[mid - 1]! + pairs[mid]!) / 2, 3),
        target: TARGET_RATIO,
        meets_target: ratio >= TARGET_RATIO,
      },
      delivery_latency_ms: {
        description: "from each send's acknowledgement to the gateway's receipt of each of its pushes (negative: the push came first)",
        pushes: sorted.length,
        missing,
        min: pct(sorted, 0),
        p50: pct(sorted, 50),
        p90: pct(sorted, 90),
        p99,
        max: round(sorted[sorted.length - 1] ?? Number.NaN),
        target_p99: TARGET_P99_MS,
        meets_target: p99 < TARGET_P99_MS,
        /** The longest wait, after a round's last send, for all its pushes. */
        drain_after_last_send_ms: round(drainMs, 0),
      },
      server_cpu: {
        /** (room of MEMBERS without pushers − sender alone) / (MEMBERS − 1): push rule evaluation, notification records and /sync wake-up, per recipient. */
        us_per_recipient_upper_bound: round(perRecipient, 1),
        /** (with pushers − without) / (MEMBERS − 1): building and sending one push, and recording its progress. */
        us_per_push: round((figures.with.server_cpu_us_per_send - figures.without.server_cpu_us_per_send) / (MEMBERS - 1), 1),
      },
    };
  } catch (err) {
    problems.push(err instanceof Error ? err.message : String(err));
    report = { failed: err instanceof Error ? err.message : String(err) };
  } finally {
    await cleanups.run();
  }
  return printReport(report, warnings, problems, log);
}

runMain(main);
