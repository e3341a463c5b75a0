/**
 * The body of a sliding-sync request (MSC4186 in the dialect Synapse and the clients speak),
 * checked and normalised. Unknown keys are ignored, as Synapse does; a few renamed fields of
 * the merged MSC (`range`, `is_invited`) are accepted as aliases. Filters this server cannot
 * apply are refused with 400 rather than silently ignored, so a client never gets a wrong list.
 */
import { Errors } from "../../errors.js";

export type StatePair = readonly [type: string, stateKey: string];

export interface RoomConfig {
  timelineLimit: number;
  requiredState: StatePair[];
}

export interface ListFilters {
  isDm?: boolean;
  isEncrypted?: boolean;
  isInvite?: boolean;
  /** `null` in these lists means rooms without a type. */
  roomTypes?: (string | null)[];
  notRoomTypes?: (string | null)[];
  tags?: string[];
  notTags?: string[];
}

export interface ListRequest extends RoomConfig {
  /** Inclusive index ranges; none: only the count is wanted. */
  ranges: [number, number][];
  filters: ListFilters;
}

export interface RoomSelection {
  /** List names and room IDs the extension covers; `*` means all. */
  lists: string[];
  rooms: string[];
}

export interface ExtensionsRequest {
  toDevice?: { limit: number; since?: number };
  e2ee?: true;
  accountData?: RoomSelection;
  receipts?: RoomSelection;
  typing?: RoomSelection;
  sticky?: { limit: number; since?: number };
}

export interface SlidingSyncRequest {
  connId: string;
  lists: Map<string, ListRequest>;
  subscriptions: Map<string, RoomConfig>;
  extensions: ExtensionsRequest;
}

export const MAX_TIMELINE_LIMIT = 1000;
const MAX_LISTS = 100;
const MAX_LIST_NAME = 64;
/** Per-extension batch caps, as Synapse's. */
const MAX_TO_DEVICE = 100;
const MAX_STICKY = 100;

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

function objectAt(v: unknown, where: string): Json {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw Errors.badJson(`${where} must be an object`);
  return v;
}

function boolAt(v: unknown, where: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw Errors.badJson(`${where} must be a boolean`);
  return v;
}

function intAt(v: unknown, where: string, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) throw Errors.badJson(`${where} must be an integer from 0 to ${max}`);
  return v;
}

function stringsAt(v: unknown, where: string, nullable = false): (string | null)[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string" || (nullable && x === null))) {
    throw Errors.badJson(`${where} must be a list of strings`);
  }
  return v as (string | null)[];
}

function roomConfig(v: Json, where: string): RoomConfig {
  // Lenient where Synapse is strict: RUMA leaves out an empty `required_state`.
  const raw = v.required_state ?? [];
  if (!Array.isArray(raw)) throw Errors.badJson(`${where}.required_state must be a list of [type, state_key] pairs`);
  const requiredState = raw.map((pair): StatePair => {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "string" || typeof pair[1] !== "string") {
      throw Errors.badJson(`${where}.required_state must be a list of [type, state_key] pairs`);
    }
    return [pair[0], pair[1]];
  });
  return { timelineLimit: intAt(v.timeline_limit, `${where}.timeline_limit`, MAX_TIMELINE_LIMIT) ?? 0, requiredState };
}

function filters(v: unknown, where: string): ListFilters {
  const f = objectAt(v, where);
  for (const unsupported of ["spaces", "room_name_like"]) {
    const v = f[unsupported];
    // An empty value filters nothing and is harmless; anything else would need the filter applied.
    const empty = v === undefined || v === null || v === "" || (Array.isArray(v) && v.length === 0);
    if (!empty) throw Errors.invalidParam(`The ${unsupported} filter is not supported`);
  }
  const strings = (key: string) => stringsAt(f[key], `${where}.${key}`) as string[] | undefined;
  return {
    isDm: boolAt(f.is_dm, `${where}.is_dm`),
    isEncrypted: boolAt(f.is_encrypted, `${where}.is_encrypted`),
    isInvite: boolAt(f.is_invite ?? f.is_invited, `${where}.is_invite`),
    roomTypes: stringsAt(f.room_types, `${where}.room_types`, true),
    notRoomTypes: stringsAt(f.not_room_types, `${where}.not_room_types`, true),
    tags: strings("tags"),
    notTags: strings("not_tags"),
  };
}

