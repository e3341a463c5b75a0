/**
 * What other servers may read of a room's DAG: single events, the state at an event (IDs or
 * whole events) with its auth chain, the auth chain of an event, the events that fill a gap
 * (`/get_missing_events`) and history (`/backfill`). Only servers with a member joined to the
 * room may read it, as in Synapse; events are handed over as the room's history visibility lets
 * that server see them (`filterEventsForServer`: else redacted). State and auth chains are served
 * whole, as Synapse does: the other server needs them to check events.
 */
import { Errors, MatrixError } from "../../../errors.js";
import { eventIdFor, pduOf, roomIdOfEvent, serverNameOf, type Pdu, type RoomVersion } from "../../../events/index.js";
import type { Storage, Stores } from "../../../storage/interfaces.js";
import type { Clock } from "../../clock.js";
import type { RoomDag, StateIds } from "../../rooms/dag.js";
import type { StateResolver } from "../../rooms/remote_persister.js";
import { ROOM_VERSIONS } from "../../../events/index.js";
import { filterEventsForServer } from "./server_visibility.js";

/** The most events one `/get_missing_events` or `/backfill` answer carries (Synapse caps at 100 too). */
const MAX_EVENTS = 100;

/** Servers with at least one member joined to the room, from its current state. */
export async function serversInRoom(stores: Stores, roomId: string): Promise<Set<string>> {
  const servers = new Set<string>();
  for (const m of await stores.rooms.membersOf(roomId, "join")) {
    const server = serverNameOf(m.userId);
    if (server) servers.add(server);
  }
  return servers;
}

export class FederationEventSource {
  constructor(
    private readonly storage: Storage,
    private readonly dag: RoomDag,
    private readonly resolve: StateResolver,
    private readonly serverName: string,
    private readonly clock: Clock,
  ) {}

  /** 403 unless `origin` has a member joined to the room (and 404 for a room this server is not in). */
  async requireServerInRoom(origin: string, roomId: string): Promise<RoomVersion> {
    const room = await this.storage.rooms.getRoom(roomId);
    const servers = room ? await serversInRoom(this.storage, roomId) : new Set<string>();
    if (!room || !servers.has(this.serverName)) throw new MatrixError(404, "M_NOT_FOUND", "This server is not in that room");
    if (!servers.has(origin)) throw Errors.forbidden(`${origin} is not in the room`);
    const version = ROOM_VERSIONS[room.roomVersion];
    if (!version) throw new MatrixError(404, "M_NOT_FOUND", "Unknown room version");
    return version;
  }

