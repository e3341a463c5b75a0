/**
 * PDUs that arrive in transactions: checked, gaps filled from the sending server
 * (`/get_missing_events` for unknown prev_events, `/event` for unknown auth events), then
 * stored through the room's remote path, each room's events oldest first. A gap too long to
 * fill (after a long outage) is left open: the state after its far end comes from `/state_ids`
 * (see GapState), and the events after it are judged on that.
 */
import { getRoomVersion, isRecord, type Pdu, type RoomVersion } from "../../../events/index.js";
import type { StateIds } from "../../rooms/dag.js";
import type { RemoteEvent } from "../../rooms/remote_persister.js";
import type { StoredPdu } from "../../../storage/room_dag.js";
import { serversInRoom } from "./event_source.js";
import { GapState } from "./gap_state.js";
import { ExtremityMerger } from "./merge_extremities.js";
import type { FederatedRoomDeps } from "./types.js";

const enc = encodeURIComponent;
/** Events asked for to fill one gap (Synapse asks for 10). */
const GAP_LIMIT = 10;
/** The most events one gap is filled with, over several asks; an older gap stays open (the state at its far end is fetched). */
const MAX_GAP_EVENTS = 100;
/** The most unknown prev_events whose state is fetched for one batch (each costs a `/state_ids` and the events it names). */
const MAX_GAP_STATES = 5;

export type PduResults = Record<string, { error?: string }>;

export class InboundPdus {
  readonly #gapState: GapState;

  constructor(private readonly deps: FederatedRoomDeps) {
    this.#gapState = new GapState(deps);
    const merger = new ExtremityMerger(deps);
    deps.remote.onCrowded((roomId, version) => merger.merge(roomId, version));
  }

  async handle(origin: string, raws: unknown[]): Promise<PduResults> {
    const results: PduResults = {};
    const byRoom = new Map<string, { version: RoomVersion; events: RemoteEvent[] }>();
    // Per room once per transaction: its version, if a user here is in it (else its PDUs are ignored).
    const rooms = new Map<string, RoomVersion | undefined>();
    const versionOf = async (roomId: string) => {
      if (!rooms.has(roomId)) {
        const room = await this.deps.storage.rooms.getRoom(roomId);
        const version = room && getRoomVersion(room.roomVersion);
        rooms.set(roomId, version && (await serversInRoom(this.deps.storage, roomId)).has(this.deps.serverName) ? version : undefined);
      }
      return rooms.get(roomId);
    };
    for (const raw of raws) {
      const roomId = isRecord(raw) && typeof raw.room_id === "string" ? raw.room_id : undefined;
      if (roomId === undefined) continue; // No room: not a PDU any room version knows; nothing to answer it by.
      const version = await versionOf(roomId);
      if (!version) continue;
      const checked = await this.deps.checkPdu(raw, version);
      if (!checked.ok) {
        if (checked.eventId) results[checked.eventId] = { error: checked.reason };
        continue;
      }
      const entry = byRoom.get(roomId) ?? { version, events: [] };
      entry.events.push({ eventId: checked.eventId, pdu: checked.pdu });
      byRoom.set(roomId, entry);
    }
    for (const [roomId, { version, events }] of byRoom) {
      const batch = await this.#withGapsFilled(origin, roomId, version, events);
      const outcomes = await this.deps.remote.persist(roomId, version, batch);
      for (const e of events) {
        const outcome = outcomes.get(e.eventId);
        results[e.eventId] = outcome?.status === "rejected" ? { error: outcome.reason } : {};
      }
    }
    return results;
  }

