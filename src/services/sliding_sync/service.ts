/**
 * Simplified sliding sync (MSC4186), beside `/sync` v2 on the same storage, streams and
 * notifier. A response covers the streams up to positions read before anything else (as v2's);
 * the connection state saved at the request's position says what the client already has.
 *
 * Long-polling: a response is always computed at once (the request may have changed lists or
 * subscriptions); an incremental request with nothing to tell waits for a notification about
 * the user or any of their rooms, then computes again from the same position. A request without
 * `pos` never waits.
 */
import { performance } from "node:perf_hooks";
import type { Storage } from "../../storage/interfaces.js";
import type { MembershipRecord } from "../../storage/rooms.js";
import type { Requester } from "../auth.js";
import type { Clock } from "../clock.js";
import { membershipChangesByRoom } from "../sync/memberships.js";
import type { Notifier } from "../sync/notifier.js";
import { RoomSync } from "../sync/room_sync.js";
import { catchUp, currentSyncPosition, formatSyncToken, parseSyncToken, type SyncPosition } from "../sync/tokens.js";
import type { TypingService } from "../sync/typing.js";
import { ConnectionState } from "./connection.js";
import { Connections, type Opened } from "./connections.js";
import { buildExtensions } from "./extensions.js";
import { parseRequest, type RoomConfig, type SlidingSyncRequest } from "./request.js";
import { asksForMoreState, combineConfigs } from "./required_state.js";
import { buildRooms, type RoomPlan } from "./room_data.js";
import { computeLists, type RoomLists } from "./room_lists.js";
import { UserRoomsCache } from "./user_rooms.js";

export interface SlidingSyncParams {
  pos?: string;
  timeoutMs: number;
  /** Aborted when the client goes away or the server shuts down: the request then answers at once. */
  signal?: AbortSignal;
  /**
   * Aborted when nobody will read the answer (the client closed the connection). The connection
   * state is then not saved: the client may already have sent the same `pos` again and been
   * answered, and saving would drop the position that answer named (M_UNKNOWN_POS on its next
   * request). A server shutting down still answers, so it does not abort this.
   */
  abandoned?: AbortSignal;
}

interface Built {
  response: Record<string, unknown>;
  state: ConnectionState;
  /** Nothing to tell the client: an incremental request may wait. */
  empty: boolean;
  rooms: readonly string[];
}

/**
 * What this process must have caught up with before answering: the request's position and the
 * sticky-events extension's `since` (an events position from an earlier response, which a
 * request without `pos` may carry too). Only a `since` still ahead after that is refused.
 */
function withStickySince(since: SyncPosition | undefined, sticky: number | undefined): SyncPosition | undefined {
  if (sticky === undefined || sticky <= (since?.events ?? 0)) return since;
  return { ...(since ?? { accountData: 0, receipts: 0, typing: 0, toDevice: 0, deviceLists: 0 }), events: sticky };
}

