/**
 * The rooms a sliding-sync response can speak of, and the lists over them: which rooms the
 * user has a membership in, each list's filters, the order by latest activity (`bump_stamp`),
 * the exact count and the rooms in each range. Everything is read for all rooms at once: a
 * user in hundreds of rooms costs a handful of queries, not a few per room.
 */
import type { Storage } from "../../storage/interfaces.js";
import type { MembershipRecord } from "../../storage/rooms.js";
import { pduOf } from "../../events/index.js";
import type { ListFilters, ListRequest } from "./request.js";
import type { UserRooms } from "./user_rooms.js";

export { BUMP_TYPES } from "./user_rooms.js";

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
  /** Every room of `memberships`, and those joined. */
  roomIds: readonly string[];
  joined: ReadonlySet<string>;
}

/**
 * The user's rooms as of `upTo`: joined, invited, knocked and banned ones, rooms someone else
 * removed them from, and rooms they left themselves within `newlyLeftAfter`..upTo (an
 * incremental request tells of the leave once). Forgotten rooms are not among them.
 */
async function candidateRooms(storage: Storage, userId: string, all: MembershipRecord[], newlyLeftAfter: number | undefined): Promise<MembershipRecord[]> {
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

/** `accountDataUpTo` is a position of the account-data stream (tags are account data), not of the events stream. */
async function readFacts(storage: Storage, userId: string, roomIds: string[], lists: Iterable<ListRequest>, accountDataUpTo: number): Promise<Facts> {
  const needs = { tags: false, types: false, encrypted: false };
  for (const { filters: f } of lists) {
    if (f.tags || f.notTags) needs.tags = true;
    if (f.roomTypes || f.notRoomTypes) needs.types = true;
    if (f.isEncrypted !== undefined) needs.encrypted = true;
  }
  const facts: Facts = {};
  if (needs.tags) {
    facts.tags = new Map();
    for (const c of await storage.accountData.changes(userId, 0, accountDataUpTo)) {
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
        const type = pduOf(e).content.type;
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

/** What the lists are made from, derived from the user's rooms alone. */
interface Ordered {
  memberships: Map<string, MembershipRecord>;
  bumpStamps: Map<string, number>;
  /** Latest activity first. */
  sorted: MembershipRecord[];
  sortedIds: string[];
  ids: Set<string>;
  joined: Set<string>;
}

/**
 * Kept per snapshot of the user's rooms (see UserRoomsCache): the connections of a user that wake
 * at one position order their hundreds of rooms once between them. Shared, so never changed.
 */
const orderedOf = new WeakMap<UserRooms, Ordered>();

function order(candidates: MembershipRecord[], latest: Map<string, number>): Ordered {
  // A joined user sees the room's latest bump event; anyone else only up to their membership.
  const stamp = (m: MembershipRecord) => Math.max(0, (m.membership === "join" ? latest.get(m.roomId) : undefined) ?? m.streamOrdering);
  // Keys read once per room rather than twice per comparison.
  const keyed = candidates.map((m) => ({ m, stamp: stamp(m) })).sort((a, b) => b.stamp - a.stamp || (a.m.roomId < b.m.roomId ? -1 : 1));
  const sorted = keyed.map((k) => k.m);
  const sortedIds = sorted.map((m) => m.roomId);
  return {
    memberships: new Map(candidates.map((m) => [m.roomId, m])),
    bumpStamps: new Map(keyed.map((k) => [k.m.roomId, k.stamp])),
    sorted,
    sortedIds,
    ids: new Set(sortedIds),
    joined: new Set(sorted.filter((m) => m.membership === "join").map((m) => m.roomId)),
  };
}

const unfiltered = (f: ListFilters) =>
  f.isDm === undefined && f.isInvite === undefined && f.isEncrypted === undefined && !f.roomTypes && !f.notRoomTypes && !f.tags && !f.notTags;

export async function computeLists(
  storage: Storage,
  userId: string,
  lists: Map<string, ListRequest>,
  upTo: { events: number; accountData: number },
  newlyLeftAfter: number | undefined,
  userRooms: (userId: string, upTo: number) => Promise<UserRooms>,
): Promise<RoomLists> {
  // Memberships as of upTo, and each joined room's latest activity.
  const rooms = await userRooms(userId, upTo.events);
  const candidates = await candidateRooms(storage, userId, rooms.memberships, newlyLeftAfter);
  // Rooms left or banned from make candidates depend on the request: ordered afresh then.
  const shared = candidates === rooms.memberships;
  let ordered = shared ? orderedOf.get(rooms) : undefined;
  if (!ordered) {
    ordered = order(candidates, rooms.latest);
    if (shared) orderedOf.set(rooms, ordered);
  }
  const { memberships, bumpStamps, sorted } = ordered;
  const dmRooms = await directRooms(storage, userId);
  const facts = await readFacts(storage, userId, ordered.sortedIds, lists.values(), upTo.accountData);

  const out = new Map<string, ListResult>();
  const allUnfiltered = [...lists.values()].every((l) => unfiltered(l.filters));
  const matchingAnyList = allUnfiltered && lists.size > 0 ? ordered.ids : new Set<string>();
  for (const [name, list] of lists) {
    const ids = unfiltered(list.filters) ? ordered.sortedIds : sorted.filter((m) => matches(list.filters, m, dmRooms, facts)).map((m) => m.roomId);
    if (!allUnfiltered) for (const r of ids) matchingAnyList.add(r);
    out.set(name, { count: ids.length, ranges: list.ranges.map((range) => ({ range, roomIds: ids.slice(range[0], range[1] + 1) })) });
  }
  return { memberships, bumpStamps, dmRooms, lists: out, matchingAnyList, roomIds: ordered.sortedIds, joined: ordered.joined };
}
