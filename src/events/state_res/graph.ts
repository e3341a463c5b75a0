/**
 * The events state resolution works on: loaded once, in batches, and their `auth_events`
 * edges. Everything after {@link EventGraph.loadAuthClosure} is synchronous, so the
 * algorithm itself never waits on storage.
 */
import { PowerLevels } from "../power_levels.js";
import type { RoomVersion } from "../room_versions.js";
import { EventTypes, type Pdu } from "../types.js";

/** A state map key: `${type}\u0000${stateKey}`, identical to `stateKeyOf` in src/storage/rooms.ts. */
export const stateKeyOf = (type: string, stateKey: string): string => `${type}\u0000${stateKey}`;

/** Loads events by ID (any it cannot find are absent from the result). */
export type EventLoader = (ids: readonly string[]) => Promise<Map<string, Pdu>>;

/** The input cannot be resolved (a caller error, such as state sets from two rooms). */
export class StateResError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StateResError";
  }
}

/**
 * The room an event belongs to. A room version 12 create event has no `room_id`: its room
 * ID is its event ID with `!` for `$` (MSC4291).
 */
function roomOf(id: string, pdu: Pdu): string {
  return typeof pdu.room_id === "string" ? pdu.room_id : `!${id.slice(1)}`;
}

/** Ask the loader for at most this many IDs at once, so an SQL `IN (...)` list stays bounded. */
const LOAD_BATCH = 1000;

export class EventGraph {
  private readonly events = new Map<string, Pdu>();
  /** IDs the loader could not supply, or that belong to another room: never asked for again. */
  private readonly missing = new Set<string>();
  private readonly authCache = new Map<string, readonly string[]>();
  private roomId: string | undefined;

  constructor(
    private readonly load: EventLoader,
    readonly version: RoomVersion,
  ) {}

  get(id: string): Pdu | undefined {
    return this.events.get(id);
  }

  has(id: string): boolean {
    return this.events.has(id);
  }

  /**
   * Loads the state sets' events and fixes the room they belong to. Throws
   * {@link StateResError} when they come from more than one room: that is a caller bug,
   * and guessing which room was meant would make the answer depend on input order.
   */
  async loadStateEvents(ids: Iterable<string>): Promise<void> {
    const fetched = await this.fetch(ids);
    const rooms = new Set<string>();
    for (const [id, pdu] of fetched) rooms.add(roomOf(id, pdu));
    if (rooms.size > 1) throw new StateResError(`state sets mix events from ${rooms.size} rooms`);
    this.roomId = rooms.values().next().value;
    for (const [id, pdu] of fetched) this.events.set(id, pdu);
  }

  /**
   * Loads every event reachable from `roots` through `auth_events`, one loader call per
   * frontier (per batch). Auth events from another room are treated as absent: auth rule
   * 2.5 would refuse them anyway, and one hostile auth event must not abort the resolution.
   */
  async loadAuthClosure(roots: Iterable<string>): Promise<void> {
    const visited = new Set<string>();
    let pending = [...new Set(roots)];
    while (pending.length > 0) {
      const fetched = await this.fetch(pending);
      for (const [id, pdu] of fetched) {
        if (this.roomId !== undefined && roomOf(id, pdu) !== this.roomId) this.missing.add(id);
        else this.events.set(id, pdu);
      }
      const next = new Set<string>();
      for (const id of pending) {
        if (visited.has(id)) continue;
        visited.add(id);
        if (!this.events.has(id)) continue;
        for (const aid of this.authIds(id)) if (!visited.has(aid)) next.add(aid);
      }
      pending = [...next];
    }
  }

  private async fetch(ids: Iterable<string>): Promise<Map<string, Pdu>> {
    const wanted = [...new Set(ids)].filter((id) => !this.events.has(id) && !this.missing.has(id));
    const out = new Map<string, Pdu>();
    for (let i = 0; i < wanted.length; i += LOAD_BATCH) {
      const batch = wanted.slice(i, i + LOAD_BATCH);
      const got = await this.load(batch);
      for (const id of batch) {
        const pdu = got.get(id);
        if (pdu) out.set(id, pdu);
        else this.missing.add(id);
      }
    }
    return out;
  }

  /**
   * The event's `auth_events`, deduplicated. Room version 12 (event format 4) events do not
   * cite the create event, whose ID is implied by the room ID (MSC4291), so it is added here
   * as an edge: state resolution needs it wherever it needs an auth event (the auth chains,
   * the creators' power for ordering, the auth checks), as Synapse does too.
   */
  authIds(id: string): readonly string[] {
    const cached = this.authCache.get(id);
    if (cached) return cached;
    const pdu = this.events.get(id);
    if (!pdu) return [];
    const ids = new Set(Array.isArray(pdu.auth_events) ? pdu.auth_events.filter((a) => typeof a === "string") : []);
    if (this.version.eventFormat === 4 && pdu.type !== EventTypes.create && typeof pdu.room_id === "string") {
      ids.add(`$${pdu.room_id.slice(1)}`);
    }
    const list = [...ids];
    this.authCache.set(id, list);
    return list;
  }

  /** The loaded auth events of `id`, by state key (the last one wins if an event cites two). */
  authEventsByKey(id: string, skip?: (authId: string) => boolean): Map<string, Pdu> {
    const byKey = new Map<string, Pdu>();
    for (const aid of this.authIds(id)) {
      const ev = this.events.get(aid);
      if (!ev || typeof ev.state_key !== "string" || skip?.(aid)) continue;
      byKey.set(stateKeyOf(ev.type, ev.state_key), ev);
    }
    return byKey;
  }

  /** The `m.room.power_levels` event among the event's auth events, if it cites (and we have) one. */
  powerLevelsAuthOf(id: string): string | undefined {
    for (const aid of this.authIds(id)) {
      const ev = this.events.get(aid);
      if (ev && ev.type === EventTypes.powerLevels && ev.state_key === "") return aid;
    }
    return undefined;
  }

  /**
   * The sender's power level "when looking at their respective auth_events" (reverse
   * topological power ordering): the power levels event among the auth events, or with
   * none, 100 for the room creator named by the create event among them, else 0.
   * `PowerLevels` implements exactly that, including the version's creator rule.
   */
  senderPowerLevel(id: string): number {
    const pdu = this.events.get(id);
    if (!pdu) return 0;
    const byKey = this.authEventsByKey(id);
    return PowerLevels.fromState((t, k) => byKey.get(stateKeyOf(t, k)), this.version).userLevel(pdu.sender);
  }
}
