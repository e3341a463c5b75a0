/**
 * The path by which events from other servers enter a room we are in (the spec's "Checks
 * performed on receipt of a PDU", steps 4 to 6; format, signatures and hashes are checked
 * before, by the federation layer):
 * - the event must pass the auth rules against its own auth events, else it is rejected;
 * - and against the state before it (its prev_events' states, resolved when there are
 *   several), else it is rejected;
 * - and against the room's current state, else it is soft-failed: kept with the state after
 *   it (so events built on it are judged as any other), never shown, never an extremity, never
 *   current state.
 * An accepted event joins the timeline, moves the forward extremities, and the room's current
 * state becomes the resolution of the states at its extremities. All of it under the room's
 * lock, in one transaction per batch, like local events.
 *
 * Known limitation: sync reads state changes by stream position, so when a resolution picks an
 * older event for a key, clients see the change at the next change of that key (current state
 * itself, used by the auth rules and the state APIs, is always the resolved one).
 */
import {
  AuthError,
  authEventTypes,
  checkEventAuth,
  membershipOf,
  pduOf,
  stateLookupFromEvents,
  type Pdu,
  type RoomVersion,
  type StateLookup,
} from "../../events/index.js";
import type { CurrentStateEntry, Extremity } from "../../storage/room_dag.js";
import type { Storage, Stores } from "../../storage/interfaces.js";
import type { Clock } from "../clock.js";
import { stateKeyOf, type NewEvent } from "../../storage/rooms.js";
import { splitStateKey, type StateIds } from "./dag.js";
import type { EventPersister, PersistedEvent, RoomHead } from "./persister.js";
import { applyWaitingRedactions } from "./redactions.js";

/** An event that passed the format, signature and hash checks. */
export interface RemoteEvent {
  eventId: string;
  pdu: Pdu;
  /**
   * The states after those of its prev_events that are nowhere here, fetched from another
   * server (`/state_ids`) when a gap could not be filled: the event is judged on them, and its
   * prev_events stay a gap in the timeline.
   */
  prevStates?: StateIds[];
}

export type RemoteOutcome = { status: "accepted" | "duplicate" | "soft_failed" } | { status: "rejected"; reason: string };

/** State resolution (v2, or v2.1 for room version 12) of several states at once. */
export type StateResolver = (
  version: RoomVersion,
  sets: readonly StateIds[],
  load: (ids: readonly string[]) => Promise<Map<string, Pdu>>,
) => Promise<Map<string, string>>;

/** More forward extremities than this and the room is crowded: a local event should merge them (as Synapse's dummy events). */
const MAX_EXTREMITIES = 10;

/** Auth options for events signed by their authorising server too (restricted joins): the federation layer verified those signatures. */
const AUTH_OPTIONS = { verifyServerSignature: (pdu: Pdu, server: string) => pdu.signatures[server] !== undefined };

export class RemoteEventPersister {
  readonly #crowded: ((roomId: string, version: RoomVersion) => void)[] = [];

  constructor(
    private readonly storage: Storage,
    private readonly persister: EventPersister,
    private readonly resolve: StateResolver,
    private readonly clock: Clock,
  ) {}

  /** `listener` hears of a room left with more than MAX_EXTREMITIES forward extremities after events from federation. */
  onCrowded(listener: (roomId: string, version: RoomVersion) => void): void {
    this.#crowded.push(listener);
  }

