/**
 * `POST /pushers/set` and `GET /pushers` (spec: Push Notifications, "Pushers"): what a client may
 * set, and how a stored pusher is shown. A pusher's URL is a destination the user chose, so its
 * host is vetted against the outbound address policy when it is set, before anything connects
 * to it (delivery vets every connection again: DNS answers change).
 */
import { isIP } from "node:net";
import { Errors } from "../../errors.js";
import type { PusherRecord } from "../../storage/pushers.js";
import type { AddressPolicy } from "../outbound/address_policy.js";
import type { Resolver } from "../outbound/safe_fetch.js";

/** The body of `POST /pushers/set`, its types already checked by the route. */
export interface SetPusherBody {
  kind: string | null;
  app_id: string;
  pushkey: string;
  app_display_name?: string;
  device_display_name?: string;
  profile_tag?: string;
  lang?: string;
  data?: Record<string, unknown>;
  append?: boolean;
}

/** The path the spec requires of a push gateway's URL (Synapse requires it too). */
export const NOTIFY_PATH = "/_matrix/push/v1/notify";
const MAX_APP_ID_CHARS = 64;
const MAX_PUSHKEY_BYTES = 512;
/** A client waits on this; a resolver slower than this is treated as one that does not answer. */
const RESOLVE_TIMEOUT_MS = 5_000;

/** A validated HTTP pusher, ready to store. */
export interface PusherSettings {
  appId: string;
  pushkey: string;
  appDisplayName: string;
  deviceDisplayName: string;
  profileTag: string | null;
  lang: string;
  data: Record<string, unknown>;
  append: boolean;
}

/** Checks the key fields every request needs, deletions included. */
export function checkKey(body: Pick<SetPusherBody, "app_id" | "pushkey">): void {
  if (body.app_id === "") throw Errors.invalidParam("app_id must not be empty");
  if ([...body.app_id].length > MAX_APP_ID_CHARS) throw Errors.invalidParam(`app_id is longer than ${MAX_APP_ID_CHARS} characters`);
  if (body.pushkey === "") throw Errors.invalidParam("pushkey must not be empty");
  if (Buffer.byteLength(body.pushkey, "utf8") > MAX_PUSHKEY_BYTES) throw Errors.invalidParam(`pushkey is longer than ${MAX_PUSHKEY_BYTES} bytes`);
}

/** Validates a request that creates or updates a pusher (`kind` not null). */
export async function validatePusher(body: SetPusherBody, policy: AddressPolicy, resolve: Resolver): Promise<PusherSettings> {
  checkKey(body);
  if (body.kind === "email") throw Errors.invalidParam("Email pushers are not supported: this server sends no email");
  if (body.kind !== "http") throw Errors.invalidParam(`Unknown pusher kind ${JSON.stringify(body.kind)}: only http is supported`);
  const required = ["app_display_name", "device_display_name", "lang", "data"] as const;
  const missing = required.filter((k) => body[k] === undefined);
  if (missing.length > 0) throw Errors.missingParam(`Missing parameters: ${missing.join(", ")}`);
  const data = body.data!;
  if (data.url === undefined) throw Errors.missingParam("data.url is required for an http pusher");
  if (typeof data.url !== "string") throw Errors.invalidParam("data.url must be a string");
  if (data.format !== undefined && data.format !== "event_id_only") {
    throw Errors.invalidParam("data.format must be event_id_only, or absent for full notifications");
  }
  let url: URL;
  try {
    url = new URL(data.url);
  } catch {
    throw Errors.invalidParam("data.url is not an absolute URL");
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw Errors.invalidParam("data.url must be an https (or http) URL");
  if (url.pathname !== NOTIFY_PATH) throw Errors.invalidParam(`data.url must have the path ${NOTIFY_PATH}`);
  await vetHost(url.hostname.replace(/^\[|\]$/g, ""), policy, resolve);
  return {
    appId: body.app_id,
    pushkey: body.pushkey,
    appDisplayName: body.app_display_name!,
    deviceDisplayName: body.device_display_name!,
    profileTag: body.profile_tag ?? null,
    lang: body.lang!,
    data,
    append: body.append ?? false,
  };
}

/**
 * Refuses a host that is, or resolves to, an address the policy refuses, saying why. A name
 * that does not resolve now is accepted: DNS may be down for a moment, and delivery vets again.
 */
async function vetHost(host: string, policy: AddressPolicy, resolve: Resolver): Promise<void> {
  const refuse = (address: string, reason: string, via?: string) =>
    Errors.invalidParam(`The push gateway ${via ? `${via} resolves to ${address}, which` : `address ${address}`} is not allowed (${reason})`);
  if (isIP(host)) {
    const verdict = policy.check(host);
    if (!verdict.allowed) throw refuse(host, verdict.reason);
    return;
  }
  let found: { address: string }[];
  let timer: NodeJS.Timeout | undefined;
  try {
    const slow = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error("DNS too slow")), RESOLVE_TIMEOUT_MS)));
    found = await Promise.race([resolve(host), slow]);
  } catch {
    return;
  } finally {
    clearTimeout(timer);
  }
  for (const { address } of found) {
    const verdict = policy.check(address);
    if (!verdict.allowed) throw refuse(address, verdict.reason, host);
  }
}

/** A pusher as `GET /pushers` shows it. */
export function pusherView(p: PusherRecord): Record<string, unknown> {
  return {
    pushkey: p.pushkey,
    kind: p.kind,
    app_id: p.appId,
    app_display_name: p.appDisplayName,
    device_display_name: p.deviceDisplayName,
    ...(p.profileTag !== null ? { profile_tag: p.profileTag } : {}),
    lang: p.lang,
    data: p.data,
  };
}
