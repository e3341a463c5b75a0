/**
 * The client side of bench/sends.ts: a few Matrix calls (register, create a room, join) and the
 * load itself, over node:http with one keep-alive connection per client, so the load generator
 * costs as little CPU as possible and every server sees the same requests.
 */
import http from "node:http";

/** One client: a user's access token and the one connection its requests go over. */
export interface SendClient {
  token: string;
  agent: http.Agent;
}

interface Answer {
  status: number;
  body: string;
}

const REQUEST_TIMEOUT_MS = 30_000;

export function request(base: string, agent: http.Agent | undefined, method: string, path: string, token?: string, body?: unknown): Promise<Answer> {
  const url = new URL(path, base);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: http.OutgoingHttpHeaders = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (payload) Object.assign(headers, { "content-type": "application/json", "content-length": payload.length });
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`${method} ${url.pathname}: no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on("error", reject);
    req.end(payload);
  });
}

async function call<T>(base: string, method: string, path: string, token?: string, body?: unknown): Promise<T> {
  const res = await request(base, undefined, method, path, token, body);
  if (res.status !== 200) throw new Error(`${method} ${path} on ${base}: ${res.status} ${res.body.slice(0, 300)}`);
  return JSON.parse(res.body) as T;
}

export function newAgent(): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets: 1 });
}

/** Registers `count` users (`prefix0`, `prefix1`, …) and returns a client for each. */
export async function registerClients(base: string, prefix: string, count: number): Promise<SendClient[]> {
  const clients: SendClient[] = [];
  for (let i = 0; i < count; i++) {
    const { access_token } = await call<{ access_token: string }>(base, "POST", "/_matrix/client/v3/register", undefined, {
      username: `${prefix}${i}`,
      password: "bench password, not secret",
      auth: { type: "m.login.dummy" },
    });
    clients.push({ token: access_token, agent: newAgent() });
  }
  return clients;
}

/** The first client creates a public room; the others join it. Returns the room ID. */
export async function roomForAll(base: string, clients: SendClient[]): Promise<string> {
  const { room_id } = await call<{ room_id: string }>(base, "POST", "/_matrix/client/v3/createRoom", clients[0]!.token, {
    preset: "public_chat",
    name: "send benchmark",
  });
  for (const c of clients.slice(1)) await call(base, "POST", `/_matrix/client/v3/join/${encodeURIComponent(room_id)}`, c.token, {});
  return room_id;
}

/** What one batch of sends did. */
export interface Batch {
  /** Sends made: fewer than asked for when the time limit cut the batch short. */
  messages: number;
  wallMs: number;
  /** Per request, milliseconds. */
  latencies: number[];
  /** Answers other than 200 with an `event_id`, by status (0: no answer). */
  failures: Record<string, number>;
}

/**
 * `total` sends of `m.room.message`, shared out between `clients`, each sending its share one
 * after another over its own connection; all clients at once. `tag` makes the transaction IDs
 * unique to the batch. After `limitMs`, no client starts another send.
 */
export async function sendBatch(base: string, roomId: string, clients: SendClient[], total: number, tag: string, limitMs: number): Promise<Batch> {
  const latencies: number[] = [];
  const failures: Record<string, number> = {};
  const room = encodeURIComponent(roomId);
  const t0 = performance.now();
  const deadline = t0 + limitMs;
  await Promise.all(
    clients.map(async (client, k) => {
      const share = Math.floor(total / clients.length) + (k < total % clients.length ? 1 : 0);
      for (let i = 0; i < share && performance.now() < deadline; i++) {
        const txn = `${tag}-${k}-${i}`;
        const path = `/_matrix/client/v3/rooms/${room}/send/m.room.message/${txn}`;
        const started = performance.now();
        const res = await request(base, client.agent, "PUT", path, client.token, { msgtype: "m.text", body: `message ${i} of ${txn}` }).catch(
          () => ({ status: 0, body: "" }),
        );
        latencies.push(performance.now() - started);
        if (res.status !== 200 || !res.body.includes('"event_id"')) failures[res.status] = (failures[res.status] ?? 0) + 1;
      }
    }),
  );
  return { messages: latencies.length, wallMs: performance.now() - t0, latencies, failures };
}

export function closeClients(clients: SendClient[]): void {
  for (const c of clients) c.agent.destroy();
}