  /**
   * Persists events of one room, parents before children. Events whose prev_events are all
   * unknown must be preceded by the events that fill the gap (`/get_missing_events`), and
   * unknown auth events by their own persistence as outliers (`storeOutliers`).
   */
  async persist(
    roomId: string,
    version: RoomVersion,
    events: readonly RemoteEvent[],
    origin: "local" | "federation" = "federation",
  ): Promise<Map<string, RemoteOutcome>> {
    const outcomes = new Map<string, RemoteOutcome>();
    const fresh: PersistedEvent[] = [];
    let extremities = 0;
    await this.storage.transaction(async (tx) => {
      outcomes.clear();
      fresh.length = 0;
      const stored = await tx.roomDag.lockRoomDag(roomId);
      if (!stored) {
        for (const e of events) outcomes.set(e.eventId, { status: "rejected", reason: "unknown room" });
        return;
      }
      const head = await this.persister.readHead(tx, roomId, stored);
      for (const event of events) {
        const outcome = await this.#persistOne(tx, version, head, event);
        outcomes.set(event.eventId, outcome.result);
        if (outcome.persisted) fresh.push({ ...outcome.persisted, origin });
      }
      await tx.roomDag.setRoomDag(roomId, head.extremities, head.group?.id ?? null);
      extremities = head.extremities.length;
    });
    if (fresh.length > 0) await this.persister.announce(fresh, version);
    if (extremities > MAX_EXTREMITIES) for (const listener of this.#crowded) listener(roomId, version);
    return outcomes;
  }

  /**
   * A room joined through another server (`send_join`): the room, the state before our join
   * (kept as outliers: current state, never a timeline), the rest of its auth chain, and the
   * join itself as the room's first timeline event here. One transaction: all or nothing.
   */
  async persistJoinedRoom(
    room: { roomId: string; roomVersion: string; creator: string },
    version: RoomVersion,
    state: readonly RemoteEvent[],
    authChain: readonly RemoteEvent[],
    join: RemoteEvent,
  ): Promise<RemoteOutcome> {
    let result: RemoteOutcome = { status: "rejected", reason: "not stored" };
    let persisted: PersistedEvent | undefined;
    await this.storage.transaction(async (tx) => {
      persisted = undefined;
      await tx.roomDag.ensureRoom({ ...room, createdTs: this.clock.now(), isPublic: false });
      const stored = (await tx.roomDag.lockRoomDag(room.roomId))!;
      if (stored.extremities !== null) {
        // Another join got the room here first (a user of ours, at the same time): this join
        // attaches to the room as any event from federation does.
        const head = await this.persister.readHead(tx, room.roomId, stored);
        const outcome = await this.#persistOne(tx, version, head, join);
        result = outcome.result;
        persisted = outcome.persisted;
        await tx.roomDag.setRoomDag(room.roomId, head.extremities, head.group?.id ?? null);
        return;
      }
      const now = this.clock.now();
      const stateIds = new Set(state.map((e) => e.eventId));
      for (const e of authChain) if (!stateIds.has(e.eventId)) await tx.roomDag.insertOutlier(e.eventId, room.roomId, JSON.stringify(e.pdu), null, now);
      const known = await tx.roomDag.eventDagRecords(state.map((e) => e.eventId));
      const map = new Map<string, string>();
      for (const { eventId, pdu } of [...state].sort((a, b) => a.pdu.depth - b.pdu.depth)) {
        map.set(stateKeyOf(pdu.type, pdu.state_key ?? ""), eventId);
        if (known.has(eventId)) continue;
        await tx.rooms.appendEvent(newEventOf(eventId, room.roomId, pdu, { outlier: true }));
      }
      const group = await this.persister.dag.saveGroup(tx, room.roomId, map, null);
      const head = await this.persister.readHead(tx, room.roomId, stored);
      head.extremities = join.pdu.prev_events.map((eventId) => ({ eventId, depth: join.pdu.depth - 1 }));
      head.group = group;
      const outcome = await this.#persistOne(tx, version, head, join, { state: map, group });
      result = outcome.result;
      persisted = outcome.persisted;
      await tx.roomDag.setRoomDag(room.roomId, head.extremities, head.group?.id ?? null);
    });
    if (persisted) await this.persister.announce([{ ...persisted, origin: "local" }], version);
    return result;
  }

  /**
   * A membership event for a room we are not in (an invite from another server, or our leave
   * from such an invite): it sets the member's membership, outside any timeline.
   */
  async persistOutOfBand(room: { roomId: string; roomVersion: string; creator: string }, version: RoomVersion, event: RemoteEvent): Promise<void> {
    let persisted: PersistedEvent | undefined;
    await this.storage.transaction(async (tx) => {
      await tx.roomDag.ensureRoom({ ...room, createdTs: this.clock.now(), isPublic: false });
      await tx.rooms.lockRoom(room.roomId);
      const known = await tx.roomDag.eventDagRecords([event.eventId]);
      if (known.has(event.eventId)) return;
      const { pdu } = event;
      const streamOrdering = await tx.rooms.appendEvent(newEventOf(event.eventId, room.roomId, pdu, { outlier: true }));
      persisted = { eventId: event.eventId, streamOrdering, pdu, origin: "federation" };
    });
    if (persisted) await this.persister.announce([persisted], version);
  }

  /** Keeps events known only as auth events (fetched to check others); they are checked when used. */
  async storeOutliers(roomId: string, events: readonly RemoteEvent[]): Promise<void> {
    const now = this.clock.now();
    await this.storage.transaction(async (tx) => {
      for (const { eventId, pdu } of events) await tx.roomDag.insertOutlier(eventId, roomId, JSON.stringify(pdu), null, now);
    });
  }

  async #persistOne(
    tx: Stores,
    version: RoomVersion,
    head: RoomHead,
    { eventId, pdu, prevStates }: RemoteEvent,
    knownBefore?: { state: StateIds; group: { id: string; chain: number } | null },
  ): Promise<{ result: RemoteOutcome; persisted?: PersistedEvent }> {
    const known = (await tx.roomDag.getPdus([eventId])).get(eventId);
    if (known?.inEvents || known?.softFailed) return { result: { status: "duplicate" } };
    const reject = async (reason: string) => {
      await tx.roomDag.insertOutlier(eventId, pdu.room_id, JSON.stringify(pdu), reason, this.clock.now());
      return { result: { status: "rejected" as const, reason } };
    };

    // Step 4: the auth rules against the event's own auth events.
    const authEvents = await this.persister.dag.stored(tx, pdu.auth_events);
    const missingAuth = pdu.auth_events.filter((id) => !authEvents.has(id));
    if (missingAuth.length > 0) return reject(`unknown auth events: ${missingAuth.join(", ")}`);
    const rejectedAuth = [...authEvents.values()].find((e) => e.rejected !== null);
    if (rejectedAuth) return reject(`auth event ${rejectedAuth.eventId} was rejected`);
    const authPdus = [...authEvents.values()].map(pduOf);
    if (!authPdus.some((a) => a.type === "m.room.create")) {
      // Room version 12 leaves the create event out of auth_events: the room ID names it.
      const create = await tx.rooms.currentStateEvent(pdu.room_id, "m.room.create", "");
      if (create) authPdus.push(pduOf(create));
    }
    const problem = authProblem(pdu, stateLookupFromEvents(authPdus), version);
    if (problem) return reject(`not allowed by its auth events: ${problem}`);

    // Step 5: the auth rules against the state before the event.
    const before = knownBefore ?? (await this.#stateBefore(tx, version, pdu, prevStates));
    if (!before) return reject("none of its prev_events is known");
    const beforeProblem = authProblem(pdu, await this.#lookup(tx, before.state, pdu, version), version);
    if (beforeProblem) return reject(`not allowed by the state before it: ${beforeProblem}`);

    // The state after the event, as for any event: a soft-failed one keeps it too.
    const key = typeof pdu.state_key === "string" ? stateKeyOf(pdu.type, pdu.state_key) : undefined;
    let after: StateIds = before.state;
    let group = before.group;
    if (key !== undefined) {
      after = new Map(before.state).set(key, eventId);
      group = await this.persister.dag.saveGroup(tx, pdu.room_id, after, group && { ref: group, state: before.state });
    } else if (!group) {
      group = await this.persister.dag.saveGroup(tx, pdu.room_id, after, null);
    }

    // Step 6: the auth rules against the current state; a failure is a soft failure: stored with
    // its state (events built on it are accepted as any other), never an extremity, current
    // state or in a timeline.
    const current = await this.persister.dag.currentStateIds(tx, pdu.room_id);
    if (authProblem(pdu, await this.#lookup(tx, current, pdu, version), version)) {
      await tx.roomDag.insertSoftFailed(eventId, pdu.room_id, JSON.stringify(pdu), group.id, this.clock.now());
      return { result: { status: "soft_failed" } };
    }

    // The new extremities: the event replaces those it points to.
    const prevs = new Set(pdu.prev_events);
    const extremities: Extremity[] = [...head.extremities.filter((e) => !prevs.has(e.eventId)), { eventId, depth: pdu.depth }];
    const resolved =
      extremities.length === 1 ? after : await this.#resolveExtremities(tx, version, extremities, { eventId, pdu }, after);
    const simple = resolved === after && head.extremities.every((e) => prevs.has(e.eventId));

    const streamOrdering = await tx.rooms.appendEvent(
      // When the event continues the room's only line, it is current state as a local event is.
      newEventOf(eventId, pdu.room_id, pdu, { stateGroup: group.id, updatesCurrentState: simple }),
    );
    if (!simple) await this.#applyCurrentState(tx, pdu.room_id, version, current, resolved);
    head.extremities = extremities;
    head.group = resolved === after ? group : await this.persister.dag.saveGroup(tx, pdu.room_id, resolved, null);
    const persisted = { eventId, streamOrdering, pdu };
    // The same in-transaction work as a local event (a redaction is applied here, push actions
    // staged), and what only an event from elsewhere can have: redactions that came before it.
    await this.persister.afterAppend(tx, persisted, version);
    await applyWaitingRedactions(tx, eventId, version, this.clock.now());
    return { result: { status: "accepted" }, persisted };
  }

  /**
   * The state before an event: its one prev's state after, or the resolution of its prevs'
   * states (with those fetched for prevs that are not here).
   */
  async #stateBefore(
    tx: Stores,
    version: RoomVersion,
    pdu: Pdu,
    prevStates: readonly StateIds[] = [],
  ): Promise<{ state: StateIds; group: { id: string; chain: number } | null } | undefined> {
    const states = await this.persister.dag.stateAfter(tx, pdu.prev_events);
    const known: { state: StateIds; group: { id: string; chain: number } | null }[] = [...states.values(), ...prevStates.map((state) => ({ state, group: null }))];
    if (known.length === 0) return undefined;
    if (known.length === 1) return known[0]!;
    const resolved = await this.resolve(version, known.map((k) => k.state), (ids) => this.persister.dag.pdus(tx, ids));
    return { state: resolved, group: null };
  }

  /** The resolution of the states at the extremities, `event` among them (not stored yet, so the loader knows it). */
  async #resolveExtremities(tx: Stores, version: RoomVersion, extremities: Extremity[], event: RemoteEvent, newState: StateIds): Promise<StateIds> {
    const others = await this.persister.dag.stateAfter(tx, extremities.filter((e) => e.eventId !== event.eventId).map((e) => e.eventId));
    const sets = [...[...others.values()].map((o) => o.state), newState];
    return this.resolve(version, sets, async (ids) => {
      const found = await this.persister.dag.pdus(tx, ids);
      if (ids.includes(event.eventId)) found.set(event.eventId, event.pdu);
      return found;
    });
  }

  /** Writes the difference between the room's current state and the resolved one. */
  async #applyCurrentState(tx: Stores, roomId: string, version: RoomVersion, current: StateIds, resolved: StateIds): Promise<void> {
    const changed = [...resolved].filter(([key, id]) => current.get(key) !== id);
    const records = await tx.roomDag.eventDagRecords(changed.map(([, id]) => id));
    const stored = await tx.roomDag.getPdus(changed.map(([, id]) => id));
    const entries: CurrentStateEntry[] = [];
    for (const [key, id] of changed) {
      const found = stored.get(id);
      if (!found || found.rejected !== null) continue;
      const event = pduOf(found);
      // State fetched across a gap, or a soft-failed event a resolution made current: it enters
      // the room's state (never its timeline) as state received with a join does.
      let streamOrdering = records.get(id)?.streamOrdering;
      if (streamOrdering === undefined) {
        streamOrdering = await tx.rooms.appendEvent(newEventOf(id, roomId, event, { outlier: true, updatesCurrentState: false }));
        await applyWaitingRedactions(tx, id, version, this.clock.now());
      }
      const [type, stateKey] = splitStateKey(key);
      entries.push({ type, stateKey, eventId: id, streamOrdering, membership: membershipOf(event) ?? null });
    }
    await tx.roomDag.setCurrentState(roomId, entries);
    const removed = [...current.keys()].filter((key) => !resolved.has(key)).map(splitStateKey);
    if (removed.length > 0) await tx.roomDag.removeCurrentState(roomId, removed);
  }

