/**
 * One room's part of a `/sync` response: its timeline window and the state
 * that goes with it, in either of the two shapes the spec allows:
 *
 * - classic `state`: the state at the START of the timeline. For a room the
 *   client has not seen (initial sync, new join, `full_state`) that is the
 *   full state there; otherwise only what changed between `since` and the
 *   timeline's start, which is empty unless the timeline is limited.
 * - MSC4222 `state_after`: the state at the END of the timeline. Full state
 *   for a room the client has not seen; otherwise what changed between
 *   `since` and the end, including changes the timeline also carries.
 */
import type { Storage } from "../../storage/interfaces.js";
import { stateKeyOf, type MembershipRecord, type StateMap, type StoredEvent } from "../../storage/rooms.js";
import { toClientEvent, toStrippedState, type ClientEvent, type Viewer } from "../rooms/client_format.js";
import { pduOf } from "../../events/index.js";
import { filterVisible } from "../rooms/visibility.js";
import { matchesFilter, roomAllowed, type Filter } from "./filters.js";
import { formatRoomToken } from "./tokens.js";

export const DEFAULT_TIMELINE_LIMIT = 10;
const MAX_TIMELINE_LIMIT = 1000;
/** How many events to read per query when a filter drops some and more are needed. */
const SCAN_PAGE = 100;
/** How many events one timeline may scan before it gives up and reports itself limited. */
const SCAN_BUDGET = 1000;

/** The state types an invitee sees before joining (MSC3173's list), besides member events. */
const INVITE_STATE_TYPES = [
  "m.room.create",
  "m.room.join_rules",
  "m.room.canonical_alias",
  "m.room.avatar",
  "m.room.name",
  "m.room.encryption",
  "m.room.topic",
];

export interface RoomSyncContext {
  viewer: Viewer;
  now: number;
  filter: Filter;
  fullState: boolean;
  /** Set when the client asked for MSC4222: the response key to use. */
  stateAfterKey?: string;
}

/** Which part of a room's history one sync response covers. */
export interface RoomWindow {
  roomId: string;
  /** Timeline events are taken from (from, to]. */
  from: number;
  to: number;
  /** The client has never seen this room (or asked for full state): send full state. */
  full: boolean;
  /** For state deltas: the position the client is already at. */
  since: number;
  /** Events after this position are known to be visible to the user (joined since then). */
  visibleAfter: number;
  /** See `filterVisible`: whether the user is, or was until `to`, joined. */
  joinedAtEnd: boolean;
  /** The first page of (from, to], already read for several rooms at once (see prefetch.ts). */
  firstPage?: { events: StoredEvent[]; limited: boolean };
}

export interface TimelineSection {
  events: ClientEvent[];
  limited: boolean;
  prev_batch: string;
}

export interface RoomCore {
  timeline: TimelineSection;
  /** The response key (`state` or the state-after key) and its events. */
  stateKey: string;
  state: ClientEvent[];
  /** Whether anything in the timeline or state concerns membership (the summary may have changed). */
  membersChanged: boolean;
}

export interface RoomSummary {
  "m.heroes": string[];
  "m.joined_member_count": number;
  "m.invited_member_count": number;
}

function clampLimit(limit: number | undefined): number {
  return Math.max(0, Math.min(limit ?? DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT));
}

/** How many events the first read of a timeline asks for: one more than it shows, to know if it is limited. */
export function firstPageSize(filter: Filter): number {
  return clampLimit(filter.room?.timeline?.limit) + 1;
}

export class RoomSync {
  constructor(private readonly storage: Storage) {}

