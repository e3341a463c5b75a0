/**
 * `GET /sync` (spec: "Syncing"). Each response covers the streams from the
 * client's `since` token up to positions read BEFORE anything else, so an
 * event committed while a response is being built is left for the next one
 * rather than lost or sent twice.
 *
 * Long-polling never polls the database: the notifier's version is read
 * before the positions, and when there is nothing to send the request waits
 * for a notification after that version, then builds the response again.
 */
import { performance } from "node:perf_hooks";
import type { Storage } from "../../storage/interfaces.js";
import type { MembershipRecord } from "../../storage/rooms.js";
import type { AccountDataChange } from "../../storage/user_data.js";
import type { Requester } from "../auth.js";
import type { Clock } from "../clock.js";
import { toClientEvent } from "../rooms/client_format.js";
import { receiptEvents, typingEvent, type EphemeralEvent } from "./ephemeral.js";
import { addNotificationCounts } from "./notification_counts.js";
import type { FilterService } from "./filter_service.js";
import { matchesFilter, roomAllowed, type Filter } from "./filters.js";
import type { Notifier } from "./notifier.js";
import { RoomSync, type RoomCore, type RoomSyncContext } from "./room_sync.js";
import { catchUp, currentSyncPosition, formatRoomToken, formatSyncToken, nothingAfter, parseSyncToken, type SyncPosition } from "./tokens.js";
import type { TypingService } from "./typing.js";
import { deviceSections, type DeviceSections } from "./device_sections.js";
import { membershipChangesByRoom, membershipsAt } from "./memberships.js";
import { prefetchRooms } from "./prefetch.js";
import { STICKY_SECTION, stickyEvents } from "./sticky.js";

/** Which MSC4222 form the client asked for: the unstable one matrix-js-sdk sends, or the stable one of spec v1.16. */
export type StateAfterMode = "none" | "unstable" | "stable";
const STATE_AFTER_KEYS: Record<Exclude<StateAfterMode, "none">, string> = {
  unstable: "org.matrix.msc4222.state_after",
  stable: "state_after",
};

export interface SyncParams {
  since?: string;
  timeoutMs: number;
  fullState: boolean;
  /** A filter ID or an inline JSON filter. */
  filter?: string;
  stateAfter: StateAfterMode;
  /** Aborted when the client goes away or the server shuts down: the request then answers at once. */
  signal?: AbortSignal;
}

interface AccountDataEvent {
  type: string;
  content: Record<string, unknown>;
}

type RoomEntry = Record<string, unknown>;

/** The per-device sections (to-device, device lists, one-time key counts) are in every response. */
export interface SyncResponse extends Partial<DeviceSections> {
  next_batch: string;
  account_data: { events: AccountDataEvent[] };
  presence: { events: never[] };
  rooms: {
    join: Record<string, RoomEntry>;
    invite: Record<string, RoomEntry>;
    leave: Record<string, RoomEntry>;
    knock: Record<string, RoomEntry>;
  };
}

interface Built {
  response: SyncResponse;
  /** Nothing to tell the client: an incremental sync may wait. */
  empty: boolean;
  /** The rooms whose activity should wake this request. */
  rooms: string[];
}

/** What one response is computed over; shared by the section builders. */
interface Pass {
  ctx: RoomSyncContext;
  userId: string;
  since?: SyncPosition;
  upTo: SyncPosition;
  /** Membership changes of the user in (since, upTo], per room, oldest first. */
  changes: Map<string, MembershipRecord[]>;
  roomAccountData: Map<string, AccountDataEvent[]>;
}

function splitAccountData(changes: AccountDataChange[], filter: Filter) {
  const global: AccountDataEvent[] = [];
  const byRoom = new Map<string, AccountDataEvent[]>();
  const roomFilter = filter.room?.account_data;
  for (const c of changes) {
    const event = { type: c.type, content: c.content };
    if (c.roomId === null) {
      if (matchesFilter(filter.account_data, event)) global.push(event);
    } else if (roomAllowed(roomFilter, c.roomId) && matchesFilter(roomFilter, event)) {
      const list = byRoom.get(c.roomId) ?? [];
      list.push(event);
      byRoom.set(c.roomId, list);
    }
  }
  return { global, byRoom };
}

