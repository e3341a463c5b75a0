/**
 * Restarting and sending a user's delayed leave event (MSC4140), for the
 * delegation jobs. Our own users' events are acted on in process; another
 * server's through its Client-Server API, without a token (the delay ID is
 * the capability), found through its `/.well-known/matrix/client`.
 */
import type { Logger } from "pino";
import { MatrixError } from "../../errors.js";
import type { Clock } from "../clock.js";
import type { DelayedEventService } from "../delayed_events/service.js";
import { jsonObject, type Outbound } from "./outbound.js";

export type LeaveAction = "restart" | "send";

/** `done`: it happened (or, for a send, had already). `gone`: the event no longer exists. */
export type ActionOutcome = { kind: "done" } | { kind: "gone" } | { kind: "retry"; afterMs?: number; reason: string };

export interface LeaveActions {
  act(action: LeaveAction): Promise<ActionOutcome>;
}

export const DELAYED_EVENTS_PATH = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events";

/** In process, as the event's owner: no token, no network, no rate limit in between. */
export function localLeaveActions(
  delayed: DelayedEventService,
  owner: string,
  delayId: string,
  logger: Pick<Logger, "warn">,
): LeaveActions {
  return {
    async act(action) {
      try {
        await delayed.act(delayId, action, { owner });
        return { kind: "done" };
      } catch (err) {
        if (!(err instanceof MatrixError)) return { kind: "retry", reason: String(err) };
        // Whatever a send answers, the event is finalised now: sent, sent before, or refused for good.
        if (action === "send") {
          if (err.status !== 404) logger.warn({ delay_id: delayId, errcode: err.errcode }, "the delegated leave was refused");
          return { kind: "done" };
        }
        return err.status === 404 ? { kind: "gone" } : { kind: "retry", reason: err.message };
      }
    },
  };
}

/** `Retry-After` as seconds or an HTTP date; else the older body field `retry_after_ms`. */
function retryAfterMs(headers: Record<string, string | string[] | undefined>, body: string, now: number): number | undefined {
  const header = headers["retry-after"];
  const value = Array.isArray(header) ? header[0] : header;
  if (value !== undefined) {
    if (/^\s*[0-9]+\s*$/.test(value)) return Number(value) * 1000;
    const date = Date.parse(value);
    if (!Number.isNaN(date)) return Math.max(0, date - now);
  }
  const ms = jsonObject(body)?.retry_after_ms;
  return typeof ms === "number" && ms > 0 ? ms : undefined;
}

export function remoteLeaveActions(outbound: Outbound, baseUrl: string, delayId: string, clock: Clock): LeaveActions {
  const base = baseUrl.replace(/\/+$/, "");
  return {
    async act(action) {
      const url = `${base}${DELAYED_EVENTS_PATH}/${encodeURIComponent(delayId)}/${action}`;
      let res;
      try {
        res = await outbound.requestUrl("POST", url, "{}");
      } catch (err) {
        return { kind: "retry", reason: String(err) };
      }
      if (res.status === 200 || res.status === 204) return { kind: "done" };
      // MSC4140: a 404 on send means it was sent or cancelled already; on restart, that it is gone.
      if (res.status === 404) return action === "send" ? { kind: "done" } : { kind: "gone" };
      if (res.status === 429) {
        return { kind: "retry", afterMs: retryAfterMs(res.headers, res.body, clock.now()), reason: "rate limited (429)" };
      }
      // 5xx, and the odd 4xx (408, 425, …): try again on the backoff schedule.
      return { kind: "retry", reason: `HTTP ${res.status}` };
    },
  };
}

/** Where another server's Client-Server API is: overrides, then `/.well-known/matrix/client`. */
export class CsApiLocator {
  readonly #cache = new Map<string, { url: string; until: number }>();
  static readonly CACHE_MS = 4 * 3_600_000;

  constructor(
    private readonly outbound: Outbound,
    private readonly overrides: Record<string, string>,
    private readonly clock: Clock,
  ) {}

  async resolve(serverName: string): Promise<string | undefined> {
    const override = this.overrides[serverName];
    if (override) return override.replace(/\/+$/, "");
    const hit = this.#cache.get(serverName);
    if (hit && hit.until > this.clock.now()) return hit.url;
    let res;
    try {
      res = await this.outbound.requestUrl("GET", `https://${serverName}/.well-known/matrix/client`);
    } catch {
      return undefined;
    }
    if (res.status !== 200) return undefined;
    const homeserver = jsonObject(res.body)?.["m.homeserver"];
    const baseUrl = homeserver && typeof homeserver === "object" ? (homeserver as Record<string, unknown>).base_url : undefined;
    if (typeof baseUrl !== "string" || !/^https?:\/\//.test(baseUrl)) return undefined;
    const url = baseUrl.replace(/\/+$/, "");
    if (this.#cache.size > 10_000) this.#cache.clear();
    this.#cache.set(serverName, { url, until: this.clock.now() + CsApiLocator.CACHE_MS });
    return url;
  }
}
