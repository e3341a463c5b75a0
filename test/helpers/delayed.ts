/** Helpers for the delayed-event (MSC4140) suites: scheduling, management and polling. */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { enc, ok, type Ev, type User } from "./rooms.js";
import { request, type Reply } from "./server.js";

export const U4140 = "/_matrix/client/unstable/org.matrix.msc4140";
export const DELAY = "org.matrix.msc4140.delay";
export const DELAY_ID_KEY = "org.matrix.msc4140.delay_id";
const CS = "/_matrix/client/v3";

export type Action = "cancel" | "restart" | "send";

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns a value other than undefined; fails after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 8000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** `PUT /rooms/{r}/state/{type}/{key}?delay=` (no key segment when `stateKey` is null). */
export function delayedState(
  user: User,
  roomId: string,
  type: string,
  stateKey: string | null,
  content: Record<string, unknown>,
  delay: string | number,
): Promise<Reply> {
  const key = stateKey === null ? "" : `/${enc(stateKey)}`;
  return user.req("PUT", `/rooms/${enc(roomId)}/state/${enc(type)}${key}?${DELAY}=${enc(String(delay))}`, content);
}

/** `PUT /rooms/{r}/send/{type}/{txn}?delay=`, or the `POST` form without a transaction ID. */
export function delayedSend(
  user: User,
  roomId: string,
  content: Record<string, unknown>,
  delay: string | number,
  opts: { method?: "PUT" | "POST"; type?: string } = {},
): Promise<Reply> {
  const type = enc(opts.type ?? "m.room.message");
  const q = `${DELAY}=${enc(String(delay))}`;
  if (opts.method === "POST") return user.req("POST", `/rooms/${enc(roomId)}/send/${type}?${q}`, content);
  return user.req("PUT", `/rooms/${enc(roomId)}/send/${type}/${randomUUID()}?${q}`, content);
}

/** Asserts the scheduling reply shape (`delay_id`, no `event_id`) and returns the delay ID. */
export function delayIdOf(res: Reply): string {
  const body = ok(res);
  assert.equal(typeof body.delay_id, "string", JSON.stringify(body));
  assert.ok((body.delay_id as string).length > 0);
  assert.equal(body.event_id, undefined, "a scheduled event has no event ID yet");
  return body.delay_id as string;
}

/** The path form, `POST U4140/delayed_events/{id}/{action}` with `{}`; a token only when given. */
export function manage(baseUrl: string, delayId: string, action: string, token?: string): Promise<Reply> {
  return request(baseUrl, "POST", `${U4140}/delayed_events/${enc(delayId)}/${action}`, { token, body: {} });
}

/** The older body form, `POST U4140/delayed_events/{id}` with `{"action"}`. */
export function manageBody(baseUrl: string, delayId: string, body: unknown, token?: string): Promise<Reply> {
  return request(baseUrl, "POST", `${U4140}/delayed_events/${enc(delayId)}`, { token, body });
}

/** The accepted form, `POST /v1/delayed_events/{id}/{action}` with `{}`: no token unless one is given. */
export function manageV1(user: User, delayId: string, action: string, token?: string): Promise<Reply> {
  return request(user.baseUrl, "POST", `/_matrix/client/v1/delayed_events/${enc(delayId)}/${action}`, { token, body: {} });
}

/** An event as the accepted `GET /v1/delayed_events/{id}` and the list's items give it. */
export interface AcceptedItem {
  delay_id: string;
  room_id: string;
  type: string;
  state_key?: string;
  delay: number;
  running_since: number;
  content: Record<string, unknown>;
  error?: { errcode?: string };
  event_id?: string;
  origin_server_ts?: number;
}

export async function lookupV1(user: User, delayId: string): Promise<AcceptedItem> {
  return ok(await request(user.baseUrl, "GET", `/_matrix/client/v1/delayed_events/${enc(delayId)}`, { token: user.token })) as unknown as AcceptedItem;
}

/** A delayed event's state, outcome and reason, as the suites check them. */
export interface V1Status {
  delay_id: string;
  status: "scheduled" | "finalised";
  outcome?: "send" | "cancel";
  reason?: "action" | "delay" | "error";
  event_id?: string;
  error?: { errcode?: string };
  delay_ms: number;
  scheduled_at: number;
  finalised_ts?: number;
}

/** Read from the unstable lookup, whose draft fields (`outcome`, `reason`, `finalised`) say the most. */
export async function statusOf(user: User, delayId: string): Promise<V1Status> {
  const body = ok(await request(user.baseUrl, "GET", `${U4140}/delayed_events/${enc(delayId)}`, { token: user.token }));
  const done = body.finalised as { event_id?: string; error?: { errcode?: string }; finalised_ts: number } | undefined;
  return {
    delay_id: body.delay_id as string,
    status: done ? "finalised" : "scheduled",
    outcome: body.outcome as V1Status["outcome"],
    reason: body.reason as V1Status["reason"],
    event_id: done?.event_id,
    error: done?.error,
    delay_ms: body.delay_ms as number,
    scheduled_at: (body.delayed_since_ts as number) + (body.delay_ms as number),
    finalised_ts: done?.finalised_ts,
  };
}

/** Waits until the delayed event is finalised and returns its status. */
export function finalised(user: User, delayId: string, timeoutMs?: number): Promise<V1Status> {
  return waitFor(
    `${delayId} to be finalised`,
    async () => {
      const s = await statusOf(user, delayId);
      return s.status === "finalised" ? s : undefined;
    },
    timeoutMs,
  );
}

/** The newest events of a room, as `user` sees them in `/messages`. */
export async function recent(user: User, roomId: string, limit = 50): Promise<Ev[]> {
  return ok(await user.messages(roomId, { dir: "b", limit })).chunk as Ev[];
}

/** Waits for the state event to exist and returns its content. */
export function stateAppears(user: User, roomId: string, type: string, stateKey = ""): Promise<Record<string, unknown>> {
  return waitFor(`state ${type}/${stateKey}`, async () => {
    const res = await user.getStateRaw(roomId, type, stateKey);
    return res.status === 200 ? res.body : undefined;
  });
}

/** Events in `/messages` whose content carries `marker: value`. */
export async function withMarker(user: User, roomId: string, value: string): Promise<Ev[]> {
  return (await recent(user, roomId, 200)).filter((e) => e.content.marker === value);
}

/** A room of `owner`'s that `others` have joined. */
export async function sharedRoom(owner: User, others: User[], body: Record<string, unknown> = {}): Promise<string> {
  const roomId = await owner.createRoom({ invite: others.map((u) => u.userId), ...body });
  for (const u of others) await u.join(roomId);
  return roomId;
}

export async function capabilities(user: User): Promise<Record<string, unknown>> {
  const res = await request(user.baseUrl, "GET", `${CS}/capabilities`, { token: user.token });
  return ok(res).capabilities as Record<string, unknown>;
}
