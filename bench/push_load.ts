/**
 * The load of bench/push.ts, the same for every server it measures: a recording push gateway,
 * the set-up (users, rooms, pushers) and the rounds of sends, with what each round cost.
 */
import http from "node:http";
import { serveGateway } from "../test/helpers/push_gateway.js";
import { closeClients, newAgent, request, type SendClient } from "./send_client.js";

export interface PushLoadOptions {
  members: number;
  senders: number;
  sends: number;
  rounds: number;
  /** How long the pushes of one round may take to arrive after its last send. */
  drainLimitMs: number;
  log: (msg: string) => void;
}

/** A server under load: where it answers, and the CPU time it has used so far (µs). */
export interface PushTarget {
  name: string;
  url: string;
  cpuUs(): number | Promise<number>;
}

const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;

/** A push gateway that notes when each push arrives (this process's clock, as the acknowledgements). */
export class Gateway {
  /** event ID → arrival times, one per pushkey. */
  readonly arrivals = new Map<string, number[]>();
  received = 0;
  /** One body as it arrived, for the bare client to send the same bytes. */
  sample: string | undefined;
  readonly #server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const at = performance.now();
      const text = Buffer.concat(chunks).toString("utf8");
      const { notification } = JSON.parse(text) as { notification: { event_id?: string } };
      this.received++;
      this.sample ??= notification.event_id ? text : undefined;
      const id = notification.event_id ?? "";
      const list = this.arrivals.get(id);
      if (list) list.push(at);
      else this.arrivals.set(id, [at]);
      res.writeHead(200, { "content-type": "application/json" }).end('{"rejected":[]}');
    });
  });

  url = "";
  stop: () => Promise<void> = async () => undefined;

  async start(): Promise<this> {
    ({ url: this.url, stop: this.stop } = await serveGateway(this.#server));
    return this;
  }
}

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

/** `sends` sends shared out between the senders, each one after another over its own connection. */
async function sendBatch(target: PushTarget, roomId: string, senders: SendClient[], sends: number, tag: string): Promise<Batch> {
  const room = encodeURIComponent(roomId);
  const acks = new Map<string, number>();
  let failures = 0;
  const cpu0 = await target.cpuUs();
  const t0 = performance.now();
  await Promise.all(
    senders.map(async (client, k) => {
      const share = Math.floor(sends / senders.length) + (k < sends % senders.length ? 1 : 0);
      for (let i = 0; i < share; i++) {
        const txn = `${tag}-${k}-${i}`;
        const res = await request(target.url, client.agent, "PUT", `/_matrix/client/v3/rooms/${room}/send/m.room.message/${txn}`, client.token, {
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
  return { messages: acks.size, wallMs, cpuUs: (await target.cpuUs()) - cpu0, cpu0, failures, acks };
}

export function pct(sorted: number[], p: number): number {
  return round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN);
}

export interface SideFigures {
  sends: number;
  per_s: number;
  server_cpu_us_per_send: number;
  rounds_per_s: number[];
}

export interface PushLoadResult {
  with_pushers: SideFigures;
  without_pushers: SideFigures;
  sender_alone: SideFigures;
  ratio: number;
  ratioMedianOfRounds: number;
  /** From each measured send's acknowledgement to each of its pushes' arrival, sorted. */
  latencies: number[];
  missing: number;
  drainMs: number;
  /** (with pushers − without) / (members − 1). */
  usPerPush: number;
  /** (without pushers − sender alone) / (members − 1). */
  usPerRecipient: number;
  problems: string[];
}

/**
 * Sets up `opts.members` users with pushers to `gateway` in one room, as many without in
 * another, and one user alone in a third; then one unmeasured round and `opts.rounds` measured
 * ones of `opts.sends` sends into each room, alternating the order.
 */
export async function runPushLoad(target: PushTarget, gateway: Gateway, opts: PushLoadOptions, prefix: string): Promise<PushLoadResult> {
  const problems: string[] = [];
  const t0 = performance.now();
  const pushed = await register(target.url, `${prefix}pushed`, opts.members);
  const plain = await register(target.url, `${prefix}plain`, opts.members);
  const [solo] = await register(target.url, `${prefix}solo`, 1);
  try {
    const pushRoom = await roomOf(target.url, pushed, "with pushers");
    const plainRoom = await roomOf(target.url, plain, "without pushers");
    const soloRoom = await roomOf(target.url, [solo!], "the sender alone");
    // Set after joining, so that nothing from the set-up is pushed.
    for (let i = 0; i < opts.members; i += 8) {
      await Promise.all(
        pushed.slice(i, i + 8).map((u, k) =>
          call(target.url, "POST", "/_matrix/client/v3/pushers/set", u.token, {
            kind: "http",
            app_id: "org.example.bench",
            pushkey: `${prefix}key-${i + k}`,
            app_display_name: "Bench",
            device_display_name: "Phone",
            lang: "en",
            data: { url: gateway.url },
          }),
        ),
      );
    }
    opts.log(`${target.name}: set up ${opts.members} + ${opts.members} members in ${round((performance.now() - t0) / 1000, 1)} s`);

    const expectedPerSend = opts.members - 1;
    const sides = {
      with: { room: pushRoom, senders: pushed.slice(0, opts.senders), batches: [] as Batch[] },
      without: { room: plainRoom, senders: plain.slice(0, opts.senders), batches: [] as Batch[] },
      solo: { room: soloRoom, senders: [solo!], batches: [] as Batch[] },
    };
    const latencies: number[] = [];
    let missing = 0;
    let drainMs = 0;
    const runSide = async (key: keyof typeof sides, tag: string, measured: boolean) => {
      const side = sides[key];
      const b = await sendBatch(target, side.room, side.senders, opts.sends, tag);
      if (b.failures) problems.push(`${target.name} ${key}: ${b.failures} sends failed in ${tag}`);
      if (key === "with") {
        // Every push of the batch, before anything else is measured.
        const d0 = performance.now();
        const want = b.messages * expectedPerSend;
        const got = () => [...b.acks.keys()].reduce((n, id) => n + (gateway.arrivals.get(id)?.length ?? 0), 0);
        while (got() < want && performance.now() - d0 < opts.drainLimitMs) await new Promise((r) => setTimeout(r, 5));
        // The pushes' CPU counts too, though they are sent after the acknowledgements.
        b.cpuUs = (await target.cpuUs()) - b.cpu0;
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
    for (const key of ["with", "without", "solo"] as const) await runSide(key, `warm-${key}`, false);
    for (let r = 0; r < opts.rounds; r++) {
      const order = r % 2 === 0 ? (["with", "without", "solo"] as const) : (["without", "with", "solo"] as const);
      for (const key of order) await runSide(key, `r${r}-${key}`, true);
    }

    const sum = (bs: Batch[]) => bs.reduce((a, b) => ({ messages: a.messages + b.messages, wallMs: a.wallMs + b.wallMs, cpuUs: a.cpuUs + b.cpuUs }), { messages: 0, wallMs: 0, cpuUs: 0 });
    const figures = (s: { batches: Batch[] }): SideFigures => {
      const t = sum(s.batches);
      return { sends: t.messages, per_s: round((t.messages / t.wallMs) * 1000, 1), server_cpu_us_per_send: round(t.cpuUs / t.messages, 0), rounds_per_s: s.batches.map((b) => round((b.messages / b.wallMs) * 1000, 1)) };
    };
    const withPushers = figures(sides.with);
    const withoutPushers = figures(sides.without);
    const alone = figures(sides.solo);
    const pairs = sides.with.batches.map((b, i) => b.messages / b.wallMs / (sides.without.batches[i]!.messages / sides.without.batches[i]!.wallMs)).sort((a, b) => a - b);
    const mid = pairs.length >> 1;
    if (missing > 0) problems.push(`${target.name}: ${missing} pushes never reached the gateway within ${opts.drainLimitMs / 1000} s of their round`);
    return {
      with_pushers: withPushers,
      without_pushers: withoutPushers,
      sender_alone: alone,
      ratio: round(withPushers.per_s / withoutPushers.per_s, 3),
      ratioMedianOfRounds: round(pairs.length % 2 ? pairs[mid]! : (pairs[mid - 1]! + pairs[mid]!) / 2, 3),
      latencies: latencies.sort((a, b) => a - b),
      missing,
      drainMs,
      usPerPush: round((withPushers.server_cpu_us_per_send - withoutPushers.server_cpu_us_per_send) / (opts.members - 1), 1),
      usPerRecipient: round((withoutPushers.server_cpu_us_per_send - alone.server_cpu_us_per_send) / (opts.members - 1), 1),
      problems,
    };
  } finally {
    closeClients([...pushed, ...plain, solo!]);
  }
}