  /** The events, preceded by what fills their gaps, oldest first; missing auth events stored as outliers. */
  async #withGapsFilled(origin: string, roomId: string, version: RoomVersion, events: RemoteEvent[]): Promise<RemoteEvent[]> {
    const all = new Map(events.map((e) => [e.eventId, e]));
    const ids = (list: Iterable<RemoteEvent>, pick: (p: Pdu) => string[]) => [...new Set([...list].flatMap((e) => pick(e.pdu)))].filter((id) => !all.has(id));
    const knownPrev = await this.deps.storage.roomDag.getPdus(ids(events, (p) => p.prev_events));
    const missingPrev = ids(events, (p) => p.prev_events).filter((id) => !hasState(knownPrev.get(id)));
    if (missingPrev.length > 0) {
      for (const e of await this.#missingEvents(origin, roomId, version, events)) if (!all.has(e.eventId)) all.set(e.eventId, e);
      await this.#statesAcrossGaps(origin, roomId, version, all);
    }
    const wantedAuth = ids(all.values(), (p) => p.auth_events);
    const knownAuth = await this.deps.storage.roomDag.getPdus(wantedAuth);
    const missingAuth = wantedAuth.filter((id) => !knownAuth.has(id));
    if (missingAuth.length > 0) await this.deps.remote.storeOutliers(roomId, await this.#fetchEvents(origin, version, missingAuth));
    return [...all.values()].sort((a, b) => a.pdu.depth - b.pdu.depth);
  }

  /**
   * For the events whose prev_events are still nowhere (the gap was too long, or its sender
   * would not fill it), the states after those prev_events, fetched with `/state_ids`.
   */
  async #statesAcrossGaps(origin: string, roomId: string, version: RoomVersion, all: Map<string, RemoteEvent>): Promise<void> {
    const prevIds = [...new Set([...all.values()].flatMap((e) => e.pdu.prev_events))].filter((id) => !all.has(id));
    const stored = await this.deps.storage.roomDag.getPdus(prevIds);
    // A rejected prev is known, and no state of it is asked for.
    const open = new Set(prevIds.filter((id) => !hasState(stored.get(id)) && stored.get(id)?.rejected == null));
    const states = new Map<string, StateIds>();
    for (const e of [...all.values()].sort((a, b) => a.pdu.depth - b.pdu.depth)) {
      const gaps = e.pdu.prev_events.filter((id) => open.has(id));
      if (gaps.length === 0) continue;
      const prevStates: StateIds[] = [];
      for (const id of gaps) {
        if (!states.has(id) && states.size < MAX_GAP_STATES) {
          const state = await this.#gapState.stateAfter(origin, roomId, version, id);
          if (state) states.set(id, state);
        }
        const state = states.get(id);
        if (state) prevStates.push(state);
      }
      if (prevStates.length > 0) all.set(e.eventId, { ...e, prevStates });
    }
  }

  /**
   * The events between our extremities and `latest`, asked for GAP_LIMIT at a time: while the
   * oldest events fetched still point at events we lack, ask again from them (a server that
   * was cut off for a while misses more than one answer holds), up to MAX_GAP_EVENTS in all.
   */
  async #missingEvents(origin: string, roomId: string, version: RoomVersion, latest: RemoteEvent[]): Promise<RemoteEvent[]> {
    const head = await this.deps.storage.transaction(async (tx) => {
      const stored = await tx.roomDag.lockRoomDag(roomId);
      return stored && this.deps.persister.readHead(tx, roomId, stored);
    });
    if (!head) return [];
    const found = new Map<string, RemoteEvent>(latest.map((e) => [e.eventId, e]));
    const fetched: RemoteEvent[] = [];
    let from = latest;
    while (from.length > 0 && fetched.length < MAX_GAP_EVENTS) {
      let round: RemoteEvent[];
      try {
        const res = await this.deps.client.request(origin, {
          method: "POST",
          path: `/_matrix/federation/v1/get_missing_events/${enc(roomId)}`,
          body: {
            earliest_events: head.extremities.map((e) => e.eventId),
            latest_events: from.map((e) => e.eventId),
            limit: GAP_LIMIT,
            min_depth: Math.max(0, Math.min(...head.extremities.map((e) => e.depth)) - GAP_LIMIT),
          },
        });
        if (res.status !== 200 || !Array.isArray(res.json.events)) break;
        round = [];
        // A server may answer with more than asked for: only what was asked for is checked.
        for (const raw of res.json.events.slice(0, GAP_LIMIT)) {
          const checked = await this.deps.checkPdu(raw, version);
          if (checked.ok && checked.pdu.room_id === roomId && !found.has(checked.eventId)) round.push({ eventId: checked.eventId, pdu: checked.pdu });
        }
      } catch {
        // Unreachable now: the events stay unknown, and the new ones are judged on what we have.
        break;
      }
      for (const e of round) found.set(e.eventId, e);
      fetched.push(...round);
      // The next round starts from the fetched events whose parents are still neither here nor fetched.
      const wanted = [...new Set(round.flatMap((e) => e.pdu.prev_events))].filter((id) => !found.has(id));
      const known = await this.deps.storage.roomDag.getPdus(wanted);
      const unknown = new Set(wanted.filter((id) => !hasState(known.get(id))));
      from = round.filter((e) => e.pdu.prev_events.some((id) => unknown.has(id)));
    }
    return fetched;
  }

  async #fetchEvents(origin: string, version: RoomVersion, ids: string[]): Promise<RemoteEvent[]> {
    const out: RemoteEvent[] = [];
    for (const id of ids.slice(0, 50)) {
      try {
        const res = await this.deps.client.request(origin, { method: "GET", path: `/_matrix/federation/v1/event/${enc(id)}` });
        const raw = Array.isArray(res.json.pdus) ? res.json.pdus[0] : undefined;
        const checked = raw === undefined ? undefined : await this.deps.checkPdu(raw, version);
        if (checked?.ok && checked.eventId === id) out.push({ eventId: id, pdu: checked.pdu });
      } catch {
        // Left unknown: an event needing it is rejected, as the spec says.
      }
    }
    return out;
  }
}

/** Whether the state after an event is known here: stored in a room's graph, or soft-failed with its state. */
function hasState(stored: StoredPdu | undefined): boolean {
  return stored !== undefined && (stored.inEvents || stored.softFailed);
}