function ranges(v: Json, where: string): [number, number][] {
  const raw = v.ranges ?? (v.range !== undefined ? [v.range] : []);
  if (!Array.isArray(raw)) throw Errors.badJson(`${where}.ranges must be a list of [start, end] pairs`);
  return raw.map((r): [number, number] => {
    const ok = Array.isArray(r) && r.length === 2 && r.every((n) => typeof n === "number" && Number.isInteger(n) && n >= 0);
    if (!ok || r[0] > r[1]) throw Errors.badJson(`${where}.ranges must be a list of [start, end] pairs with start <= end`);
    return [r[0], r[1]];
  });
}

function selection(v: Json, where: string): RoomSelection {
  return {
    lists: (stringsAt(v.lists, `${where}.lists`) as string[] | undefined) ?? ["*"],
    rooms: (stringsAt(v.rooms, `${where}.rooms`) as string[] | undefined) ?? ["*"],
  };
}

/** `since` tokens of the to-device and sticky-event extensions. */
function sinceAt(v: unknown, where: string, pattern: RegExp): number | undefined {
  if (v === undefined || v === null) return undefined;
  const m = typeof v === "string" ? pattern.exec(v) : null;
  if (!m) throw Errors.invalidParam(`${where} is not a valid token`);
  return Number(m[1]);
}

function extensions(v: unknown): ExtensionsRequest {
  const e = objectAt(v, "extensions");
  const out: ExtensionsRequest = {};
  // Unknown extensions are ignored (MSC4186).
  const enabled = (key: string): Json | undefined => {
    const ext = objectAt(e[key], `extensions.${key}`);
    return boolAt(ext.enabled, `extensions.${key}.enabled`) === true ? ext : undefined;
  };
  const toDevice = enabled("to_device");
  if (toDevice) {
    out.toDevice = {
      limit: Math.min(intAt(toDevice.limit, "extensions.to_device.limit") ?? MAX_TO_DEVICE, MAX_TO_DEVICE),
      since: sinceAt(toDevice.since, "extensions.to_device.since", /^([0-9]{1,15})$/),
    };
  }
  if (enabled("e2ee")) out.e2ee = true;
  const accountData = enabled("account_data");
  if (accountData) out.accountData = selection(accountData, "extensions.account_data");
  const receipts = enabled("receipts");
  if (receipts) out.receipts = selection(receipts, "extensions.receipts");
  const typing = enabled("typing");
  if (typing) out.typing = selection(typing, "extensions.typing");
  const sticky = enabled("org.matrix.msc4354.sticky_events");
  if (sticky) {
    out.sticky = {
      limit: Math.min(intAt(sticky.limit, "extensions.org.matrix.msc4354.sticky_events.limit") ?? MAX_STICKY, MAX_STICKY),
      since: sinceAt(sticky.since, "extensions.org.matrix.msc4354.sticky_events.since", /^sticky_([0-9]{1,15})$/),
    };
  }
  return out;
}

export function parseRequest(body: unknown): SlidingSyncRequest {
  const b = objectAt(body, "The request body");
  if (b.conn_id !== undefined && b.conn_id !== null && typeof b.conn_id !== "string") throw Errors.badJson("conn_id must be a string");
  const rawLists = objectAt(b.lists, "lists");
  const names = Object.keys(rawLists);
  if (names.length > MAX_LISTS) throw Errors.badJson(`At most ${MAX_LISTS} lists are allowed`);
  const lists = new Map<string, ListRequest>();
  for (const name of names) {
    if (name.length > MAX_LIST_NAME) throw Errors.badJson(`List names are at most ${MAX_LIST_NAME} characters`);
    const where = `lists.${name}`;
    const l = objectAt(rawLists[name], where);
    lists.set(name, { ...roomConfig(l, where), ranges: ranges(l, where), filters: filters(l.filters, `${where}.filters`) });
  }
  const subscriptions = new Map<string, RoomConfig>();
  for (const [roomId, sub] of Object.entries(objectAt(b.room_subscriptions, "room_subscriptions"))) {
    subscriptions.set(roomId, roomConfig(objectAt(sub, `room_subscriptions.${roomId}`), `room_subscriptions.${roomId}`));
  }
  return { connId: (b.conn_id as string | undefined) ?? "", lists, subscriptions, extensions: extensions(b.extensions) };
}
