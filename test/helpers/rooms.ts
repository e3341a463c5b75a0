/** Small conveniences for the room endpoint suites: a logged-in user that speaks the Client-Server API. */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { registerUser, request, startServer, type Reply, type TestServer } from "./server.js";

export const CS = "/_matrix/client/v3";
export const enc = encodeURIComponent;

/** A Matrix client event as the room endpoints return it. */
export interface Ev {
  event_id: string;
  type: string;
  sender: string;
  room_id: string;
  state_key?: string;
  origin_server_ts: number;
  content: Record<string, unknown>;
  unsigned?: Record<string, unknown>;
  redacts?: string;
}

/** Asserts a Matrix error reply: the status, the errcode, and a non-empty `error`. */
export function assertError(res: Reply, status: number, errcode: string): string {
  assert.equal(res.status, status, `expected ${status} ${errcode}, got ${res.status} ${JSON.stringify(res.body)}`);
  assert.equal(res.body.errcode, errcode, JSON.stringify(res.body));
  assert.equal(typeof res.body.error, "string");
  assert.ok((res.body.error as string).length > 0, "error must say why");
  return res.body.error as string;
}

/** Asserts a 200 reply and returns its body. */
export function ok(res: Reply): Record<string, unknown> {
  assert.equal(res.status, 200, `expected 200, got ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

export class User {
  constructor(
    readonly baseUrl: string,
    readonly userId: string,
    readonly token: string,
    readonly deviceId: string,
  ) {}

  static async register(baseUrl: string, name: string): Promise<User> {
    const u = await registerUser(baseUrl, name);
    return new User(baseUrl, u.user_id, u.access_token, u.device_id);
  }

  /** A second login (a new device) of the same account. */
  async newDevice(): Promise<User> {
    const res = await request(this.baseUrl, "POST", `${CS}/login`, {
      body: {
        type: "m.login.password",
        identifier: { type: "m.id.user", user: this.userId },
        password: "correct horse battery staple",
      },
    });
    const b = ok(res) as { access_token: string; device_id: string };
    return new User(this.baseUrl, this.userId, b.access_token, b.device_id);
  }

  req(method: string, path: string, body?: unknown): Promise<Reply> {
    return request(this.baseUrl, method, `${CS}${path}`, { token: this.token, body });
  }

  async createRoom(body: Record<string, unknown> = {}): Promise<string> {
    return ok(await this.req("POST", "/createRoom", body)).room_id as string;
  }

  sendRaw(roomId: string, type: string, content: unknown, txnId: string = randomUUID()): Promise<Reply> {
    return this.req("PUT", `/rooms/${enc(roomId)}/send/${enc(type)}/${enc(txnId)}`, content);
  }

  async send(roomId: string, body: string | Record<string, unknown>, type = "m.room.message"): Promise<string> {
    const content = typeof body === "string" ? { msgtype: "m.text", body } : body;
    return ok(await this.sendRaw(roomId, type, content)).event_id as string;
  }

  putStateRaw(roomId: string, type: string, stateKey: string, content: unknown): Promise<Reply> {
    return this.req("PUT", `/rooms/${enc(roomId)}/state/${enc(type)}/${enc(stateKey)}`, content);
  }

  async putState(roomId: string, type: string, stateKey: string, content: Record<string, unknown>): Promise<string> {
    return ok(await this.putStateRaw(roomId, type, stateKey, content)).event_id as string;
  }

  getStateRaw(roomId: string, type: string, stateKey = ""): Promise<Reply> {
    return this.req("GET", `/rooms/${enc(roomId)}/state/${enc(type)}/${enc(stateKey)}`);
  }

  async getState(roomId: string, type: string, stateKey = ""): Promise<Record<string, unknown>> {
    return ok(await this.getStateRaw(roomId, type, stateKey));
  }

  async fullState(roomId: string): Promise<Ev[]> {
    const res = await this.req("GET", `/rooms/${enc(roomId)}/state`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body as unknown as Ev[];
  }

  joinRaw(roomIdOrAlias: string, body: Record<string, unknown> = {}): Promise<Reply> {
    return this.req("POST", `/join/${enc(roomIdOrAlias)}`, body);
  }

  async join(roomIdOrAlias: string): Promise<string> {
    return ok(await this.joinRaw(roomIdOrAlias)).room_id as string;
  }

  /** invite, kick, ban or unban. */
  act(action: "invite" | "kick" | "ban" | "unban", roomId: string, userId: string, reason?: string): Promise<Reply> {
    return this.req("POST", `/rooms/${enc(roomId)}/${action}`, reason === undefined ? { user_id: userId } : { user_id: userId, reason });
  }

  leave(roomId: string): Promise<Reply> {
    return this.req("POST", `/rooms/${enc(roomId)}/leave`, {});
  }

  event(roomId: string, eventId: string): Promise<Reply> {
    return this.req("GET", `/rooms/${enc(roomId)}/event/${enc(eventId)}`);
  }

  messages(roomId: string, query: Record<string, string | number | undefined>): Promise<Reply> {
    const qs = Object.entries(query)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${enc(String(v))}`)
      .join("&");
    return this.req("GET", `/rooms/${enc(roomId)}/messages?${qs}`);
  }

  async joinedRooms(): Promise<string[]> {
    return ok(await this.req("GET", "/joined_rooms")).joined_rooms as string[];
  }

  async membershipIn(roomId: string, userId: string = this.userId): Promise<string | undefined> {
    const res = await this.getStateRaw(roomId, "m.room.member", userId);
    return res.status === 200 ? (res.body.membership as string) : undefined;
  }
}

/** The state event of `type`/`stateKey` in a `/state` reply. */
export function findState(state: Ev[], type: string, stateKey = ""): Ev | undefined {
  return state.find((e) => e.type === type && e.state_key === stateKey);
}

/** A server of its own with these users registered, in the order named. */
export async function startWithUsers<const Names extends readonly string[]>(
  ...names: Names
): Promise<{ server: TestServer; users: { [K in keyof Names]: User } }> {
  const server = await startServer();
  const users: User[] = [];
  for (const name of names) users.push(await User.register(server.baseUrl, name));
  return { server, users: users as { [K in keyof Names]: User } };
}
