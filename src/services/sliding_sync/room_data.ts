/**
 * The room results of a sliding-sync response (MSC4186 §"Room results", in Synapse's dialect):
 * timeline, `required_state`, name, avatar, heroes, member counts, invite state, bump stamp,
 * notification counts. The reads are made for all rooms of the response together: the first
 * timeline pages, the current state asked for, the memberships behind counts and heroes, the
 * notification counts. The timeline window itself is `/sync` v2's (RoomSync.timeline), so
 * history visibility and pagination tokens are the same in both.
 */
import type { Storage } from "../../storage/interfaces.js";
import { stateKeyOf, type MembershipRecord, type StoredEvent } from "../../storage/rooms.js";
import type { Requester } from "../auth.js";
import { toClientEvent, toStrippedState } from "../rooms/client_format.js";
import { pduOf } from "../../events/index.js";
import type { RoomSync, RoomSyncContext } from "../sync/room_sync.js";
import { formatRoomToken } from "../sync/tokens.js";
import type { RoomConfig } from "./request.js";
import { StateSelection, timelineMembers } from "./required_state.js";

const MAX_HEROES = 5;
const NAME: [string, string] = ["m.room.name", ""];
const AVATAR: [string, string] = ["m.room.avatar", ""];

/** What to compute for one room. */
export interface RoomPlan {
  roomId: string;
  membership: MembershipRecord;
  config: RoomConfig;
  /** The client has nothing of this room yet: full state, `initial: true`. */
  initial: boolean;
  /** Timeline events are taken after this position (0: the latest `timeline_limit`). */
  timelineFrom: number;
  /** State changes are taken after this position (unless initial). */
  stateFrom: number;
  /** The request's position: timeline events after it count in `num_live`. */
  liveAfter?: number;
  expandedTimeline: boolean;
  /** The config last sent, when the new one asks for more state: the newly covered state is sent. */
  newlyCovered?: RoomConfig;
}

export interface RoomOutcome {
  /** Undefined when an incremental result would be empty. */
  result?: Record<string, unknown>;
  timelineEventIds: string[];
  /** Members sent because of `$LAZY`. */
  lazyMembers: string[];
}

export interface RoomDataInput {
  storage: Storage;
  roomSync: RoomSync;
  requester: Requester;
  now: number;
  upTo: number;
  bumpStamps: Map<string, number>;
  dmRooms: Set<string>;
  lazySent: (roomId: string) => ReadonlySet<string>;
}

interface Working {
  plan: RoomPlan;
  selection: StateSelection;
  to: number;
  timeline: StoredEvent[];
  limited: boolean;
  before: number;
  /** Unfiltered state changes of an incremental result. */
  delta?: Map<string, StoredEvent>;
  required: Map<string, StoredEvent>;
  /** Name and avatar, read for the room's own fields when `required_state` does not ask for them. */
  fields: Map<string, StoredEvent>;
  lazy: string[];
}


function group<T>(items: T[], key: (t: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const list = out.get(k) ?? [];
    list.push(item);
    out.set(k, list);
  }
  return out;
}

export async function buildRooms(input: RoomDataInput, plans: RoomPlan[]): Promise<Map<string, RoomOutcome>> {
  const out = new Map<string, RoomOutcome>();
  const invited = plans.filter((p) => p.membership.membership === "invite" || p.membership.membership === "knock");
  for (const [roomId, outcome] of await inviteResults(input, invited)) out.set(roomId, outcome);
  const others = plans.filter((p) => !invited.includes(p));
  const working = await timelines(input, others);
  await requiredState(input, working);
  const summaries = await summariesOf(input, working);
  const joinedIds = working.filter((w) => w.plan.membership.membership === "join").map((w) => w.plan.roomId);
  const counts = await input.storage.pushActions.counts(input.requester.userId, joinedIds, input.upTo);
  for (const w of working) {
    const { plan } = w;
    const result: Record<string, unknown> = {};
    if (plan.initial) result.initial = true;
    const field = (pair: [string, string]) => {
      const key = stateKeyOf(...pair);
      return plan.initial ? (w.required.get(key) ?? w.fields.get(key)) : w.delta?.get(key);
    };
    const nameEvent = field(NAME);
    const name = nameEvent ? pduOf(nameEvent).content.name : undefined;
    if (typeof name === "string" && name !== "") result.name = name;
    const avatarEvent = field(AVATAR);
    const avatar = avatarEvent ? pduOf(avatarEvent).content.url : undefined;
    if (typeof avatar === "string") result.avatar = avatar;
    Object.assign(result, summaries.get(plan.roomId) ?? {});
    const state = [...w.required.values()].sort((a, b) => a.streamOrdering - b.streamOrdering);
    result.required_state = state.map((e) => toClientEvent(e, input.now, input.requester));
    result.timeline = w.timeline.map((e) => toClientEvent(e, input.now, input.requester));
    result.limited = w.limited;
    result.prev_batch = formatRoomToken(w.before);
    result.num_live = plan.liveAfter === undefined ? 0 : w.timeline.filter((e) => e.streamOrdering > plan.liveAfter!).length;
    if (plan.expandedTimeline) result.unstable_expanded_timeline = true;
    const bump = input.bumpStamps.get(plan.roomId);
    if (bump !== undefined && (plan.initial || bump > plan.timelineFrom)) result.bump_stamp = bump;
    if (input.dmRooms.has(plan.roomId)) result.is_dm = true;
    const c = counts.get(plan.roomId);
    if (plan.membership.membership === "join") {
      result.notification_count = c?.notify ?? 0;
      result.highlight_count = c?.highlight ?? 0;
    }
    const empty =
      !plan.initial && !plan.expandedTimeline && w.timeline.length === 0 && state.length === 0 && !summaries.has(plan.roomId) && !nameEvent && !avatarEvent;
    out.set(plan.roomId, { result: empty ? undefined : result, timelineEventIds: w.timeline.map((e) => e.eventId), lazyMembers: w.lazy });
  }
  return out;
}