  #envelope(pdus: Pdu[]) {
    return { origin: this.serverName, origin_server_ts: this.clock.now(), pdus };
  }

  async event(origin: string, eventId: string) {
    const stored = (await this.storage.roomDag.getPdus([eventId])).get(eventId);
    if (!stored || stored.rejected !== null) throw new MatrixError(404, "M_NOT_FOUND", "Unknown event");
    const version = await this.requireServerInRoom(origin, stored.roomId);
    // As Synapse: an event the server may not see is answered redacted (200), not refused.
    return this.#envelope(await this.#asVisibleTo(origin, version, [{ eventId, pdu: pduOf(stored) }]));
  }

  /** The room's state before `eventId`, as IDs, and the IDs of its auth chain. */
  async stateIds(origin: string, roomId: string, eventId: string) {
    const version = await this.requireServerInRoom(origin, roomId);
    const state = await this.#stateBefore(roomId, eventId, version);
    const ids = [...state.values()];
    return { pdu_ids: ids, auth_chain_ids: [...(await this.authChain(ids)).keys()] };
  }

  async state(origin: string, roomId: string, eventId: string) {
    const version = await this.requireServerInRoom(origin, roomId);
    const state = await this.#stateBefore(roomId, eventId, version);
    const ids = [...state.values()];
    const pdus = await this.dag.pdus(this.storage, ids);
    return { pdus: ids.flatMap((id) => (pdus.has(id) ? [withoutUnsigned(pdus.get(id)!)] : [])), auth_chain: [...(await this.authChain(ids)).values()] };
  }

  async eventAuth(origin: string, roomId: string, eventId: string) {
    await this.requireServerInRoom(origin, roomId);
    const event = (await this.dag.pdus(this.storage, [eventId])).get(eventId);
    if (!event || roomIdOfEvent(event, eventId) !== roomId) throw new MatrixError(404, "M_NOT_FOUND", "Unknown event");
    // From the event itself, so that its own auth events are in the answer (Synapse's include_given).
    return { auth_chain: [...(await this.authChain([eventId])).values()] };
  }

  /** Events between `earliest` (exclusive) and `latest` (exclusive), walking prev_events back from `latest`, oldest first. */
  async missingEvents(origin: string, roomId: string, earliest: string[], latest: string[], limit: number, minDepth: number) {
    const version = await this.requireServerInRoom(origin, roomId);
    const stop = new Set(earliest);
    const starts = await this.dag.pdus(this.storage, latest);
    const found = await this.#walkBack(
      [...starts.values()].flatMap((p) => p.prev_events),
      (id) => !stop.has(id) && !starts.has(id),
      Math.min(Math.max(limit, 1), MAX_EVENTS),
      minDepth,
    );
    const events = found.filter((e) => inRoom(e.pdu, roomId, version)).sort((a, b) => a.pdu.depth - b.pdu.depth);
    return { events: await this.#asVisibleTo(origin, version, events) };
  }

  /** History before (and including) `from`, newest first, for another server's `/messages`. */
  async backfill(origin: string, roomId: string, from: string[], limit: number) {
    const version = await this.requireServerInRoom(origin, roomId);
    const found = await this.#walkBack(from, () => true, Math.min(Math.max(limit, 1), MAX_EVENTS), 0);
    const events = found.filter((e) => inRoom(e.pdu, roomId, version)).sort((a, b) => b.pdu.depth - a.pdu.depth);
    return this.#envelope(await this.#asVisibleTo(origin, version, events));
  }

  /** Events as `origin` may see them (redacted where history visibility says so), without unsigned data. */
  async #asVisibleTo(origin: string, version: RoomVersion, events: { eventId: string; pdu: Pdu }[]): Promise<Pdu[]> {
    return (await filterEventsForServer(this.storage, this.dag, origin, version, events)).map(withoutUnsigned);
  }

  /** Breadth-first over prev_events from `start`, taking events `take` allows, until `limit`. */
  async #walkBack(start: string[], take: (id: string) => boolean, limit: number, minDepth: number): Promise<{ eventId: string; pdu: Pdu }[]> {
    const out: { eventId: string; pdu: Pdu }[] = [];
    const seen = new Set<string>();
    let frontier = start.filter((id) => take(id));
    while (frontier.length > 0 && out.length < limit) {
      frontier.forEach((id) => seen.add(id));
      const stored = await this.storage.roomDag.getPdus(frontier);
      const next: string[] = [];
      for (const id of frontier) {
        const s = stored.get(id);
        if (!s || !s.inTimeline || s.rejected !== null || out.length >= limit) continue;
        const pdu = pduOf(s);
        if (pdu.depth < minDepth) continue;
        out.push({ eventId: id, pdu });
        for (const prev of pdu.prev_events) if (!seen.has(prev) && take(prev)) next.push(prev);
      }
      frontier = [...new Set(next)];
    }
    return out;
  }

  /** Every event reachable over auth_events from `ids` (not including them unless reached), by ID. */
  async authChain(ids: readonly string[]): Promise<Map<string, Pdu>> {
    const chain = new Map<string, Pdu>();
    const roots = await this.dag.pdus(this.storage, ids);
    let frontier = [...new Set([...roots.values()].flatMap((p) => p.auth_events))];
    while (frontier.length > 0) {
      const pdus = await this.dag.pdus(this.storage, frontier.filter((id) => !chain.has(id)));
      const next: string[] = [];
      for (const [id, pdu] of pdus) {
        chain.set(id, withoutUnsigned(pdu));
        for (const a of pdu.auth_events) if (!chain.has(a)) next.push(a);
      }
      frontier = [...new Set(next)];
    }
    return chain;
  }

  /** The state before an event: the state after its one prev, or the resolution over its prevs. */
  async #stateBefore(roomId: string, eventId: string, version: RoomVersion): Promise<StateIds> {
    const event = (await this.dag.pdus(this.storage, [eventId])).get(eventId);
    if (!event || roomIdOfEvent(event, eventId) !== roomId) throw new MatrixError(404, "M_NOT_FOUND", "Unknown event");
    // Nothing comes before the create event: the state at it is empty (Synapse asks, for a v12 room's first events).
    if (event.prev_events.length === 0) return new Map();
    const states = [...(await this.dag.stateAfter(this.storage, event.prev_events)).values()].map((s) => s.state);
    if (states.length === 0) throw new MatrixError(404, "M_NOT_FOUND", "The state at that event is not known here");
    if (states.length === 1) return states[0]!;
    return this.resolve(version, states, (ids) => this.dag.pdus(this.storage, ids));
  }
}

/** Whether `pdu` is an event of `roomId`: a room version 12 create event has no room_id, its ID names the room. */
function inRoom(pdu: Pdu, roomId: string, version: RoomVersion): boolean {
  return pdu.room_id === roomId || (pdu.room_id === undefined && roomIdOfEvent(pdu, eventIdFor(pdu, version)) === roomId);
}

/** Unsigned data (`prev_content`, transaction IDs) is this server's own: never sent to others. */
export function withoutUnsigned(pdu: Pdu): Pdu {
  if (pdu.unsigned === undefined) return pdu;
  const { unsigned: _unsigned, ...rest } = pdu;
  return rest as Pdu;
}