export class SlidingSyncService {
  readonly #connections: Connections;
  readonly #roomSync: RoomSync;
  /** Kept between requests, so that a wake-up reads what changed rather than all the user's rooms. */
  readonly #userRooms: UserRoomsCache;

  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly notifier: Notifier,
    private readonly typing: TypingService,
    private readonly pushRules: (userId: string) => Promise<unknown>,
  ) {
    this.#connections = new Connections(storage, clock);
    this.#roomSync = new RoomSync(storage);
    this.#userRooms = new UserRoomsCache(storage, clock);
  }

  async sync(requester: Requester, body: unknown, params: SlidingSyncParams): Promise<Record<string, unknown>> {
    const req = parseRequest(body);
    const opened = await this.#connections.open({ userId: requester.userId, deviceId: requester.deviceId, connId: req.connId }, params.pos);
    const started = performance.now();
    const caughtUpTo = withStickySince(opened.since, req.extensions.sticky?.since);
    if (caughtUpTo) await catchUp(this.storage.streams, caughtUpTo, params.timeoutMs, params.signal);
    for (;;) {
      const version = this.notifier.version();
      const built = await this.#build(requester, req, opened);
      const remaining = params.timeoutMs - (performance.now() - started);
      if (!opened.since || !built.empty || remaining <= 0 || params.signal?.aborted) return this.#finish(opened, built, params.abandoned);
      const woken = await this.notifier.wait({ userId: requester.userId, roomIds: built.rooms }, version, remaining, params.signal);
      if (!woken) return this.#finish(opened, built, params.abandoned);
    }
  }

  async #finish(opened: Opened, built: Built, abandoned: AbortSignal | undefined): Promise<Record<string, unknown>> {
    // Nobody reads this answer: the saved state stays as the client's latest request left it.
    if (abandoned?.aborted) return built.response;
    const position = await this.#connections.commit(opened, built.state);
    return { ...built.response, pos: `${position}/${built.response.pos as string}` };
  }

  async #build(requester: Requester, req: SlidingSyncRequest, opened: Opened): Promise<Built> {
    const s = this.storage;
    const userId = requester.userId;
    const upTo: SyncPosition = currentSyncPosition(s.streams, this.typing.position());
    // Every attempt starts from the state saved at the request's position.
    const state = opened.saved.copy();
    const since = opened.since;
    const lists = await computeLists(s, userId, req.lists, upTo, since?.events, (u, p) => this.#userRooms.at(u, p));

    const configs = new Map<string, RoomConfig[]>();
    const addConfig = (roomId: string, c: RoomConfig) => configs.set(roomId, [...(configs.get(roomId) ?? []), c]);
    const listRooms = new Map<string, string[]>();
    const listsOut: Record<string, unknown> = {};
    for (const [name, list] of req.lists) {
      const result = lists.lists.get(name)!;
      const inRange = new Set<string>();
      for (const r of result.ranges) r.roomIds.forEach((id) => inRange.add(id));
      inRange.forEach((id) => addConfig(id, list));
      listRooms.set(name, [...inRange]);
      listsOut[name] = { count: result.count, ops: result.ranges.map((r) => ({ op: "SYNC", range: r.range, room_ids: r.roomIds })) };
    }
    // Subscriptions apply to rooms the user has a membership in; others are skipped, as Synapse does.
    const subscribed = [...req.subscriptions.keys()].filter((id) => lists.memberships.has(id));
    for (const id of subscribed) addConfig(id, req.subscriptions.get(id)!);

    const plans = await this.#plans(userId, lists, configs, state, since, upTo);
    const outcomes = await buildRooms(
      {
        storage: s,
        roomSync: this.#roomSync,
        requester,
        now: this.clock.now(),
        upTo: upTo.events,
        bumpStamps: lists.bumpStamps,
        dmRooms: lists.dmRooms,
        lazySent: (roomId) => state.lazyMembersSent(roomId),
      },
      plans,
    );

    const rooms: Record<string, unknown> = {};
    const timelines = new Map<string, string[]>();
    for (const plan of plans) {
      const outcome = outcomes.get(plan.roomId);
      if (!outcome) continue;
      if (outcome.result) rooms[plan.roomId] = outcome.result;
      timelines.set(plan.roomId, outcome.timelineEventIds);
      state.addLazyMembers(plan.roomId, outcome.lazyMembers, plan.initial);
    }
    const roomSince = new Map<string, SyncPosition>();
    for (const id of configs.keys()) {
      const status = state.status(id);
      if (status.kind === "previously") roomSince.set(id, parseSyncToken(status.token));
    }
    const joined = lists.joined;
    const ext = await buildExtensions(
      {
        storage: s,
        typing: this.typing,
        pushRules: this.pushRules,
        requester,
        now: this.clock.now(),
        since,
        upTo,
        listRooms,
        subscribed,
        joined,
        interested: subscribed.length === 0 ? [...lists.matchingAnyList] : [...new Set([...lists.matchingAnyList, ...subscribed])],
        initialRooms: new Set(plans.filter((p) => p.initial).map((p) => p.roomId)),
        roomSince,
        timelines,
      },
      req.extensions,
    );

    // What the client now has: rooms in range are up to date; live rooms out of every range miss what comes next.
    const countsChanged = [...req.lists.keys()].some((name) => state.count(name) !== lists.lists.get(name)!.count);
    for (const [roomId, c] of configs) state.markLive(roomId, combineConfigs(c));
    if (since) for (const roomId of state.liveRooms()) if (!configs.has(roomId)) state.markMissed(roomId, formatSyncToken(since));
    for (const roomId of state.rooms()) if (!lists.memberships.has(roomId)) state.forget(roomId);
    state.setCounts(new Map([...lists.lists].map(([name, l]) => [name, l.count])));

    return {
      response: { pos: formatSyncToken(upTo), lists: listsOut, rooms, extensions: ext.extensions },
      state,
      empty: Object.keys(rooms).length === 0 && !ext.hasNews && !countsChanged,
      rooms: lists.roomIds,
    };
  }

  /** Which rooms of the response to compute, and from where. */
  async #plans(
    userId: string,
    lists: RoomLists,
    configs: Map<string, RoomConfig[]>,
    state: ConnectionState,
    since: SyncPosition | undefined,
    upTo: SyncPosition,
  ): Promise<RoomPlan[]> {
    const changes = since ? await membershipChangesByRoom(this.storage, userId, since.events, upTo.events) : new Map<string, MembershipRecord[]>();
    const live = [...configs.keys()].filter((id) => state.status(id).kind === "live");
    const withEvents = since ? new Set(await this.storage.rooms.roomsWithEventsBetween(live, since.events, upTo.events)) : new Set<string>();
    const plans: RoomPlan[] = [];
    for (const [roomId, list] of configs) {
      const m = lists.memberships.get(roomId)!;
      const config = combineConfigs(list);
      const status = state.status(roomId);
      const base = { roomId, membership: m, config, liveAfter: since?.events, expandedTimeline: false };
      if (m.membership === "invite" || m.membership === "knock") {
        if (!since || status.kind !== "live" || changes.has(roomId)) plans.push({ ...base, initial: true, timelineFrom: 0, stateFrom: 0 });
        continue;
      }
      const initial = !since || status.kind === "never" || (m.membership === "join" && (await this.#rejoined(changes.get(roomId))));
      const from = initial ? 0 : status.kind === "previously" ? parseSyncToken(status.token).events : since!.events;
      const previous = state.config(roomId);
      const expanded = !initial && previous !== undefined && config.timelineLimit > previous.timelineLimit;
      const more = !initial && previous !== undefined && asksForMoreState(previous, config);
      const news = m.membership === "join" ? withEvents.has(roomId) || status.kind === "previously" : m.streamOrdering > from;
      if (!initial && !expanded && !more && !news) continue;
      plans.push({ ...base, initial, timelineFrom: expanded ? 0 : from, stateFrom: from, expandedTimeline: expanded, newlyCovered: more ? previous : undefined });
    }
    return plans;
  }

  /** Whether the user's membership changes in the window took them out of the room and back (or in for the first time). */
  async #rejoined(changes: MembershipRecord[] | undefined): Promise<boolean> {
    if (!changes) return false;
    if (changes.some((c) => c.membership !== "join")) return true;
    return (await this.#roomSync.previousMembership(changes[0]!.eventId)) !== "join";
  }
}