/** Invited (or knocking) users see only the stripped state their invite carries, and the invite itself. */
async function inviteResults(input: RoomDataInput, plans: RoomPlan[]): Promise<Map<string, RoomOutcome>> {
  const out = new Map<string, RoomOutcome>();
  const events = new Map((await input.storage.rooms.getEvents(plans.map((p) => p.membership.eventId))).map((e) => [e.eventId, e]));
  for (const plan of plans) {
    const invite = events.get(plan.membership.eventId);
    if (!invite) continue;
    const inviteState = await input.roomSync.inviteState(plan.roomId, invite, input.now, input.requester);
    const result: Record<string, unknown> = {
      initial: true,
      invite_state: inviteState.map((e) => (e.event_id === invite.eventId ? toStrippedState(invite) : e)),
      bump_stamp: input.bumpStamps.get(plan.roomId) ?? plan.membership.streamOrdering,
    };
    if (input.dmRooms.has(plan.roomId)) result.is_dm = true;
    out.set(plan.roomId, { result, timelineEventIds: [], lazyMembers: [] });
  }
  return out;
}

/** Each room's timeline window, with the first page of every room read in one go per window shape. */
async function timelines(input: RoomDataInput, plans: RoomPlan[]): Promise<Working[]> {
  const ctx: RoomSyncContext = { viewer: input.requester, now: input.now, filter: {}, fullState: false };
  // A user who left sees the room up to their leave.
  const toOf = (p: RoomPlan) => (p.membership.membership === "join" ? input.upTo : Math.min(input.upTo, p.membership.streamOrdering));
  const pages = new Map<string, { events: StoredEvent[]; limited: boolean }>();
  const shapes = group(plans, (p) => `${p.timelineFrom}/${toOf(p)}/${p.config.timelineLimit}`);
  for (const list of shapes.values()) {
    const p = list[0]!;
    const read = await input.storage.rooms.eventsBetweenMany(
      list.map((x) => x.roomId),
      p.timelineFrom,
      toOf(p),
      p.config.timelineLimit + 1,
    );
    for (const [roomId, page] of read) pages.set(roomId, page);
  }
  const out: Working[] = [];
  for (const plan of plans) {
    const to = toOf(plan);
    const { events, limited, before } = await input.roomSync.timeline(
      ctx,
      {
        roomId: plan.roomId,
        from: plan.timelineFrom,
        to,
        full: plan.initial,
        since: plan.stateFrom,
        visibleAfter: plan.membership.streamOrdering,
        joinedAtEnd: true,
        firstPage: pages.get(plan.roomId),
      },
      plan.config.timelineLimit,
    );
    const selection = new StateSelection(plan.config.requiredState, input.requester.userId);
    out.push({ plan, selection, to, timeline: events, limited, before, required: new Map(), fields: new Map(), lazy: [] });
  }
  return out;
}

/**
 * Fills in `required_state`: for a room new to the client, the current state the config asks
 * for; otherwise what changed since the client's position, plus newly requested state. With
 * `$LAZY`, the members the timeline needs that this connection has not sent yet.
 */
