/** Reading rooms: state, members, single events, `/messages` and `/context`. */
import { Errors } from "../../errors.js";
import type { Storage } from "../../storage/interfaces.js";
import { stateKeyOf, type StateMap, type StoredEvent } from "../../storage/rooms.js";
import type { Requester } from "../auth.js";
import type { Clock } from "../clock.js";
import { matchesFilter, type RoomEventFilter } from "../sync/filters.js";
import { formatRoomToken, parseEventPosition } from "../sync/tokens.js";
import { toClientEvent, type ClientEvent } from "./client_format.js";
import { parsePdu } from "./persister.js";
import { filterVisible } from "./visibility.js";

const MAX_PAGE = 1000;

/** How far into a room a user may read: all of it while joined, up to their leave after. */
interface Reach {
  upTo: number;
  joined: boolean;
}

export class RoomReadService {
  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
  ) {}

  async #reach(requester: Requester, roomId: string): Promise<Reach> {
    if (!(await this.storage.rooms.getRoom(roomId))) throw Errors.forbidden("You are not in this room");
    const m = await this.storage.rooms.membership(roomId, requester.userId);
    if (m?.membership === "join") return { upTo: Number.MAX_SAFE_INTEGER, joined: true };
    if (m && (m.membership === "leave" || m.membership === "ban")) return { upTo: m.streamOrdering, joined: false };
    const hv = await this.storage.rooms.currentStateEvent(roomId, "m.room.history_visibility", "");
    if (hv && parsePdu(hv).content.history_visibility === "world_readable") return { upTo: Number.MAX_SAFE_INTEGER, joined: false };
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
    return parsePdu(event).content;
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
        const membership = parsePdu(e).content.membership;
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
      const content = event ? parsePdu(event).content : {};
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

  /** `GET /messages`. Positions: a token means "everything at or before this event has been seen". */
  async messages(
    requester: Requester,
    roomId: string,
    opts: { from?: string; to?: string; dir: "b" | "f"; limit: number; filter?: RoomEventFilter },
  ) {
    const reach = await this.#reach(requester, roomId);
    const limit = Math.min(opts.filter?.limit ?? opts.limit, MAX_PAGE);
    const top = Math.min(await this.storage.rooms.maxStreamOrdering(), reach.upTo);
    let from = opts.from !== undefined ? parseEventPosition(opts.from) : opts.dir === "b" ? top : 0;
    from = Math.min(from, top);
    const to = opts.to !== undefined ? parseEventPosition(opts.to) : undefined;
    const chunk: StoredEvent[] = [];
    let cursor = from;
    let end: number | undefined;
    // Filtering can drop events, so keep reading pages until the limit is met or history ends.
    while (chunk.length < limit) {
      const page =
        opts.dir === "b"
          ? await this.storage.rooms.paginate(roomId, cursor + 1, "b", limit, to)
          : await this.storage.rooms.paginate(roomId, cursor, "f", limit, Math.min(to ?? top, top));
      if (page.length === 0) break;
      const ascending = opts.dir === "b" ? [...page].reverse() : page;
      const visible = await filterVisible(this.storage, requester.userId, ascending, reach.joined);
      const matching = visible.filter((e) => matchesFilter(opts.filter, e));
      const ordered = opts.dir === "b" ? matching.reverse() : matching;
      for (const e of ordered) {
        if (chunk.length === limit) break;
        chunk.push(e);
      }
      const last = chunk.length === limit ? chunk[chunk.length - 1]! : page[page.length - 1]!;
      cursor = opts.dir === "b" ? last.streamOrdering - 1 : last.streamOrdering;
      end = cursor;
      if (page.length < limit) break;
    }
    const out: { chunk: ClientEvent[]; start: string; end?: string; state?: ClientEvent[] } = {
      chunk: chunk.map((e) => this.#client(requester, e)),
      start: formatRoomToken(from),
    };
    if (end !== undefined && chunk.length > 0) out.end = formatRoomToken(end);
    if (opts.filter?.lazy_load_members && chunk.length > 0) {
      out.state = await this.#membersFor(requester, roomId, chunk);
    }
    return out;
  }

  /** The member events of the senders of `events`, for lazy-loading clients. */
  async #membersFor(requester: Requester, roomId: string, events: StoredEvent[]): Promise<ClientEvent[]> {
    const senders = new Set(events.map((e) => e.sender));
    const state = await this.storage.rooms.currentState(roomId);
    return [...senders]
      .map((s) => state.get(stateKeyOf("m.room.member", s)))
      .filter((e): e is StoredEvent => e !== undefined)
      .map((e) => this.#client(requester, e));
  }

  async context(requester: Requester, roomId: string, eventId: string, limit: number, filter?: RoomEventFilter) {
    const target = await this.storage.rooms.getEvent(eventId);
    if (!target || target.roomId !== roomId) throw Errors.notFound("Event not found");
    await this.event(requester, roomId, eventId);
    const half = Math.max(0, Math.floor(Math.min(limit, MAX_PAGE) / 2));
    const before = await this.messages(requester, roomId, {
      from: formatRoomToken(target.streamOrdering - 1),
      dir: "b",
      limit: half,
      filter,
    });
    const after = await this.messages(requester, roomId, {
      from: formatRoomToken(target.streamOrdering),
      dir: "f",
      limit: Math.min(limit, MAX_PAGE) - half,
      filter,
    });
    const reach = await this.#reach(requester, roomId);
    const stateAt = await this.storage.rooms.stateAt(roomId, Math.min(target.streamOrdering, reach.upTo));
    return {
      event: this.#client(requester, target),
      events_before: before.chunk,
      events_after: after.chunk,
      start: before.end ?? formatRoomToken(target.streamOrdering - 1),
      end: after.end ?? formatRoomToken(target.streamOrdering),
      state: [...stateAt.values()].filter((e) => matchesFilter(filter, e)).map((e) => this.#client(requester, e)),
    };
  }
}
