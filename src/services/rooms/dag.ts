/**
 * The state of a room at any of its events, and the state groups that record it. Groups are
 * immutable (a delta on a parent, or a full map every MAX_CHAIN deltas), so a process may cache
 * them forever whatever other processes write. Events from before federation have no group:
 * their room's history is one chain, so the state after one of them is the latest state event
 * per key up to its stream position.
 */
import { randomBytes } from "node:crypto";
import { pduOf, type Pdu } from "../../events/index.js";
import type { StoredPdu } from "../../storage/room_dag.js";
import type { Stores } from "../../storage/interfaces.js";
import { BoundedMap } from "../bounded_map.js";

/** A state map: `stateKeyOf(type, state_key)` → event ID. */
export type StateIds = ReadonlyMap<string, string>;

/** Deltas allowed between a group and a full map: bounds the work of reading one. */
const MAX_CHAIN = 32;

export interface GroupRef {
  id: string;
  chain: number;
}

export function splitStateKey(key: string): [type: string, stateKey: string] {
  const at = key.indexOf("\u0000");
  return [key.slice(0, at), key.slice(at + 1)];
}

export class RoomDag {
  readonly #groups = new BoundedMap<string, { state: StateIds; chain: number }>(2_000);

  /** The state map of a group. */
  async groupState(tx: Stores, id: string): Promise<{ state: StateIds; chain: number }> {
    const cached = this.#groups.get(id);
    if (cached) return cached;
    const chain = await tx.roomDag.stateGroupChain(id);
    if (chain.length === 0) throw new Error(`state group ${id} is missing`);
    const state = new Map<string, string>();
    // Nearest first: apply from the full map at the end forwards.
    for (let i = chain.length - 1; i >= 0; i--) {
      for (const [key, eventId] of Object.entries(chain[i]!.delta)) {
        if (eventId === "") state.delete(key);
        else state.set(key, eventId);
      }
    }
    const out = { state: state as StateIds, chain: chain[0]!.chain };
    this.#groups.set(id, out);
    return out;
  }

  /**
   * The state after each of `eventIds`; IDs whose state is not known here are absent: unknown
   * events, state received with a join (an outlier) and history fetched later (a negative
   * position), none of which has a group, nor lies on the one chain of a room from before.
   * Soft-failed events have theirs.
   */
  async stateAfter(tx: Stores, eventIds: readonly string[]): Promise<Map<string, { state: StateIds; group: GroupRef | null }>> {
    const records = await tx.roomDag.eventDagRecords(eventIds);
    const out = new Map<string, { state: StateIds; group: GroupRef | null }>();
    for (const [eventId, record] of records) {
      if (record.stateGroup === null && (record.outlier || record.streamOrdering < 0)) continue;
      if (record.stateGroup !== null) {
        const { state, chain } = await this.groupState(tx, record.stateGroup);
        out.set(eventId, { state, group: { id: record.stateGroup, chain } });
      } else {
        const legacy = await tx.rooms.stateAt(record.roomId, record.streamOrdering);
        out.set(eventId, { state: new Map([...legacy].map(([key, e]) => [key, e.eventId])), group: null });
      }
    }
    // Soft-failed events keep their state outside the events table (one made current state by a
    // later resolution is in both, its events row an outlier without a group).
    const rest = eventIds.filter((id) => !out.has(id));
    for (const [eventId, groupId] of await tx.roomDag.softFailedGroups(rest)) {
      const { state, chain } = await this.groupState(tx, groupId);
      out.set(eventId, { state, group: { id: groupId, chain } });
    }
    return out;
  }

  /**
   * Records `state` as a group: a delta on `base` when there is one and the chain is short,
   * else the full map. Returns the new group.
   */
  async saveGroup(tx: Stores, roomId: string, state: StateIds, base: { ref: GroupRef; state: StateIds } | null): Promise<GroupRef> {
    const id = randomBytes(12).toString("base64url");
    if (base && base.ref.chain < MAX_CHAIN) {
      const delta: Record<string, string> = {};
      for (const [key, eventId] of state) if (base.state.get(key) !== eventId) delta[key] = eventId;
      for (const key of base.state.keys()) if (!state.has(key)) delta[key] = "";
      if (Object.keys(delta).length === 0) return base.ref;
      const chain = base.ref.chain + 1;
      await tx.roomDag.insertStateGroup({ id, roomId, prevGroup: base.ref.id, delta, chain });
      this.#groups.set(id, { state, chain });
      return { id, chain };
    }
    await tx.roomDag.insertStateGroup({ id, roomId, prevGroup: null, delta: Object.fromEntries(state), chain: 0 });
    this.#groups.set(id, { state, chain: 0 });
    return { id, chain: 0 };
  }

  /** The room's current state as a map of IDs (from `current_state`). */
  async currentStateIds(tx: Stores, roomId: string): Promise<Map<string, string>> {
    const current = await tx.rooms.currentState(roomId);
    return new Map([...current].map(([key, e]) => [key, e.eventId]));
  }

  /** PDUs by ID, parsed; unknown IDs are absent. */
  async pdus(tx: Stores, ids: readonly string[]): Promise<Map<string, Pdu>> {
    const stored = await tx.roomDag.getPdus(ids);
    return new Map([...stored].map(([id, s]) => [id, pduOf(s)]));
  }

  /** Stored PDUs by ID, with where they are kept. */
  stored(tx: Stores, ids: readonly string[]): Promise<Map<string, StoredPdu>> {
    return tx.roomDag.getPdus(ids);
  }
}