  /** Timeline and state of a room the user is joined to, or left within the window. */
  async core(ctx: RoomSyncContext, w: RoomWindow): Promise<RoomCore> {
    const rooms = this.storage.rooms;
    const tlFilter = ctx.filter.room?.timeline;
    const { events, limited, before } = roomAllowed(tlFilter, w.roomId)
      ? await this.timeline(ctx, w, clampLimit(tlFilter?.limit))
      : { events: [], limited: false, before: w.to };
    const timelineStart = events[0]?.streamOrdering ?? w.to + 1;

    let state: StateMap;
    let statePosition: number;
    if (ctx.stateAfterKey !== undefined) {
      statePosition = w.to;
      state = w.full ? await rooms.stateAt(w.roomId, w.to) : await rooms.stateDelta(w.roomId, w.since, w.to);
    } else {
      statePosition = timelineStart - 1;
      if (w.full) state = statePosition > 0 ? await rooms.stateAt(w.roomId, statePosition) : new Map();
      else state = await rooms.stateDelta(w.roomId, w.since, statePosition);
    }
    const stateEvents = await this.#filterState(ctx, w, state, events, statePosition);
    const membersChanged = [...events, ...stateEvents].some((e) => e.type === "m.room.member");
    return {
      timeline: {
        events: events.map((e) => toClientEvent(e, ctx.now, ctx.viewer)),
        limited,
        prev_batch: formatRoomToken(before),
      },
      stateKey: ctx.stateAfterKey ?? "state",
      state: stateEvents.map((e) => toClientEvent(e, ctx.now, ctx.viewer)),
      membersChanged,
    };
  }

  /**
   * The newest `limit` events of (from, to] that the user may see and the
   * filter accepts, oldest first; `limited` when at least one more exists.
   * When filters drop most events, the scan stops after a budget and reports
   * the timeline as limited; `before` is where pagination should resume.
   * Shared with sliding sync, which passes an empty filter.
   */
  async timeline(
    ctx: RoomSyncContext,
    w: RoomWindow,
    limit: number,
  ): Promise<{ events: StoredEvent[]; limited: boolean; before: number }> {
    const filter = ctx.filter.room?.timeline;
    const picked: StoredEvent[] = [];
    let cursor = w.to;
    let pageSize = limit + 1;
    let scanned = 0;
    let exhausted = false;
    while (picked.length <= limit && cursor > w.from) {
      if (scanned >= SCAN_BUDGET) {
        exhausted = true;
        break;
      }
      const page =
        cursor === w.to && w.firstPage !== undefined ? w.firstPage : await this.storage.rooms.eventsBetween(w.roomId, w.from, cursor, pageSize);
      if (page.events.length === 0) break;
      scanned += page.events.length;
      let candidates = page.events;
      if (page.events[0]!.streamOrdering <= w.visibleAfter) {
        candidates = await filterVisible(this.storage, ctx.viewer.userId, candidates, w.joinedAtEnd);
      }
      for (let i = candidates.length - 1; i >= 0 && picked.length <= limit; i--) {
        const event = candidates[i]!;
        if (matchesFilter(filter, event)) picked.push(event);
      }
      cursor = page.events[0]!.streamOrdering - 1;
      if (!page.limited) break;
      pageSize = SCAN_PAGE;
    }
    const events = picked.slice(0, limit).reverse();
    if (exhausted && picked.length <= limit) return { events, limited: true, before: cursor };
    return { events, limited: picked.length > limit, before: (events[0]?.streamOrdering ?? w.to + 1) - 1 };
  }

