/**
 * MSC4140's list of a user's delayed events: its query parameters, its pagination tokens and
 * its pages. A token names a position in one ordering (the value ordered by, then the delay
 * ID to break ties), so paging is stable while events come and go.
 */
import { Errors } from "../../errors.js";
import type { DelayedEventStore, DelayedListQuery, DelayedOrder } from "../../storage/delayed_events.js";
import { acceptedView } from "./views.js";

/** The page size the MSC recommends. */
export const DELAYED_PAGE_SIZE = 10;

const ORDERS: readonly DelayedOrder[] = ["send_ts", "origin_server_ts", "running_since"];
const DIRS = ["f", "b"] as const;
const STATUSES = ["scheduled", "finalised"] as const;
const OUTCOMES = ["send", "cancel", "error"] as const;
const REASONS = ["action", "delay"] as const;

interface Position {
  orderBy: DelayedOrder;
  key: number;
  delayId: string;
}

function encodeToken(p: Position): string {
  return Buffer.from(JSON.stringify([p.orderBy, p.key, p.delayId])).toString("base64url");
}

function decodeToken(token: string, orderBy: DelayedOrder): Position {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    parsed = undefined;
  }
  if (!Array.isArray(parsed) || parsed.length !== 3) throw Errors.invalidParam("from is not a token this server gave out");
  const [order, key, delayId] = parsed as unknown[];
  if (typeof key !== "number" || !Number.isSafeInteger(key) || typeof delayId !== "string") {
    throw Errors.invalidParam("from is not a token this server gave out");
  }
  // A position in one ordering means nothing in another.
  if (order !== orderBy) throw Errors.invalidParam(`from was given for order_by=${String(order)}, not ${orderBy}`);
  return { orderBy, key, delayId };
}

/** One value of a query parameter: a repeated one is refused rather than guessed at. */
function single(query: Record<string, unknown>, name: string): string | undefined {
  const value = query[name];
  if (value === undefined) return undefined;
  if (typeof value !== "string") throw Errors.invalidParam(`${name} may be given once`);
  return value;
}

function oneOf<T extends string>(query: Record<string, unknown>, name: string, allowed: readonly T[]): T | undefined {
  const value = single(query, name);
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw Errors.invalidParam(`${name} must be one of ${allowed.join(", ")}`);
  return value as T;
}

/** Parses the query; every unsupported value is 400 M_INVALID_PARAM, as the MSC says. */
export function parseListQuery(userId: string, query: Record<string, unknown>, now: number): DelayedListQuery {
  const orderBy = oneOf(query, "order_by", ORDERS) ?? "send_ts";
  const dir = oneOf(query, "dir", DIRS) ?? "f";
  const sinceTs = single(query, "since_ts");
  const fromToken = single(query, "from");
  let from: DelayedListQuery["from"];
  if (fromToken !== undefined) {
    const p = decodeToken(fromToken, orderBy);
    from = { key: p.key, afterId: p.delayId };
  } else if (sinceTs === undefined) {
    // The first page starts from the time the request is made.
    from = { key: now };
  } else if (sinceTs === "end") {
    from = { key: null };
  } else if (/^[0-9]{1,15}$/.test(sinceTs)) {
    from = { key: Number(sinceTs) };
  } else {
    throw Errors.invalidParam('since_ts must be a timestamp in milliseconds or "end"');
  }
  const roomId = single(query, "room_id");
  const type = single(query, "type");
  return {
    userId,
    orderBy,
    dir,
    from,
    status: oneOf(query, "status", STATUSES),
    roomId,
    type,
    outcome: oneOf(query, "outcome", OUTCOMES),
    reason: oneOf(query, "reason", REASONS),
    limit: DELAYED_PAGE_SIZE,
  };
}

/** A page, with `next_batch` when going forward and `prev_batch` when going back, if there is more. */
export async function listPage(store: DelayedEventStore, query: DelayedListQuery) {
  const rows = await store.page({ ...query, limit: query.limit + 1 });
  const page = rows.slice(0, query.limit);
  const last = page.at(-1);
  const more = rows.length > query.limit && last !== undefined;
  const token = more ? encodeToken({ orderBy: query.orderBy, key: last.key, delayId: last.record.delayId }) : undefined;
  return {
    delayed_events: page.map((r) => acceptedView(r.record)),
    ...(token !== undefined ? (query.dir === "f" ? { next_batch: token } : { prev_batch: token }) : {}),
  };
}
