/** Plain-HTTP helpers for room and `/sync` tests. */
import assert from "node:assert/strict";
import { request } from "./server.js";

export interface Ev {
  type: string;
  content: Record<string, unknown>;
  event_id?: string;
  sender?: string;
  state_key?: string;
  room_id?: string;
  unsigned?: Record<string, unknown>;
}

export interface SyncRoom {
  timeline: { events: Ev[]; limited: boolean; prev_batch: string };
  state?: { events: Ev[] };
  "org.matrix.msc4222.state_after"?: { events: Ev[] };
  state_after?: { events: Ev[] };
  ephemeral?: { events: Ev[] };
  account_data?: { events: Ev[] };
  summary?: Record<string, unknown>;
  unread_notifications?: Record<string, unknown>;
}

export interface SyncBody {
  next_batch: string;
  account_data: { events: Ev[] };
  rooms: {
    join: Record<string, SyncRoom>;
    invite: Record<string, { invite_state: { events: Ev[] } }>;
    leave: Record<string, SyncRoom>;
  };
}

export interface Login {
  user_id: string;
  access_token: string;
  device_id: string;
}

const C = "/_matrix/client/v3";
const enc = encodeURIComponent;

/** One `/sync`; fails the test unless it answers 200. */
export async function sync(baseUrl: string, user: Login, query: Record<string, string | number | boolean> = {}): Promise<SyncBody> {
  const qs = new URLSearchParams(Object.entries(query).map(([k, v]): [string, string] => [k, String(v)])).toString();
  const res = await request(baseUrl, "GET", `${C}/sync${qs ? `?${qs}` : ""}`, { token: user.access_token });
  assert.equal(res.status, 200, `sync: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body as unknown as SyncBody;
}

async function ok(res: Promise<{ status: number; body: Record<string, unknown> }>, what: string): Promise<Record<string, unknown>> {
  const r = await res;
  assert.equal(r.status, 200, `${what}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

export async function createRoom(baseUrl: string, user: Login, body: Record<string, unknown> = {}): Promise<string> {
  const r = await ok(request(baseUrl, "POST", `${C}/createRoom`, { token: user.access_token, body }), "createRoom");
  return r.room_id as string;
}

export async function joinRoom(baseUrl: string, user: Login, roomId: string): Promise<void> {
  await ok(request(baseUrl, "POST", `${C}/join/${enc(roomId)}`, { token: user.access_token, body: {} }), "join");
}

export async function invite(baseUrl: string, user: Login, roomId: string, target: string): Promise<void> {
  await ok(request(baseUrl, "POST", `${C}/rooms/${enc(roomId)}/invite`, { token: user.access_token, body: { user_id: target } }), "invite");
}

export async function leaveRoom(baseUrl: string, user: Login, roomId: string): Promise<void> {
  await ok(request(baseUrl, "POST", `${C}/rooms/${enc(roomId)}/leave`, { token: user.access_token, body: {} }), "leave");
}

let txn = 0;
export async function sendMessage(baseUrl: string, user: Login, roomId: string, body: string, txnId = `t${++txn}`): Promise<string> {
  const r = await ok(
    request(baseUrl, "PUT", `${C}/rooms/${enc(roomId)}/send/m.room.message/${txnId}`, {
      token: user.access_token,
      body: { msgtype: "m.text", body },
    }),
    "send",
  );
  return r.event_id as string;
}

export async function setState(
  baseUrl: string,
  user: Login,
  roomId: string,
  type: string,
  stateKey: string,
  content: Record<string, unknown>,
): Promise<string> {
  const r = await ok(
    request(baseUrl, "PUT", `${C}/rooms/${enc(roomId)}/state/${enc(type)}/${enc(stateKey)}`, { token: user.access_token, body: content }),
    "state",
  );
  return r.event_id as string;
}

/** The state-after events of a joined room entry, whichever key carries them. */
export function stateAfter(room: SyncRoom): Ev[] | undefined {
  return room["org.matrix.msc4222.state_after"]?.events;
}

export const ids = (events: Ev[]) => events.map((e) => e.event_id);
export const bodies = (events: Ev[]) => events.filter((e) => e.type === "m.room.message").map((e) => e.content.body);
