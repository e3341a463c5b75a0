/** Reading rooms: state, members, single events, `/messages` and `/context`. */
import { Errors } from "../../errors.js";
import type { Storage } from "../../storage/interfaces.js";
import { HISTORY_FLOOR, stateKeyOf, type StateMap, type StoredEvent } from "../../storage/rooms.js";
import type { Requester } from "../auth.js";
import type { Clock } from "../clock.js";
import { matchesFilter, type RoomEventFilter } from "../sync/filters.js";
import { formatRoomToken, parseEventPosition } from "../sync/tokens.js";
import { toClientEvent, type ClientEvent } from "./client_format.js";
import { pduOf } from "../../events/index.js";
import { filterVisible } from "./visibility.js";

const MAX_PAGE = 1000;

/** How far into a room a user may read: all of it while joined, up to their leave after. */
interface Reach {
  upTo: number;
  /** Whether the user is, or was before `upTo`, joined: what unlocks "shared" history. */
  joined: boolean;
}

/** A room's earlier history, fetched from other servers in it (federation). */
export interface RemoteHistory {
  /** Stores up to about `limit` events from before the room's earliest one here; answers how many. */
  backfill(roomId: string, limit: number): Promise<number>;
}

export class RoomReadService {
  #history: RemoteHistory | undefined;

  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
  ) {}

  /** Federation hands in how to fetch a room's earlier history from other servers. */
  useRemoteHistory(history: RemoteHistory): void {
    this.#history = history;
  }

  async #reach(requester: Requester, roomId: string): Promise<Reach> {
    if (!(await this.storage.rooms.getRoom(roomId))) throw Errors.forbidden("You are not in this room");
    const m = await this.storage.rooms.membership(roomId, requester.userId);
    if (m?.membership === "join") return { upTo: Number.MAX_SAFE_INTEGER, joined: true };
    if (m && (m.membership === "leave" || m.membership === "ban")) {
      // Forgetting a room gives up what was left of its history, as in Synapse.
      if (await this.storage.rooms.isForgotten(requester.userId, roomId)) throw Errors.forbidden("You have forgotten this room");
      // "shared" history is for users who joined at any point after the event (spec: "History
      // visibility"): a user who joined and then left keeps what came before their last join.
      const joined = await this.storage.rooms.everJoined(requester.userId, roomId, m.streamOrdering);
      return { upTo: m.streamOrdering, joined };
    }
    const hv = await this.storage.rooms.currentStateEvent(roomId, "m.room.history_visibility", "");
    if (hv && pduOf(hv).content.history_visibility === "world_readable") return { upTo: Number.MAX_SAFE_INTEGER, joined: false };
    throw Errors.forbidden("You are not in this room");
  }

  async #stateFor(roomId: string, reach: Reach): Promise<StateMap> {
    return reach.upTo === Number.MAX_SAFE_INTEGER
      ? this.storage.rooms.currentState(roomId)
      : this.storage.rooms.stateAt(roomId, reach.upTo);
  }

  #client(requester: Requester, e: StoredEvent): ClientEvent {
    return toClientEvent(e, this.clock.now(), requester);
  }

  async joinedRooms(requester: Requester): Promise<string[]> {
    return (await this.storage.rooms.membershipsOf(requester.userId)).filter((m) => m.membership === "join").map((m) => m.roomId);
  }

  async stateContent(requester: Requester, roomId: string, type: string, stateKey: string): Promise<Record<string, unknown>> {
    const state = await this.#stateFor(roomId, await this.#reach(requester, roomId));
    const event = state.get(stateKeyOf(type, stateKey));
    if (!event) throw Errors.notFound("Event not found");
    return pduOf(event).content;
  }

  async state(requester: Requester, roomId: string): Promise<ClientEvent[]> {
    const state = await this.#stateFor(roomId, await this.#reach(requester, roomId));
    return [...state.values()].map((e) => this.#client(requester, e));
  }

  async members(
    requester: Requester,
    roomId: string,
    opts: { at?: string; membership?: string; notMembership?: string },
  ): Promise<ClientEvent[]> {
    const reach = await this.#reach(requester, roomId);
    const at = opts.at !== undefined ? Math.min(parseEventPosition(opts.at), reach.upTo) : reach.upTo;
    const state = at === Number.MAX_SAFE_INTEGER ? await this.storage.rooms.currentState(roomId) : await this.storage.rooms.stateAt(roomId, at);
    return [...state.values()]
      .filter((e) => e.type === "m.room.member")
      .filter((e) => {
        const membership = pduOf(e).content.membership;
        if (opts.membership !== undefined && membership !== opts.membership) return false;
        return opts.notMembership === undefined || membership !== opts.notMembership;
      })
      .map((e) => this.#client(requester, e));
  }

  async joinedMembers(requester: Requester, roomId: string) {
    const m = await this.storage.rooms.membership(roomId, requester.userId);
    if (m?.membership !== "join") throw Errors.forbidden("You are not in this room");
    const joined: Record<string, { display_name?: string; avatar_url?: string }> = {};
    for (const member of await this.storage.rooms.membersOf(roomId, "join")) {
      const event = await this.storage.rooms.getEvent(member.eventId);
      const content = event ? pduOf(event).content : {};
      joined[member.userId] = {
        ...(typeof content.displayname === "string" ? { display_name: content.displayname } : {}),
        ...(typeof content.avatar_url === "string" ? { avatar_url: content.avatar_url } : {}),
      };
    }
    return { joined };
  }

  async event(requester: Requester, roomId: string, eventId: string): Promise<ClientEvent> {
    const event = await this.storage.rooms.getEvent(eventId);
    const notFound = () => Errors.notFound("Event not found");
    if (!event || event.roomId !== roomId) throw notFound();
    const reach = await this.#reach(requester, roomId).catch(() => {
      throw notFound();
    });
    if (event.streamOrdering > reach.upTo) throw notFound();
    const visible = await filterVisible(this.storage, requester.userId, [event], reach.joined);
    if (visible.length === 0) throw notFound();
    return this.#client(requester, event);
  }

  /**
   * One page of a room's history, as `GET /messages` reads it. A position `p` is the gap
   * just after the event with stream ordering `p`: going back from it reads events `<= p`,
   * going forward events `> p`. `next` is the gap after the last event looked at, so that
   * the next page starts exactly where this one stopped, and `exhausted` says that no
   * event is left in that direction (within `to` and what the user may see).
   */
  async #page(
    requester: Requester,
    roomId: string,
    reach: Reach,
    opts: { from?: number; to?: number; dir: "b" | "f"; limit: number; filter?: RoomEventFilter },
  ): Promise<{ chunk: StoredEvent[]; from: number; next: number; exhausted: boolean }> {
    const limit = Math.max(0, Math.min(opts.limit, MAX_PAGE));
    const top = Math.min(this.storage.streams.current("events"), reach.upTo);
    const from = Math.max(HISTORY_FLOOR, Math.min(opts.from ?? (opts.dir === "b" ? top : HISTORY_FLOOR), top));
    const read = (cursor: number, n: number) =>
      opts.dir === "b"
        ? this.storage.rooms.paginate(roomId, cursor + 1, "b", n, opts.to)
        : this.storage.rooms.paginate(roomId, cursor, "f", n, Math.min(opts.to ?? top, top));
    const chunk: StoredEvent[] = [];
    let cursor = from;
    let exhausted = false;
    // Visibility and the filter can drop events, so keep reading until the page is full or history ends.
    while (chunk.length < limit && !exhausted) {
      const batchSize = Math.max(limit, 10);
      const batch = await read(cursor, batchSize);
      const ascending = opts.dir === "b" ? [...batch].reverse() : batch;
      const visible = new Set((await filterVisible(this.storage, requester.userId, ascending, reach.joined)).map((e) => e.eventId));
      let consumed = 0;
      for (const e of batch) {
        if (chunk.length === limit) break;
        consumed++;
        cursor = opts.dir === "b" ? e.streamOrdering - 1 : e.streamOrdering;
        if (visible.has(e.eventId) && matchesFilter(opts.filter, e)) chunk.push(e);
      }
      if (batch.length < batchSize && consumed === batch.length) exhausted = true;
    }
    if (!exhausted) exhausted = (await read(cursor, 1)).length === 0;
    return { chunk, from, next: cursor, exhausted };
  }

  /**
   * `GET /messages`. `end` is left out when no event is left in that direction, as the
   * spec asks, so a client knows it has reached the start (or the end) of what it may see.
   */
  async messages(
    requester: Requester,
    roomId: string,
    opts: { from?: string; to?: string; dir: "b" | "f"; limit: number; filter?: RoomEventFilter },
  ) {
    const from = opts.from !== undefined ? parseEventPosition(opts.from) : undefined;
    const to = opts.to !== undefined ? parseEventPosition(opts.to) : undefined;
    const reach = await this.#reach(requester, roomId);
    const limit = opts.filter?.limit ?? opts.limit;
    const pageOpts = { from, to, dir: opts.dir, limit, filter: opts.filter };
    let page = await this.#page(requester, roomId, reach, pageOpts);
    // Going back past the start of what this server has of a federated room: ask the room's
    // other servers for what came before, then read the page again.
    if (opts.dir === "b" && to === undefined && page.chunk.length < limit && this.#history && (await this.#history.backfill(roomId, limit - page.chunk.length)) > 0) {
      page = await this.#page(requester, roomId, reach, pageOpts);
    }
    const out: { chunk: ClientEvent[]; start: string; end?: string; state?: ClientEvent[] } = {
      chunk: page.chunk.map((e) => this.#client(requester, e)),
      start: formatRoomToken(page.from),
    };
    if (!page.exhausted) out.end = formatRoomToken(page.next);
    if (opts.filter?.lazy_load_members) out.state = await this.#membersFor(requester, roomId, page.chunk);
    return out;
  }

  /**
   * The member events of the senders of `events`, for lazy-loading clients: as of the
   * newest of them, so that every sender has joined by then.
   */
  async #membersFor(requester: Requester, roomId: string, events: StoredEvent[]): Promise<ClientEvent[]> {
    if (events.length === 0) return [];
    const newest = Math.max(...events.map((e) => e.streamOrdering));
    const state = await this.storage.rooms.stateAt(roomId, newest);
    const senders = new Set(events.map((e) => e.sender));
    return [...senders]
      .map((s) => state.get(stateKeyOf("m.room.member", s)))
      .filter((e): e is StoredEvent => e !== undefined)
      .map((e) => this.#client(requester, e));
  }

  /** `GET /context/{eventId}`: `limit` events around it, half before and half after. */
  async context(requester: Requester, roomId: string, eventId: string, limit: number, filter?: RoomEventFilter) {
    const target = await this.storage.rooms.getEvent(eventId);
    if (!target || target.roomId !== roomId) throw Errors.notFound("Event not found");
    await this.event(requester, roomId, eventId);
    const reach = await this.#reach(requester, roomId);
    const total = Math.min(filter?.limit ?? limit, MAX_PAGE);
    const half = Math.floor(total / 2);
    const before = await this.#page(requester, roomId, reach, { from: target.streamOrdering - 1, dir: "b", limit: half, filter });
    const after = await this.#page(requester, roomId, reach, { from: target.streamOrdering, dir: "f", limit: total - half, filter });
    // "The state of the room at the last event returned."
    const last = after.chunk.at(-1) ?? target;
    const stateAt = await this.storage.rooms.stateAt(roomId, Math.min(last.streamOrdering, reach.upTo));
    let state = [...stateAt.values()].filter((e) => e.type !== "m.room.member" && matchesFilter(filter, e));
    const returned = [...before.chunk, target, ...after.chunk];
    if (filter?.lazy_load_members) {
      const senders = new Set(returned.map((e) => e.sender));
      state = state.concat([...stateAt.values()].filter((e) => e.type === "m.room.member" && senders.has(e.stateKey ?? "")));
    } else {
      state = state.concat([...stateAt.values()].filter((e) => e.type === "m.room.member" && matchesFilter(filter, e)));
    }
    return {
      event: this.#client(requester, target),
      events_before: before.chunk.map((e) => this.#client(requester, e)),
      events_after: after.chunk.map((e) => this.#client(requester, e)),
      start: formatRoomToken(before.next),
      end: formatRoomToken(after.next),
      state: state.map((e) => this.#client(requester, e)),
    };
  }
}