async function requiredState(input: RoomDataInput, working: Working[]): Promise<void> {
  const { storage } = input;
  const batchRooms: Working[] = [];
  const types = new Set<string>();
  const keys = new Map<string, [string, string]>();
  const addKey = (pair: [string, string]) => keys.set(stateKeyOf(...pair), pair);
  for (const w of working) {
    const { plan, selection } = w;
    const left = plan.membership.membership !== "join";
    const wanted = selection.lazyMembers ? timelineMembers(w.timeline) : new Set<string>();
    if (!plan.initial) {
      w.delta = await storage.rooms.stateDelta(plan.roomId, plan.stateFrom, w.to);
      const sent = input.lazySent(plan.roomId);
      for (const e of w.delta.values()) {
        const lazyKnown = selection.lazyMembers && e.type === "m.room.member" && (sent.has(e.stateKey ?? "") || wanted.has(e.stateKey ?? ""));
        if (selection.matches(e) || lazyKnown) w.required.set(stateKeyOf(e.type, e.stateKey ?? ""), e);
      }
      for (const u of sent) wanted.delete(u);
    }
    w.lazy = [...wanted];
    const fullRead = plan.initial || plan.newlyCovered !== undefined;
    if (left || (fullRead && selection.all)) {
      // Rare (rooms left, or asking for all state): read the whole state there, room by room.
      const state = left ? await storage.rooms.stateAt(plan.roomId, w.to) : await storage.rooms.currentState(plan.roomId);
      addState(w, state.values(), wanted, input.requester.userId);
      continue;
    }
    if (!fullRead && wanted.size === 0) continue;
    batchRooms.push(w);
    if (fullRead) {
      for (const t of selection.types) types.add(t);
      for (const pair of selection.pairs) addKey(pair);
      if (plan.initial) [NAME, AVATAR].forEach(addKey);
    }
    for (const u of wanted) addKey(["m.room.member", u]);
  }
  if (batchRooms.length === 0) return;
  const events = await storage.rooms.currentStateMany(
    batchRooms.map((w) => w.plan.roomId),
    [...types],
    [...keys.values()],
  );
  const byRoom = group(events, (e) => e.roomId);
  for (const w of batchRooms) addState(w, byRoom.get(w.plan.roomId) ?? [], new Set(w.lazy), input.requester.userId);
}

/** Adds the events of a state read that the room's config (or its lazy members) asks for. */
function addState(w: Working, state: Iterable<StoredEvent>, lazyWanted: Set<string>, userId: string): void {
  const { plan, selection } = w;
  const previous = plan.newlyCovered ? new StateSelection(plan.newlyCovered.requiredState, userId) : undefined;
  for (const e of state) {
    const key = stateKeyOf(e.type, e.stateKey ?? "");
    // Name and avatar are read for the room's own fields even when not asked for as state.
    if (plan.initial && (key === stateKeyOf(...NAME) || key === stateKeyOf(...AVATAR)) && !selection.matches(e)) {
      w.fields.set(key, e);
      continue;
    }
    const asked = plan.initial ? selection.matches(e) : selection.matches(e) && previous !== undefined && !previous.matches(e);
    const lazy = e.type === "m.room.member" && lazyWanted.has(e.stateKey ?? "");
    if (asked || lazy) w.required.set(key, e);
  }
}

const isMember = (e: StoredEvent) => e.type === "m.room.member";

/**
 * Member counts, and heroes for rooms without a name, of joined rooms new to the client or
 * whose membership changed: up to five other members, joined ones first, then invited, then
 * those who left, each with the name and avatar of their member event.
 */
async function summariesOf(input: RoomDataInput, working: Working[]): Promise<Map<string, Record<string, unknown>>> {
  const out = new Map<string, Record<string, unknown>>();
  const { storage } = input;
  const userId = input.requester.userId;
  const rooms = working
    .filter((w) => w.plan.membership.membership === "join")
    .filter((w) => w.plan.initial || w.timeline.some(isMember) || [...(w.delta?.values() ?? [])].some(isMember))
    .map((w) => w.plan.roomId);
  if (rooms.length === 0) return out;
  const members = group(await storage.rooms.membershipsIn(rooms), (m) => m.roomId);
  const named = new Set<string>();
  for (const e of await storage.rooms.currentStateMany(rooms, [], [NAME])) {
    const name = pduOf(e).content.name;
    if (typeof name === "string" && name !== "") named.add(e.roomId);
  }
  const heroIds = new Map<string, string[]>();
  const heroKeys = new Map<string, [string, string]>();
  for (const roomId of rooms) {
    const list = members.get(roomId) ?? [];
    const of = (...kinds: string[]) =>
      list.filter((m) => kinds.includes(m.membership) && m.userId !== userId).sort((a, b) => a.streamOrdering - b.streamOrdering);
    out.set(roomId, {
      joined_count: list.filter((m) => m.membership === "join").length,
      invited_count: list.filter((m) => m.membership === "invite").length,
    });
    if (named.has(roomId)) continue;
    const heroes = [...of("join"), ...of("invite"), ...of("leave", "ban")].slice(0, MAX_HEROES).map((m) => m.userId);
    heroIds.set(roomId, heroes);
    for (const h of heroes) heroKeys.set(h, ["m.room.member", h]);
  }
  const memberEvents = new Map<string, StoredEvent>();
  const heroRooms = [...heroIds.keys()];
  for (const e of await storage.rooms.currentStateMany(heroRooms, [], [...heroKeys.values()])) memberEvents.set(`${e.roomId}|${e.stateKey}`, e);
  for (const [roomId, heroes] of heroIds) {
    out.get(roomId)!.heroes = heroes.map((h) => {
      const e = memberEvents.get(`${roomId}|${h}`);
      const content = e ? pduOf(e).content : {};
      return {
        user_id: h,
        ...(typeof content.displayname === "string" ? { displayname: content.displayname } : {}),
        ...(typeof content.avatar_url === "string" ? { avatar_url: content.avatar_url } : {}),
      };
    });
  }
  return out;
}