  /** The state the auth rules look at for `pdu` (as chosen for local events), loaded for a synchronous lookup. */
  async #lookup(tx: Stores, state: StateIds, pdu: Pdu, version: RoomVersion): Promise<StateLookup> {
    const keys = authEventTypes(pdu.type, pdu.state_key, pdu.sender, pdu.content, version).map(([t, k]) => stateKeyOf(t, k));
    // Room version 12 selects no create event, but the auth rules still read it.
    keys.push(stateKeyOf("m.room.create", ""));
    const ids = keys.map((k) => state.get(k)).filter((id): id is string => id !== undefined);
    const pdus = await this.persister.dag.pdus(tx, ids);
    return (type, stateKey) => {
      const id = state.get(stateKeyOf(type, stateKey));
      return id === undefined ? undefined : pdus.get(id);
    };
  }
}

function authProblem(pdu: Pdu, lookup: StateLookup, version: RoomVersion): string | undefined {
  try {
    checkEventAuth(pdu, lookup, version, AUTH_OPTIONS);
    return undefined;
  } catch (err) {
    if (err instanceof AuthError) return `${err.message} (rule ${err.rule})`;
    throw err;
  }
}

/** The row of a PDU received from another server. */
export function newEventOf(eventId: string, roomId: string, pdu: Pdu, extra: Pick<NewEvent, "outlier" | "stateGroup" | "updatesCurrentState">): NewEvent {
  return {
    eventId,
    roomId,
    type: pdu.type,
    stateKey: pdu.state_key ?? null,
    sender: pdu.sender,
    originServerTs: pdu.origin_server_ts,
    depth: pdu.depth,
    json: JSON.stringify(pdu),
    membership: pdu.type === "m.room.member" ? (membershipOf(pdu) ?? null) : null,
    ...extra,
  };
}
