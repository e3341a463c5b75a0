/**
 * What a push gateway is sent (Push Gateway API, `POST /_matrix/push/v1/notify`) and what its
 * answer means. The gateway's URL was chosen by a user, so it is fetched through `SafeFetcher`:
 * an address the policy refuses is never connected to, whatever the name resolves to today.
 */
import type { PusherRecord } from "../../storage/pushers.js";
import { SafeFetchError, type Fetcher } from "../outbound/safe_fetch.js";

/** What a gateway has to say fits in this; a longer answer is a broken gateway. */
const MAX_RESPONSE_BYTES = 64 * 1024;

/** The event being pushed, with what the recipient's push rules made of it. */
export interface PushEvent {
  eventId: string;
  roomId: string;
  type: string;
  sender: string;
  stateKey?: string;
  content: Record<string, unknown>;
  actions: unknown[];
}

/** Names to show, looked up in the room's current state; absent when empty. */
export interface PushContext {
  senderDisplayName?: string;
  roomName?: string;
  /** Unread notifications of the recipient across their rooms. */
  unread: number;
}

export type GatewayResult =
  /** Accepted; `rejected` when the gateway says this pusher's pushkey is no longer valid. */
  | { kind: "delivered"; rejected: boolean }
  /** Refused for good (a 4xx other than 429): sending this notification again would not help. */
  | { kind: "refused"; status: number }
  /** Worth trying again later: unreachable, too slow, a 5xx, a 429. */
  | { kind: "failed"; reason: string };

/** The `set_tweak` actions as a tweaks object (a tweak without a value is `true`, as the spec has `highlight`); undefined when there are none. */
export function tweaksOf(actions: readonly unknown[]): Record<string, unknown> | undefined {
  let tweaks: Record<string, unknown> | undefined;
  for (const a of actions) {
    if (a && typeof a === "object" && typeof (a as { set_tweak?: unknown }).set_tweak === "string") {
      const t = a as { set_tweak: string; value?: unknown };
      (tweaks ??= {})[t.set_tweak] = t.value === undefined ? true : t.value;
    }
  }
  return tweaks;
}

/**
 * The `notification` object for one pusher. Priority is high for what makes a sound or
 * highlights, and for encrypted events, whose effect only the device can tell (Synapse does the
 * same): a low-priority push may be held back by the phone to save battery.
 *
 * Every field is always present, undefined when it does not apply (JSON leaves those out): one
 * object shape for every push, built and serialised several times faster than an object grown
 * key by key, and this runs for every recipient of every event.
 */
export function buildNotification(pusher: PusherRecord, event: PushEvent, ctx: PushContext, includeContent: boolean): Record<string, unknown> {
  const tweaks = tweaksOf(event.actions);
  const high = event.type === "m.room.encrypted" || Boolean(tweaks?.highlight) || Boolean(tweaks?.sound);
  // The app fetches the event itself; tweaks are left out too, as Synapse does (the device
  // evaluates the rules on what it fetched).
  const full = pusher.data.format !== "event_id_only";
  const member = full && event.type === "m.room.member" && event.stateKey !== undefined;
  const device = {
    app_id: pusher.appId,
    pushkey: pusher.pushkey,
    pushkey_ts: Math.floor(pusher.createdTs / 1000),
    data: deviceData(pusher),
    tweaks: full ? tweaks : undefined,
  };
  return {
    event_id: event.eventId,
    room_id: event.roomId,
    prio: high ? "high" : "low",
    counts: { unread: ctx.unread },
    type: full ? event.type : undefined,
    sender: full ? event.sender : undefined,
    sender_display_name: (full && ctx.senderDisplayName) || undefined,
    room_name: (full && ctx.roomName) || undefined,
    membership: member ? event.content.membership : undefined,
    user_is_target: member ? event.stateKey === pusher.userId : undefined,
    content: full && includeContent && hasKeys(event.content) ? event.content : undefined,
    devices: [device],
  };
}

function hasKeys(o: object): boolean {
  for (const _ in o) return true;
  return false;
}

/**
 * The pusher's `data` as the gateway gets it: all but `url`, which is ours. Copied key by key
 * rather than spread and deleted from: `delete` turns the object into a slow dictionary, and
 * this runs for every push.
 */
function deviceData(pusher: PusherRecord): Record<string, unknown> {
  const data: Record<string, unknown> = {};
  for (const key of Object.keys(pusher.data)) if (key !== "url") data[key] = pusher.data[key];
  return data;
}

/**
 * A badge-only notification, sent when the user's unread count changed without a new event (a
 * read receipt): no event or room, just `counts`, in the form Synapse sends.
 */
export function buildBadgeNotification(pusher: PusherRecord, unread: number): Record<string, unknown> {
  const data = deviceData(pusher);
  return {
    id: "",
    type: null,
    sender: "",
    counts: { unread },
    devices: [{ app_id: pusher.appId, pushkey: pusher.pushkey, pushkey_ts: Math.floor(pusher.createdTs / 1000), data }],
  };
}

/** Sends one notification to the pusher's gateway; never throws. */
export async function notifyGateway(
  fetcher: Fetcher,
  pusher: PusherRecord,
  notification: Record<string, unknown>,
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<GatewayResult> {
  const url = pusher.data.url;
  if (typeof url !== "string") return { kind: "refused", status: 0 };
  let status: number;
  let body: Buffer;
  try {
    const res = await fetcher.fetch({
      url,
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ notification }),
      maxBytes: MAX_RESPONSE_BYTES,
      timeoutMs: opts.timeoutMs,
      // The gateway's URL is the endpoint; a redirect elsewhere is not followed.
      maxRedirects: 0,
      signal: opts.signal,
    });
    status = res.status;
    body = res.body;
  } catch (err) {
    return { kind: "failed", reason: err instanceof SafeFetchError ? err.kind : "aborted" };
  }
  if (status >= 200 && status < 300) {
    let rejected: unknown;
    try {
      rejected = (JSON.parse(body.toString("utf8")) as { rejected?: unknown } | null)?.rejected;
    } catch {
      // A gateway that accepted the push but answers something else has still accepted it.
    }
    // Only our own pushkey counts: a gateway cannot have us drop pushers we did not name.
    return { kind: "delivered", rejected: Array.isArray(rejected) && rejected.includes(pusher.pushkey) };
  }
  if (status >= 400 && status < 500 && status !== 429) return { kind: "refused", status };
  return { kind: "failed", reason: `status ${status}` };
}
