/**
 * Event filters (spec: "Filtering"). Parsed once into a checked shape; the
 * same matching serves `/sync`, `/messages` and `/context`.
 */
import { Errors } from "../../errors.js";

export interface EventFilter {
  limit?: number;
  types?: string[];
  not_types?: string[];
  senders?: string[];
  not_senders?: string[];
}

export interface RoomEventFilter extends EventFilter {
  rooms?: string[];
  not_rooms?: string[];
  lazy_load_members?: boolean;
  include_redundant_members?: boolean;
  contains_url?: boolean;
  /** Count notifications per thread (spec v1.4). */
  unread_thread_notifications?: boolean;
}

export interface RoomFilter {
  rooms?: string[];
  not_rooms?: string[];
  include_leave?: boolean;
  timeline?: RoomEventFilter;
  state?: RoomEventFilter;
  ephemeral?: RoomEventFilter;
  account_data?: RoomEventFilter;
}

export interface Filter {
  event_fields?: string[];
  event_format?: "client" | "federation";
  presence?: EventFilter;
  account_data?: EventFilter;
  room?: RoomFilter;
}

const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === "string");

function checkEventFilter(value: unknown, where: string): void {
  if (value === undefined) return;
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw Errors.badJson(`${where} must be an object`);
  const f = value as Record<string, unknown>;
  for (const key of ["types", "not_types", "senders", "not_senders", "rooms", "not_rooms"]) {
    if (f[key] !== undefined && !isStringArray(f[key])) throw Errors.badJson(`${where}.${key} must be a list of strings`);
  }
  if (f.limit !== undefined && (!Number.isInteger(f.limit) || (f.limit as number) < 0)) {
    throw Errors.badJson(`${where}.limit must be a non-negative integer`);
  }
  for (const key of ["lazy_load_members", "include_redundant_members", "contains_url", "include_leave", "unread_thread_notifications"]) {
    if (f[key] !== undefined && typeof f[key] !== "boolean") throw Errors.badJson(`${where}.${key} must be a boolean`);
  }
}

/** Validates a filter definition; throws 400 M_BAD_JSON naming the bad field. */
export function parseFilter(value: unknown): Filter {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw Errors.badJson("A filter must be a JSON object");
  const f = value as Record<string, unknown>;
  if (f.event_fields !== undefined && !isStringArray(f.event_fields)) throw Errors.badJson("event_fields must be a list of strings");
  if (f.event_format !== undefined && f.event_format !== "client" && f.event_format !== "federation") {
    throw Errors.badJson("event_format must be client or federation");
  }
  checkEventFilter(f.presence, "presence");
  checkEventFilter(f.account_data, "account_data");
  if (f.room !== undefined) {
    checkEventFilter(f.room, "room");
    const room = f.room as Record<string, unknown>;
    for (const key of ["timeline", "state", "ephemeral", "account_data"]) checkEventFilter(room[key], `room.${key}`);
  }
  return f as Filter;
}

function globMatch(pattern: string, value: string): boolean {
  if (!pattern.includes("*")) return pattern === value;
  const re = new RegExp("^" + pattern.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*") + "$");
  return re.test(value);
}

/** Whether an event passes a filter's type and sender lists (`*` wildcards allowed in types). */
export function matchesFilter(filter: EventFilter | undefined, event: { type: string; sender?: string }): boolean {
  if (!filter) return true;
  if (filter.not_types?.some((t) => globMatch(t, event.type))) return false;
  if (filter.types && !filter.types.some((t) => globMatch(t, event.type))) return false;
  if (event.sender !== undefined) {
    if (filter.not_senders?.includes(event.sender)) return false;
    if (filter.senders && !filter.senders.includes(event.sender)) return false;
  }
  return true;
}

export function roomAllowed(filter: { rooms?: string[]; not_rooms?: string[] } | undefined, roomId: string): boolean {
  if (!filter) return true;
  if (filter.not_rooms?.includes(roomId)) return false;
  return !filter.rooms || filter.rooms.includes(roomId);
}