export class SyncService {
  readonly #rooms: RoomSync;

  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly notifier: Notifier,
    private readonly typing: TypingService,
    private readonly filters: FilterService,
  ) {
    this.#rooms = new RoomSync(storage);
  }

  async sync(requester: Requester, params: SyncParams): Promise<SyncResponse> {
    const filter = await this.filters.forSync(requester.userId, params.filter);
    const since = params.since !== undefined ? parseSyncToken(params.since) : undefined;
    const started = performance.now();
    // A token from another process on the database may be ahead of this one by a notification
    // still on its way: answering from behind it would send again what the client has.
    if (since) await catchUp(this.storage.streams, since, params.timeoutMs, params.signal);
    for (;;) {
      const version = this.notifier.version();
      // Nothing committed past the client's token (the usual case for a client that is caught
      // up): wait at once, as Synapse does, instead of building a response known to be empty.
      // Only the joined rooms are read, to know which rooms' activity wakes the request.
      if (since && !params.fullState && nothingAfter(since, currentSyncPosition(this.storage.streams, this.typing.position()))) {
        const remaining = params.timeoutMs - (performance.now() - started);
        if (remaining > 0 && !params.signal?.aborted) {
          const rooms = (await this.storage.rooms.membershipsOf(requester.userId))
            .filter((m) => m.membership === "join" && roomAllowed(filter.room, m.roomId))
            .map((m) => m.roomId);
          if (await this.notifier.wait({ userId: requester.userId, roomIds: rooms }, version, remaining, params.signal)) continue;
        }
      }
      const built = await this.#build(requester, filter, since, params);
      // Initial and full-state syncs answer at once, as Synapse's do.
      if (!since || params.fullState || !built.empty) return built.response;
      const remaining = params.timeoutMs - (performance.now() - started);
      if (remaining <= 0 || params.signal?.aborted) return built.response;
      const woken = await this.notifier.wait({ userId: requester.userId, roomIds: built.rooms }, version, remaining, params.signal);
      if (!woken) return built.response;
    }
  }

  async #build(requester: Requester, filter: Filter, since: SyncPosition | undefined, params: SyncParams): Promise<Built> {
    const s = this.storage;
    const userId = requester.userId;
    // The positions first: everything at or below them is committed and is what this response covers.
    const upTo: SyncPosition = currentSyncPosition(s.streams, this.typing.position());
    const memberships = (await membershipsAt(s, userId, upTo.events)).filter((m) => roomAllowed(filter.room, m.roomId));
    const changes = since ? await membershipChangesByRoom(s, userId, since.events, upTo.events) : new Map<string, MembershipRecord[]>();
    const accountData = splitAccountData(await s.accountData.changes(userId, since?.accountData ?? 0, upTo.accountData), filter);
    const pass: Pass = {
      ctx: {
        viewer: requester,
        now: this.clock.now(),
        filter,
        fullState: params.fullState,
        stateAfterKey: params.stateAfter === "none" ? undefined : STATE_AFTER_KEYS[params.stateAfter],
      },
      userId,
      since,
      upTo,
      changes,
      roomAccountData: accountData.byRoom,
    };
    const joined = memberships.filter((m) => m.membership === "join");
    const join = await this.#joined(pass, joined);
    const invite = await this.#invited(pass, memberships.filter((m) => m.membership === "invite"));
    const knock = await this.#invited(pass, memberships.filter((m) => m.membership === "knock"), "knock_state");
    const leave = await this.#left(pass, memberships.filter((m) => m.membership === "leave" || m.membership === "ban"));
    const device = await deviceSections(s, requester, joined.map((m) => m.roomId), {
      toDeviceFrom: since?.toDevice ?? 0,
      toDeviceTo: upTo.toDevice,
      deviceListsFrom: since?.deviceLists,
      deviceListsTo: upTo.deviceLists,
      eventsFrom: since?.events,
      eventsTo: upTo.events,
    });
    // More to-device messages than one response carries: the next token resumes after the last one sent.
    upTo.toDevice = device.toDevicePosition;
    const response: SyncResponse = {
      next_batch: formatSyncToken(upTo),
      account_data: { events: accountData.global },
      presence: { events: [] },
      rooms: { join, invite, leave, knock },
      ...device.sections,
    };
    const empty =
      !device.hasNews &&
      accountData.global.length === 0 &&
      [join, invite, leave, knock].every((section) => Object.keys(section).length === 0);
    return { response, empty, rooms: joined.map((m) => m.roomId) };
  }

  /** Whether the client already knows this joined room from an earlier sync (joined then and throughout). */
  async #continuouslyJoined(pass: Pass, roomId: string): Promise<boolean> {
    if (!pass.since) return false;
    const changes = pass.changes.get(roomId);
    if (!changes) return true;
    if (changes.some((c) => c.membership !== "join")) return false;
    return (await this.#rooms.previousMembership(changes[0]!.eventId)) === "join";
  }

  async #joined(pass: Pass, joined: MembershipRecord[]): Promise<Record<string, RoomEntry>> {
    const { ctx, since, upTo, userId } = pass;
    const s = this.storage;
    const known: MembershipRecord[] = [];
    const fresh: MembershipRecord[] = [];
    for (const m of joined) ((await this.#continuouslyJoined(pass, m.roomId)) ? known : fresh).push(m);
    const knownIds = known.map((m) => m.roomId);
    const freshIds = fresh.map((m) => m.roomId);

    // Known rooms need an entry only when something happened in them.
    const active =
      since && !ctx.fullState ? new Set(await s.rooms.roomsWithEventsBetween(knownIds, since.events, upTo.events)) : undefined;
    const receipts = receiptEvents(
      [
        ...(since ? await s.receipts.changes(knownIds, since.receipts, upTo.receipts) : []),
        ...(await s.receipts.changes(freshIds, 0, upTo.receipts)),
      ],
      userId,
    );
    // A room's account data set before the user joined went out in no section: send all of it now.
    let freshAccountData = pass.roomAccountData;
    if (since && fresh.length > 0) {
      freshAccountData = splitAccountData(await s.accountData.changes(userId, 0, upTo.accountData), ctx.filter).byRoom;
    }
    const sinceTyping = since && since.typing <= upTo.typing ? since.typing : 0;
    const read = knownIds.filter((id) => !active || active.has(id));
    const prefetched = await prefetchRooms(
      s,
      ctx,
      [
        { roomIds: freshIds, from: 0 },
        { roomIds: read, from: since?.events ?? 0 },
      ],
      upTo.events,
      freshIds,
    );

    const out: Record<string, RoomEntry> = {};
    const entries = [...fresh.map((m) => ({ m, isFresh: true })), ...known.map((m) => ({ m, isFresh: false }))];
    for (const { m, isFresh } of entries) {
      const roomId = m.roomId;
      const ephemeral = this.#ephemeral(ctx.filter, roomId, receipts.get(roomId), isFresh, sinceTyping);
      const accountData = (isFresh ? freshAccountData : pass.roomAccountData).get(roomId) ?? [];
      if (active && !isFresh && !active.has(roomId) && ephemeral.length === 0 && accountData.length === 0) continue;
      const pre = prefetched.get(roomId);
      const core = await this.#rooms.core(ctx, {
        firstPage: pre?.firstPage,
        roomId,
        from: isFresh ? 0 : since!.events,
        to: upTo.events,
        full: isFresh || ctx.fullState,
        since: since?.events ?? 0,
        visibleAfter: m.streamOrdering,
        joinedAtEnd: true,
      });
      const window = { from: isFresh ? 0 : since!.events, to: upTo.events };
      const live = pre?.sticky ?? (await this.storage.rooms.liveStickyEvents(roomId, window.from, window.to, ctx.now));
      const sticky = stickyEvents(live, window, core.timeline.events, ctx.now, ctx.viewer);
      const quiet =
        sticky.length === 0 &&
        core.timeline.events.length === 0 &&
        !core.timeline.limited &&
        core.state.length === 0 &&
        ephemeral.length === 0 &&
        accountData.length === 0;
      if (quiet && !isFresh && !ctx.fullState) continue;
      out[roomId] = {
        ...this.#coreEntry(core),
        ephemeral: { events: ephemeral },
        account_data: { events: accountData },
        unread_notifications: { notification_count: 0, highlight_count: 0 },
        summary: isFresh || core.membersChanged ? await this.#rooms.summary(roomId, userId, pre?.members) : {},
        ...(sticky.length > 0 ? { [STICKY_SECTION]: { events: sticky } } : {}),
      };
    }
    await addNotificationCounts(this.storage.pushActions, out, userId, upTo.events, ctx.filter.room?.timeline?.unread_thread_notifications === true);
    return out;
  }

  #coreEntry(core: RoomCore): RoomEntry {
    return { timeline: core.timeline, [core.stateKey]: { events: core.state } };
  }

  #ephemeral(
    filter: Filter,
    roomId: string,
    receipt: EphemeralEvent | undefined,
    isFresh: boolean,
    sinceTyping: number,
  ): EphemeralEvent[] {
    const f = filter.room?.ephemeral;
    if (!roomAllowed(f, roomId)) return [];
    const out: EphemeralEvent[] = [];
    const typing = this.typing.snapshot(roomId);
    // A room new to the client gets the typing state only if someone types; a known one every change (even to nobody).
    if (isFresh ? typing.userIds.length > 0 : typing.serial > sinceTyping) out.push(typingEvent(typing));
    if (receipt) out.push(receipt);
    return out.filter((e) => matchesFilter(f, { type: e.type }));
  }

  /** Invites, or knocks (`knock_state`): the same stripped preview, under the section's key. */
  async #invited(pass: Pass, invited: MembershipRecord[], key: "invite_state" | "knock_state" = "invite_state"): Promise<Record<string, RoomEntry>> {
    const out: Record<string, RoomEntry> = {};
    for (const m of invited) {
      // Incremental syncs report an invite (or knock) once, in the response covering it.
      if (pass.since && !pass.changes.has(m.roomId)) continue;
      const invite = await this.storage.rooms.getEvent(m.eventId);
      if (!invite) continue;
      out[m.roomId] = { [key]: { events: await this.#rooms.inviteState(m.roomId, invite, pass.ctx.now, pass.ctx.viewer) } };
    }
    return out;
  }

  /**
   * Rooms the user left or was kicked or banned from: in an incremental sync
   * those where that happened in the range; otherwise only with `include_leave`.
   */
  async #left(pass: Pass, left: MembershipRecord[]): Promise<Record<string, RoomEntry>> {
    const { ctx, since, userId } = pass;
    const includeLeave = ctx.filter.room?.include_leave === true;
    const out: Record<string, RoomEntry> = {};
    for (const m of left) {
      const changes = pass.changes.get(m.roomId);
      const wanted = since ? changes !== undefined || (includeLeave && ctx.fullState) : includeLeave;
      if (!wanted || (await this.storage.rooms.isForgotten(userId, m.roomId))) continue;
      const leaveEvent = await this.storage.rooms.getEvent(m.eventId);
      if (!leaveEvent) continue;
      let entry: RoomEntry;
      if ((await this.#rooms.previousMembership(m.eventId)) !== "join") {
        // Never joined (a rejected or withdrawn invite, a ban from outside): the user sees only that event.
        const tl = ctx.filter.room?.timeline;
        const own = toClientEvent(leaveEvent, ctx.now, ctx.viewer);
        const shown = roomAllowed(tl, m.roomId) && matchesFilter(tl, leaveEvent);
        entry = {
          timeline: { events: shown ? [own] : [], limited: false, prev_batch: formatRoomToken(m.streamOrdering - 1) },
          [ctx.stateAfterKey ?? "state"]: { events: ctx.stateAfterKey !== undefined ? [own] : [] },
        };
      } else {
        const known =
          changes !== undefined &&
          changes.slice(0, -1).every((c) => c.membership === "join") &&
          (await this.#rooms.previousMembership(changes[0]!.eventId)) === "join";
        const core = await this.#rooms.core(ctx, {
          roomId: m.roomId,
          from: known ? since!.events : 0,
          to: m.streamOrdering,
          full: !known || ctx.fullState,
          since: since?.events ?? 0,
          visibleAfter: m.streamOrdering,
          joinedAtEnd: true,
        });
        entry = this.#coreEntry(core);
      }
      out[m.roomId] = { ...entry, account_data: { events: pass.roomAccountData.get(m.roomId) ?? [] } };
    }
    return out;
  }
}