  /** Applies the state filter and lazy loading of members to a state map. */
  async #filterState(
    ctx: RoomSyncContext,
    w: RoomWindow,
    state: StateMap,
    timeline: StoredEvent[],
    position: number,
  ): Promise<StoredEvent[]> {
    const filter = ctx.filter.room?.state;
    if (!roomAllowed(filter, w.roomId)) return [];
    let events = [...state.values()].filter((e) => matchesFilter(filter, e)).sort((a, b) => a.streamOrdering - b.streamOrdering);
    const lazy = filter?.lazy_load_members === true && !ctx.fullState;
    if (!lazy || !matchesFilter(filter, { type: "m.room.member" })) return events;

    // Lazy loading: only the members the client needs to render the timeline, and itself.
    const wanted = new Set(timeline.map((e) => e.sender));
    wanted.add(ctx.viewer.userId);
    const inTimeline = new Set(timeline.map((e) => e.eventId));
    events = events.filter((e) => e.type !== "m.room.member" || wanted.has(e.stateKey ?? "") || inTimeline.has(e.eventId));
    if (w.full || position <= 0) return events;
    // A delta holds only changed members; add the unchanged ones the timeline needs.
    const present = new Set(events.filter((e) => e.type === "m.room.member").map((e) => e.stateKey));
    let historical: StateMap | undefined;
    for (const userId of wanted) {
      if (present.has(userId)) continue;
      let member = await this.storage.rooms.currentStateEvent(w.roomId, "m.room.member", userId);
      if (member && member.streamOrdering > position) {
        historical ??= await this.storage.rooms.stateAt(w.roomId, position);
        member = historical.get(stateKeyOf("m.room.member", userId));
      }
      if (member && !inTimeline.has(member.eventId)) events.push(member);
    }
    return events;
  }

  /** The preview an invitee (or knocker) gets: stripped room state, the inviter's member event and the invite (or knock) itself. */
  async inviteState(roomId: string, invite: StoredEvent, now: number, viewer: Viewer): Promise<Record<string, unknown>[]> {
    const out: Record<string, unknown>[] = [];
    // An invite from another server to a room not here carries the inviting server's stripped state; a knock, the resident server's.
    const unsigned = pduOf(invite).unsigned;
    const carried = unsigned?.invite_room_state ?? unsigned?.knock_room_state;
    if (Array.isArray(carried)) {
      for (const e of carried) {
        if (isStripped(e) && e.type !== "m.room.member") out.push({ type: e.type, state_key: e.state_key, sender: e.sender, content: e.content });
      }
      out.push({ ...toClientEvent(invite, now, viewer) });
      return out;
    }
    const state = await this.storage.rooms.stateAt(roomId, invite.streamOrdering);
    for (const type of INVITE_STATE_TYPES) {
      const event = state.get(stateKeyOf(type, ""));
      if (event) out.push(toStrippedState(event));
    }
    const inviter = state.get(stateKeyOf("m.room.member", invite.sender));
    if (inviter && inviter.eventId !== invite.eventId) out.push(toStrippedState(inviter));
    out.push({ ...toClientEvent(invite, now, viewer) });
    return out;
  }

  /**
   * Member counts and heroes (spec: "summary"), from the room's current membership
   * (`members`: every membership record of the room, when already read).
   */
  async summary(roomId: string, userId: string, members?: MembershipRecord[]): Promise<RoomSummary> {
    const all = members ?? (await this.storage.rooms.membershipsIn([roomId]));
    const withMembership = (m: string) => all.filter((r) => r.membership === m).sort((a, b) => (a.userId < b.userId ? -1 : 1));
    const joined = withMembership("join");
    const invited = withMembership("invite");
    const byAge = (records: { userId: string; streamOrdering: number }[]) =>
      records
        .filter((m) => m.userId !== userId)
        .sort((a, b) => a.streamOrdering - b.streamOrdering)
        .slice(0, 5)
        .map((m) => m.userId);
    let heroes = byAge([...joined, ...invited]);
    if (heroes.length === 0) heroes = byAge([...withMembership("leave"), ...withMembership("ban")]);
    return { "m.heroes": heroes, "m.joined_member_count": joined.length, "m.invited_member_count": invited.length };
  }

  /** The membership a member event replaced (from `unsigned.prev_content`), if any. */
  async previousMembership(eventId: string): Promise<string | undefined> {
    const event = await this.storage.rooms.getEvent(eventId);
    if (!event) return undefined;
    const prev = pduOf(event).unsigned?.prev_content as Record<string, unknown> | undefined;
    return typeof prev?.membership === "string" ? prev.membership : undefined;
  }
}

/** A stripped state event as the spec shapes it (from another server: checked before it is shown). */
function isStripped(e: unknown): e is { type: string; state_key: string; sender: string; content: Record<string, unknown> } {
  if (typeof e !== "object" || e === null) return false;
  const r = e as Record<string, unknown>;
  return typeof r.type === "string" && typeof r.state_key === "string" && typeof r.sender === "string" && typeof r.content === "object" && r.content !== null && !Array.isArray(r.content);
}
