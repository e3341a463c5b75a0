/**
 * The reads every room of a `/sync` response needs, made for all rooms at once: the first
 * timeline page, the live sticky events and the memberships behind the summary. On
 * PostgreSQL each is one round trip instead of one per room; on SQLite, where a query costs
 * no round trip, it changes nothing.
 */
import type { Storage } from "../../storage/interfaces.js";
import type { MembershipRecord, StoredEvent } from "../../storage/rooms.js";
import { roomAllowed } from "./filters.js";
import { firstPageSize, type RoomSyncContext } from "./room_sync.js";

export interface RoomPrefetch {
  /** `eventsBetween(room, from, to, firstPageSize)`, as `RoomSync` would read it first. */
  firstPage?: { events: StoredEvent[]; limited: boolean };
  /** Sticky events of (from, to] still live at `ctx.now`. */
  sticky: StoredEvent[];
  /** Every current membership record of the room, when asked for. */
  members?: MembershipRecord[];
}

/** Rooms read over the same window: fresh rooms from 0, known ones from `since`. */
export interface WindowGroup {
  roomIds: string[];
  from: number;
}

export async function prefetchRooms(
  storage: Storage,
  ctx: RoomSyncContext,
  groups: WindowGroup[],
  to: number,
  withMembers: readonly string[],
): Promise<Map<string, RoomPrefetch>> {
  const out = new Map<string, RoomPrefetch>();
  const entry = (roomId: string) => {
    let e = out.get(roomId);
    if (!e) out.set(roomId, (e = { sticky: [] }));
    return e;
  };
  const pageSize = firstPageSize(ctx.filter);
  for (const { roomIds, from } of groups) {
    const timelined = roomIds.filter((id) => roomAllowed(ctx.filter.room?.timeline, id));
    for (const [roomId, page] of await storage.rooms.eventsBetweenMany(timelined, from, to, pageSize)) entry(roomId).firstPage = page;
    for (const e of await storage.rooms.liveStickyEventsMany(roomIds, from, to, ctx.now)) entry(e.roomId).sticky.push(e);
    for (const id of roomIds) entry(id);
  }
  if (withMembers.length > 0) {
    for (const id of withMembers) entry(id).members = [];
    for (const m of await storage.rooms.membershipsIn(withMembers)) entry(m.roomId).members!.push(m);
  }
  return out;
}
