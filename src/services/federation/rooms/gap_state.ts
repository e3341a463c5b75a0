/**
 * The state after an event this server does not have, asked of the server that sent an event
 * built on it, when `/get_missing_events` could not close the gap (a long outage): `/state_ids`
 * at it, then the events it names that are not here (`/event`, or `/state` when many are
 * missing), each checked against its own auth events and kept as an outlier. The event built on
 * the gap is then judged on that state, as Synapse does; the gap stays in the timeline. A state
 * is used only whole: every event it names is here, fetched, or rejected on its auth events.
 */
import { isRecord, pduOf, type Pdu, type RoomVersion } from "../../../events/index.js";
import type { StoredPdu } from "../../../storage/room_dag.js";
import { stateKeyOf } from "../../../storage/rooms.js";
import type { StateIds } from "../../rooms/dag.js";
import type { RemoteEvent } from "../../rooms/remote_persister.js";
import { checkAll, type FederatedRoomDeps } from "./types.js";
import { checkAgainstAuthEvents } from "./auth_events.js";

const enc = encodeURIComponent;
/** Missing events fetched one by one up to this many; more, and the whole state comes in one `/state`. */
const MAX_SINGLE_FETCHES = 20;
/** The most events one state may bring (a room's state and auth chain); a larger answer is not used. */
const MAX_STATE_EVENTS = 20_000;
/** A big room's whole state and auth chain, as a `send_join` answer may bring (remote_membership.ts). */
const MAX_STATE_BYTES = 256 * 1024 * 1024;
/** Its IDs alone (MAX_STATE_EVENTS of them, about 50 bytes each), with room to spare. */
const MAX_STATE_IDS_BYTES = 4 * 1024 * 1024;

export class GapState {
  constructor(private readonly deps: FederatedRoomDeps) {}

  /** The state after `prevId` as `origin` has it, or undefined when it cannot be had (the event built on it is then rejected). */
  async stateAfter(origin: string, roomId: string, version: RoomVersion, prevId: string): Promise<StateIds | undefined> {
    try {
      const res = await this.deps.client.request(origin, {
        method: "GET",
        path: `/_matrix/federation/v1/state_ids/${enc(roomId)}?event_id=${enc(prevId)}`,
        maxBytes: MAX_STATE_IDS_BYTES,
      });
      const stateIds = stringList(res.json.pdu_ids);
      const chainIds = stringList(res.json.auth_chain_ids);
      if (res.status !== 200 || !stateIds || !chainIds || stateIds.length + chainIds.length > MAX_STATE_EVENTS) return undefined;
      const wanted = [...new Set([...stateIds, ...chainIds, prevId])];
      const stored = await this.deps.storage.roomDag.getPdus(wanted);
      const missing = wanted.filter((id) => !stored.has(id));
      const fetched = await this.#fetch(origin, roomId, version, prevId, missing);
      const { usable, rejected } = await this.#authorised(roomId, version, fetched, stored);
      // A state that lacks one of its events (not fetched, or not checkable) may lack a ban or the
      // power levels: nothing is judged on it. An event rejected on its auth events is no part of it.
      if (stateIds.some((id) => !stored.has(id) && !usable.has(id) && !rejected.has(id))) return undefined;
      await this.deps.remote.storeOutliers(roomId, [...usable].map(([eventId, pdu]) => ({ eventId, pdu })));
      const pdus = new Map<string, Pdu>();
      for (const [id, s] of stored) if (s.rejected === null) pdus.set(id, pduOf(s));
      for (const [id, pdu] of usable) pdus.set(id, pdu);
      const prev = pdus.get(prevId);
      if (!prev) return undefined;
      const state = new Map<string, string>();
      for (const id of stateIds) {
        const pdu = pdus.get(id);
        // An event rejected (here, or on its auth events) is no part of the state.
        if (pdu && typeof pdu.state_key === "string") state.set(stateKeyOf(pdu.type, pdu.state_key), id);
      }
      if (typeof prev.state_key === "string") state.set(stateKeyOf(prev.type, prev.state_key), prevId);
      return state;
    } catch {
      return undefined;
    }
  }

  /** The events `missing` names, checked (format, signatures, hashes), by ID. */
  async #fetch(origin: string, roomId: string, version: RoomVersion, prevId: string, missing: string[]): Promise<Map<string, Pdu>> {
    const out = new Map<string, Pdu>();
    const wanted = new Set(missing);
    const keep = (events: RemoteEvent[]) => {
      for (const e of events) if (wanted.has(e.eventId)) out.set(e.eventId, e.pdu);
    };
    if (missing.length > MAX_SINGLE_FETCHES) {
      const res = await this.deps.client.request(origin, {
        method: "GET",
        path: `/_matrix/federation/v1/state/${enc(roomId)}?event_id=${enc(prevId)}`,
        // The transport gives an answer this large time to arrive from a slow server.
        maxBytes: MAX_STATE_BYTES,
      });
      const raws = [...(Array.isArray(res.json.pdus) ? res.json.pdus : []), ...(Array.isArray(res.json.auth_chain) ? res.json.auth_chain : [])];
      if (res.status === 200) keep(await checkAll(this.deps.checkPdu, raws.slice(0, MAX_STATE_EVENTS), version));
    }
    for (const id of missing.filter((m) => !out.has(m)).slice(0, MAX_SINGLE_FETCHES + 1)) {
      const res = await this.deps.client.request(origin, { method: "GET", path: `/_matrix/federation/v1/event/${enc(id)}` });
      const raw = res.status === 200 && Array.isArray(res.json.pdus) ? (res.json.pdus[0] as unknown) : undefined;
      if (raw !== undefined) keep(await checkAll(this.deps.checkPdu, [raw], version));
    }
    return out;
  }

  /**
   * The fetched events that pass the auth rules against their own auth events (stored here, or
   * fetched and passing themselves), oldest first; the spec's checks on an outlier. `rejected`:
   * those that fail them, or name an auth event rejected; the rest (an auth event nowhere to be
   * had) are in neither.
   */
  async #authorised(
    roomId: string,
    version: RoomVersion,
    fetched: Map<string, Pdu>,
    stored: Map<string, StoredPdu>,
  ): Promise<{ usable: Map<string, Pdu>; rejected: Set<string> }> {
    const available = new Map<string, Pdu>();
    const rejected = new Set<string>();
    for (const [id, s] of stored) {
      if (s.rejected === null) available.set(id, pduOf(s));
      else rejected.add(id);
    }
    const authIds = [...new Set([...fetched.values()].flatMap((p) => p.auth_events))].filter((id) => !available.has(id) && !fetched.has(id));
    for (const [id, s] of await this.deps.storage.roomDag.getPdus(authIds)) {
      if (s.rejected === null) available.set(id, pduOf(s));
      else rejected.add(id);
    }
    // Room version 12 leaves the create event out of auth_events: the room's own is used.
    const roomCreate = await this.deps.storage.rooms.currentStateEvent(roomId, "m.room.create", "");
    const create = roomCreate ? pduOf(roomCreate) : [...available.values(), ...fetched.values()].find((p) => p.type === "m.room.create" && p.state_key === "");
    const verdict = checkAgainstAuthEvents(
      [...fetched].map(([eventId, pdu]) => ({ eventId, pdu })),
      { version, available, rejected, create, verifyServerSignature: (p, server) => isRecord(p.signatures[server]) },
    );
    return { usable: verdict.passed, rejected: verdict.rejected };
  }
}

function stringList(value: unknown): string[] | undefined {
  return Array.isArray(value) && value.every((v) => typeof v === "string") ? (value as string[]) : undefined;
}
