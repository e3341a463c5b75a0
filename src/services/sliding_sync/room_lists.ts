/**
 * The rooms a sliding-sync response can speak of, and the lists over them: which rooms the
 * user has a membership in, each list's filters, the order by latest activity (`bump_stamp`),
 * the exact count and the rooms in each range. Everything is read for all rooms at once: a
 * user in hundreds of rooms costs a handful of queries, not a few per room.
 */
import type { Storage } from "../../storage/interfaces.js";
import type { MembershipRecord } from "../../storage/rooms.js";
import { parsePdu } from "../rooms/persister.js";
import { membershipsAt } from "../sync/memberships.js";
import type { ListFilters, ListRequest } from "./request.js";

/** Event types that move a room up the list (MSC4186's list, as Synapse's). */
export const BUMP_TYPES = ["m.room.create", "m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite", "m.poll.start", "m.beacon_info"];

export interface ListResult {
  count: number;
  /** Per requested range, the room IDs in it. */
  ranges: { range: [number, number]; roomIds: string[] }[];
}

export interface RoomLists {
  /** Every room the response may speak of, by ID. */
  memberships: Map<string, MembershipRecord>;
  /** Latest activity per room: the newest bump event the user may see, else their membership event. */
  bumpStamps: Map<string, number>;
  /** Rooms that `m.direct` names. */
  dmRooms: Set<string>;
  lists: Map<string, ListResult>;
  /** Rooms that match any list, in a range or not. */
  matchingAnyList: Set<string>;
}

/**
 * The user's rooms as of `upTo`: joined, invited, knocked and banned ones, rooms someone else
 * removed them from, and rooms they left themselves within `newlyLeftAfter`..upTo (an
 * incremental request tells of the leave once). Forgotten rooms are not among them.
 */
async function candidateRooms(storage: Storage, userId: string, upTo: number, newlyLeftAfter: number | undefined): Promise<MembershipRecord[]> {
  const all = await membershipsAt(storage, userId, upTo);
  const left = all.filter((m) => m.membership === "leave" || m.membership === "ban");
  if (left.length === 0) return all;
  const forgotten = new Set(await storage.rooms.forgottenRooms(userId));
  const leaves = all.filter((m) => m.membership === "leave" && !forgotten.has(m.roomId));
  const kickedBy = new Map((await storage.rooms.getEvents(leaves.map((m) => m.eventId))).map((e) => [e.eventId, e.sender]));
  return all.filter((m) => {
    if (m.membership !== "leave" && m.membership !== "ban") return true;
    if (forgotten.has(m.roomId)) return false;
    if (m.membership === "ban") return true;
    const sender = kickedBy.get(m.eventId);
    return (sender !== undefined && sender !== userId) || (newlyLeftAfter !== undefined && m.streamOrdering > newlyLeftAfter);
  });
}

/** The room IDs `m.direct` lists (its values: user ID → room IDs). */
export async function directRooms(storage: Storage, userId: string): Promise<Set<string>> {
  const content = await storage.accountData.get(userId, null, "m.direct");
  const out = new Set<string>();
  for (const rooms of Object.values(content ?? {})) {
    if (Array.isArray(rooms)) for (const r of rooms) if (typeof r === "string") out.add(r);
  }
  return out;
}

/** What the filters look at, read only when some list needs it. */
interface Facts {
  tags?: Map<string, Set<string>>;
  createType?: Map<string, string | null>;
  encrypted?: Set<string>;
}

async function readFacts(storage: Storage, userId: string, roomIds: string[], lists: Iterable<ListRequest>, upTo: number): Promise<Facts> {
  const needs = { tags: false, types: false, encrypted: false };
  for (const { filters: f } of lists) {
    if (f.tags || f.notTags) needs.tags = true;
    if (f.roomTypes || f.notRoomTypes) needs.types = true;
    if (f.isEncrypted !== undefined) needs.encrypted = true;
  }
  const facts: Facts = {};
  if (needs.tags) {
    facts.tags = new Map();
    for (const c of await storage.accountData.changes(userId, 0, upTo)) {
      if (c.roomId === null || c.type !== "m.tag") continue;
      const tags = c.content.tags;
      facts.tags.set(c.roomId, new Set(typeof tags === "object" && tags !== null ? Object.keys(tags) : []));
    }
  }
  if (needs.types || needs.encrypted) {
    facts.createType = new Map();
    facts.encrypted = new Set();
    for (const e of await storage.rooms.currentStateMany(roomIds, [], [["m.room.create", ""], ["m.room.encryption", ""]])) {
      if (e.type === "m.room.encryption") facts.encrypted.add(e.roomId);
      else {
        const type = parsePdu(e).content.type;
        facts.createType.set(e.roomId, typeof type === "string" ? type : null);
      }
    }
  }
  return facts;
}

function matches(f: ListFilters, m: MembershipRecord, dmRooms: Set<string>, facts: Facts): boolean {
  const roomId = m.roomId;
  if (f.isDm !== undefined && dmRooms.has(roomId) !== f.isDm) return false;
  if (f.isInvite !== undefined && (m.membership === "invite") !== f.isInvite) return false;
  if (f.isEncrypted !== undefined && facts.encrypted!.has(roomId) !== f.isEncrypted) return false;
  if (f.roomTypes || f.notRoomTypes) {
    // Rooms whose create event is unknown here match neither way.
    if (!facts.createType!.has(roomId)) return false;
    const type = facts.createType!.get(roomId)!;
    if (f.notRoomTypes?.includes(type)) return false;
    if (f.roomTypes && !f.roomTypes.includes(type)) return false;
  }
  if (f.tags || f.notTags) {
    const tags = facts.tags!.get(roomId) ?? new Set<string>();
    if (f.notTags?.some((t) => tags.has(t))) return false;
    if (f.tags && !f.tags.some((t) => tags.has(t))) return false;
  }
  return true;
}

export async function computeLists(
  storage: Storage,
  userId: string,
  lists: Map<string, ListRequest>,
  upTo: number,
  newlyLeftAfter: number | undefined,
): Promise<RoomLists> {
  const candidates = await candidateRooms(storage, userId, upTo, newlyLeftAfter);
  const memberships = new Map(candidates.map((m) => [m.roomId, m]));
  // A joined user sees the room's latest activity; anyone else only up to their membership.
  const joined = candidates.filter((m) => m.membership === "join");
  const latest = await storage.rooms.latestOfTypes(
    joined.map((m) => [m.roomId, upTo] as const),
    BUMP_TYPES,
  );
  const bumpStamps = new Map(candidates.map((m) => [m.roomId, Math.max(0, latest.get(m.roomId) ?? m.streamOrdering)]));
  const dmRooms = await directRooms(storage, userId);
  const facts = await readFacts(storage, userId, [...memberships.keys()], lists.values(), upTo);
  const sorted = [...candidates].sort((a, b) => bumpStamps.get(b.roomId)! - bumpStamps.get(a.roomId)! || (a.roomId < b.roomId ? -1 : 1));

  const out = new Map<string, ListResult>();
  const matchingAnyList = new Set<string>();
  for (const [name, list] of lists) {
    const rooms = sorted.filter((m) => matches(list.filters, m, dmRooms, facts)).map((m) => m.roomId);
    for (const r of rooms) matchingAnyList.add(r);
    out.set(name, { count: rooms.length, ranges: list.ranges.map((range) => ({ range, roomIds: rooms.slice(range[0], range[1] + 1) })) });
  }
  return { memberships, bumpStamps, dmRooms, lists: out, matchingAnyList };
}
