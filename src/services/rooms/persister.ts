/**
 * The one path by which a local event enters a room: authorise it against the
 * room's current state, build and sign it, store it, wake sync. Reading the room's
 * head and state, then appending, happens in one transaction that holds the room's
 * lock, so another connection or process cannot attach a second event to the same head.
 */
import type { Config } from "../../config/config.js";
import { Errors, MatrixError } from "../../errors.js";
import {
  AuthError,
  authEventTypes,
  authStateKeys,
  buildEvent,
  BuildEventError,
  CanonicalJsonError,
  checkEventAuth,
  EventLimitError,
  EventTypes,
  MSC4354_MAX_STICKY_MS,
  pduOf,
  PowerLevels,
  redactsOf,
  roomIdOfEvent,
  ROOM_VERSIONS,
  type Pdu,
  type RoomVersion,
  type StateLookup,
} from "../../events/index.js";
import { stateKeyOf } from "../../storage/rooms.js";
import { stateLookup } from "./state_lookup.js";
import type { Storage, Stores } from "../../storage/interfaces.js";
import type { Clock } from "../clock.js";
import { BatchQueue, type ItemResult } from "../batch_queue.js";
import type { SigningKey } from "../signing_key.js";
import type { Notifier } from "../sync/notifier.js";
import type { Extremity } from "../../storage/room_dag.js";
import { RoomDag, type GroupRef } from "./dag.js";

export interface EventDraft {
  roomId: string;
  sender: string;
  type: string;
  stateKey?: string;
  content: Record<string, unknown>;
  redacts?: string;
  /**
   * The client transaction. The spec scopes a transaction ID to a device and an endpoint
   * (the request path), so `scope` names the endpoint, e.g. `["send", roomId, type]`; a
   * retry with the same scope and ID returns the first event instead of making another.
   */
  txn?: { deviceId: string; txnId: string; scope?: string[] };
  /** MSC4354: how long the event stays sticky. */
  stickyDurationMs?: number;
  /** Room version 12: the create event's timestamp, fixed in advance, as the room ID is its hash. */
  originServerTs?: number;
}

export interface PersistedEvent {
  eventId: string;
  streamOrdering: number;
  pdu: Pdu;
  /** "federation" for an event another server sent us (this server does not send it on). */
  origin?: "local" | "federation";
}

/** Things that must happen once an event is committed and visible; delayed events hook in here. */
export type PersistListener = (event: PersistedEvent, roomVersion: RoomVersion) => void | Promise<void>;

/** The rules of a room's version; 404 for a room that does not exist. */
function versionOf(roomId: string, versionId: string | undefined): RoomVersion {
  if (versionId === undefined) throw new MatrixError(404, "M_NOT_FOUND", "Unknown room");
  const version = ROOM_VERSIONS[versionId];
  if (!version) throw new MatrixError(500, "M_UNKNOWN", `Room ${roomId} has unknown version ${versionId}`);
  return version;
}

/** One draft's outcome in its transaction: the event, and whether it is new (not a retried transaction). */
interface Stored {
  event: PersistedEvent;
  fresh: boolean;
  version: RoomVersion;
}

/** Where the next event attaches: the room's forward extremities and its current state group. */
export interface RoomHead {
  extremities: Extremity[];
  /** NULL until the room's first event since federation came (its state is then `current_state`). */
  group: GroupRef | null;
}

/** At most this many prev_events on a new event, the deepest extremities first (as Synapse). */
const MAX_PREV_EVENTS = 10;

/**
 * Writes that belong to the event itself (a redaction's effect): they commit with it or not at all.
 * `before`, when given, answers the room's state as it was just before the event, for the keys
 * its auth rules read: always the create and power-levels events, unless it is the create event.
 */
export type PersistHook = (tx: Stores, event: PersistedEvent, roomVersion: RoomVersion, before?: StateLookup) => Promise<void>;

/** The idempotency key of a transaction: its ID, scoped to its endpoint when one is given. */
function txnKey(txn: { txnId: string; scope?: string[] }): string {
  return txn.scope === undefined ? txn.txnId : JSON.stringify([...txn.scope, txn.txnId]);
}

type Item = { draft: EventDraft; versionHint?: RoomVersion };
type Outcome = Stored | { error: MatrixError };

export class EventPersister {
  /**
   * Per lane, one batch at a time; see BatchQueue. A lane is a room, except on SQLite, whose one
   * connection serialises every write anyway: there every room shares one lane, so concurrent
   * sends into different rooms share a transaction (one commit) as sends into one room do.
   */
  readonly #queue = new BatchQueue<Item, PersistedEvent>((_lane, items) => this.#persistBatch(items));
  readonly #listeners: PersistListener[] = [];
  readonly #hooks: PersistHook[] = [];

  constructor(
    private readonly config: Config,
    private readonly storage: Storage,
    private readonly clock: Clock,
    /** Called when an event is signed, so tools that never sign need no key. */
    private readonly signingKey: () => SigningKey,
    private readonly notifier: Notifier,
    readonly dag: RoomDag = new RoomDag(),
  ) {}

  /** The room's head under its lock (`lockRoomDag`), with a room from before federation read from its tip. */
  async readHead(tx: Stores, roomId: string, stored: { extremities: Extremity[] | null; stateGroup: string | null }): Promise<RoomHead> {
    let group: GroupRef | null = null;
    if (stored.stateGroup !== null) group = { id: stored.stateGroup, chain: (await this.dag.groupState(tx, stored.stateGroup)).chain };
    if (stored.extremities !== null) return { extremities: stored.extremities, group };
    const tip = await tx.rooms.getTip(roomId);
    return { extremities: tip ? [{ eventId: tip.eventId, depth: tip.depth }] : [], group };
  }

  onPersisted(listener: PersistListener): void {
    this.#listeners.push(listener);
  }

  /** `hook` runs in each event's transaction, after the event is appended: local events and those from other servers alike. */
  inTransaction(hook: PersistHook): void {
    this.#hooks.push(hook);
  }

  /** Runs the `inTransaction` hooks for an event just appended through `tx` (here, or by the remote persister). */
  async afterAppend(tx: Stores, event: PersistedEvent, version: RoomVersion, before?: StateLookup): Promise<void> {
    for (const hook of this.#hooks) await hook(tx, event, version, before);
  }

  async roomVersion(roomId: string, stores: Stores = this.storage): Promise<RoomVersion> {
    return versionOf(roomId, (await stores.rooms.getRoom(roomId))?.roomVersion);
  }

  /** Builds and signs, turning bad input into the Client-Server API's errors. */
  #build(...args: Parameters<typeof buildEvent>): ReturnType<typeof buildEvent> {
    try {
      return buildEvent(...args);
    } catch (err) {
      if (err instanceof EventLimitError) {
        if (err.field === "event") throw new MatrixError(413, "M_TOO_LARGE", err.message);
        throw new MatrixError(400, "M_BAD_JSON", err.message);
      }
      if (err instanceof CanonicalJsonError) throw new MatrixError(400, "M_BAD_JSON", `Content is not canonical JSON: ${err.message}`);
      if (err instanceof BuildEventError) throw new MatrixError(400, "M_BAD_JSON", err.message);
      throw err;
    }
  }

  #signer() {
    const key = this.signingKey();
    return { serverName: this.config.serverName, keyId: key.keyId, privateKey: key.privateKey };
  }

  /** Builds and signs a draft as the next event after `tip`. */
  #buildDraft(
    draft: EventDraft,
    version: RoomVersion,
    authEvents: string[],
    prev: readonly Extremity[],
  ): { eventId: string; pdu: Pdu } {
    return this.#build(
      {
        version,
        roomId: draft.roomId,
        sender: draft.sender,
        type: draft.type,
        stateKey: draft.stateKey,
        content: draft.content,
        prevEvents: prev.map((e) => e.eventId),
        authEvents,
        depth: Math.max(0, ...prev.map((e) => e.depth)) + 1,
        originServerTs: draft.originServerTs ?? this.clock.now(),
        redacts: draft.redacts,
        sticky: draft.stickyDurationMs === undefined ? undefined : { duration_ms: draft.stickyDurationMs },
      },
      this.#signer(),
    );
  }

  /**
   * Checks, storing nothing, that `drafts` would all be accepted, in order, as the first
   * events of a new room. `createRoom` calls it first so that a request whose initial
   * state breaks the rules fails with 400 M_INVALID_ROOM_STATE and leaves no half-made
   * room behind. Bad content fails as `persist` would fail (M_BAD_JSON, M_TOO_LARGE).
   */
  checkNewRoom(drafts: EventDraft[], version: RoomVersion): void {
    const state = new Map<string, { eventId: string; pdu: Pdu }>();
    let tip: Extremity[] = [];
    for (const draft of drafts) {
      const authEvents = authEventTypes(draft.type, draft.stateKey, draft.sender, draft.content, version)
        .map(([t, k]) => state.get(stateKeyOf(t, k))?.eventId)
        .filter((id): id is string => id !== undefined);
      const { eventId, pdu } = this.#buildDraft(draft, version, authEvents, tip);
      try {
        checkEventAuth(pdu, (t, k) => state.get(stateKeyOf(t, k))?.pdu, version);
      } catch (err) {
        if (err instanceof AuthError) {
          const what = draft.stateKey === undefined ? draft.type : `${draft.type} (state key ${JSON.stringify(draft.stateKey)})`;
          throw new MatrixError(400, "M_INVALID_ROOM_STATE", `The room's initial ${what} would be rejected: ${err.message}`);
        }
        throw err;
      }
      if (draft.stateKey !== undefined) state.set(stateKeyOf(draft.type, draft.stateKey), { eventId, pdu });
      tip = [{ eventId, depth: pdu.depth }];
    }
  }

  /**
   * The redaction check that the room versions' "Redactions" section leaves to the server
   * (it is not an auth rule): whatever the endpoint an `m.room.redaction` comes from, its
   * sender must have the `redact` power level or be the sender of the event it redacts.
   * An unknown target is let through, as it strips nothing.
   */
  async #checkRedaction(tx: Stores, pdu: Pdu, state: StateLookup, version: RoomVersion): Promise<void> {
    const targetId = redactsOf(pdu, version);
    if (targetId === undefined) return;
    const target = await tx.rooms.getEvent(targetId);
    if (!target) return;
    if (target.roomId !== pdu.room_id) throw Errors.invalidParam("Cannot redact an event from a different room");
    if (target.sender === pdu.sender) return;
    const levels = PowerLevels.fromState(state, version);
    const mine = levels.userLevel(pdu.sender);
    if (mine < levels.redact) {
      throw Errors.forbidden(
        `power level too low to redact another user's event (needs the redact level ${levels.redact}, has ${mine})`,
      );
    }
  }

  /** Authorises, builds, stores and announces one event. Throws 403 M_FORBIDDEN when the rules say no. */
  persist(draft: EventDraft, versionHint?: RoomVersion): Promise<PersistedEvent> {
    return this.#queue.run(this.storage.backend === "sqlite" ? "" : draft.roomId, { draft, versionHint });
  }

  /**
   * The events waiting in one lane, in one transaction that holds each of their rooms' row
   * locks, taken in room ID order so that two batches never wait for each other in a cycle. The
   * in-process queue keeps this process's sends to a room from each holding a pooled connection
   * while they wait for that lock; correctness comes from the lock.
   */
  async #persistBatch(items: Item[]): Promise<ItemResult<PersistedEvent>[]> {
    const rooms = [...new Set(items.map((i) => i.draft.roomId))].sort();
    const outcomes = await this.storage.transaction(async (tx): Promise<Outcome[]> => {
      const out: Outcome[] = [];
      for (const roomId of rooms) {
        // The lock answers the room's version and head too, which saves each event reads.
        const stored = await tx.roomDag.lockRoomDag(roomId);
        const head = stored && (await this.readHead(tx, roomId, stored));
        let moved = false;
        for (const [k, { draft, versionHint }] of items.entries()) {
          if (draft.roomId !== roomId) continue;
          try {
            const version = versionHint ?? versionOf(roomId, stored?.roomVersion);
            if (!head) throw new MatrixError(404, "M_NOT_FOUND", "Unknown room");
            const done = await this.#persistIn(tx, draft, head, version);
            out[k] = done;
            moved ||= done.fresh;
          } catch (err) {
            // Refused by the rules or for its content, before it wrote anything: the rest go on.
            if (err instanceof MatrixError) out[k] = { error: err };
            else throw err;
          }
        }
        if (moved && head) await tx.roomDag.setRoomDag(roomId, head.extremities, head.group?.id ?? null);
      }
      return out;
    });
    // A listener that fails fails its own room's sends (as when each room had its transaction),
    // never another room's, and never keeps the rooms after it unannounced.
    const failed = new Map<string, unknown>();
    for (const roomId of rooms) {
      const fresh = outcomes.filter((o, k): o is Stored => items[k]!.draft.roomId === roomId && "event" in o && o.fresh);
      if (fresh.length > 0) await this.announce(fresh.map((o) => o.event), fresh[0]!.version).catch((err: unknown) => failed.set(roomId, err));
    }
    return outcomes.map((o, k) => {
      if ("error" in o) return { error: o.error };
      const roomId = items[k]!.draft.roomId;
      return failed.has(roomId) ? { error: failed.get(roomId) } : { value: o.event };
    });
  }

  /**
   * Stores a new room's first events, after `setUp` (which makes the room record), in one
   * transaction: a failure leaves no half-made room behind.
   */
  async persistNewRoom(drafts: EventDraft[], version: RoomVersion, setUp: (tx: Stores) => Promise<void>): Promise<PersistedEvent[]> {
    const events = await this.storage.transaction(async (tx) => {
      await setUp(tx);
      const head: RoomHead = { extremities: [], group: null };
      const out: PersistedEvent[] = [];
      for (const draft of drafts) out.push((await this.#persistIn(tx, draft, head, version)).event);
      const roomId = drafts[0]?.roomId;
      if (roomId !== undefined) await tx.roomDag.setRoomDag(roomId, head.extremities, head.group?.id ?? null);
      return out;
    });
    await this.announce(events, version);
    return events;
  }

  /** Once committed and visible to readers (the transaction resolves then): tell listeners, wake sync. */
  async announce(events: PersistedEvent[], version: RoomVersion): Promise<void> {
    const last = events[events.length - 1];
    if (!last) return;
    for (const event of events) for (const listener of this.#listeners) await listener(event, version);
    const users = events.flatMap(({ pdu }) => (pdu.type === "m.room.member" && pdu.state_key ? [pdu.state_key] : []));
    this.notifier.notify({ roomIds: [roomIdOfEvent(last.pdu, last.eventId)], userIds: users });
  }

  /**
   * The state group after a local state event: its key set on the current group. A room from
   * before federation gets its first group from `current_state` (read before the event lands).
   */
  async #groupWith(tx: Stores, roomId: string, current: GroupRef | null, type: string, stateKey: string, eventId: string): Promise<GroupRef> {
    const base = current ? { ref: current, state: (await this.dag.groupState(tx, current.id)).state } : null;
    const next = new Map(base ? base.state : await this.dag.currentStateIds(tx, roomId));
    next.set(stateKeyOf(type, stateKey), eventId);
    return this.dag.saveGroup(tx, roomId, next, base);
  }

  /** Persists one draft at `head`, and moves `head` on to it. */
  async #persistIn(
    tx: Stores,
    draft: EventDraft,
    head: RoomHead,
    versionHint?: RoomVersion,
  ): Promise<Stored> {
    const version = versionHint ?? (await this.roomVersion(draft.roomId, tx));
    // Inside the room's lock, so two retries of one transaction cannot both create an event.
    if (draft.txn) {
      const existing = await tx.rooms.getEventByTxn(draft.sender, draft.txn.deviceId, txnKey(draft.txn));
      const stored = existing ? await tx.rooms.getEvent(existing) : undefined;
      if (stored) return { event: { eventId: stored.eventId, streamOrdering: stored.streamOrdering, pdu: pduOf(stored) }, fresh: false, version };
    }
    // Only the state the auth rules look at, plus the entry this event replaces: reading a
    // large room's whole state for every event would make each send cost O(room state).
    const authKeys = authEventTypes(draft.type, draft.stateKey, draft.sender, draft.content, version);
    const readKeys = authStateKeys(draft.type, draft.stateKey, draft.sender, draft.content, version);
    const wanted = draft.stateKey !== undefined ? [...readKeys, [draft.type, draft.stateKey] as const] : readKeys;
    const state = await tx.rooms.currentStateEvents(draft.roomId, wanted);
    const lookup = stateLookup(state);
    const prev = [...head.extremities].sort((a, b) => b.depth - a.depth).slice(0, MAX_PREV_EVENTS);
    const authEvents = authKeys
      .map(([t, k]) => state.get(stateKeyOf(t, k))?.eventId)
      .filter((id): id is string => id !== undefined);
    const { eventId, pdu } = this.#buildDraft(draft, version, authEvents, prev);
    try {
      checkEventAuth(pdu, lookup, version);
    } catch (err) {
      if (err instanceof AuthError) throw new MatrixError(403, "M_FORBIDDEN", err.message);
      throw err;
    }
    if (pdu.type === EventTypes.redaction) await this.#checkRedaction(tx, pdu, lookup, version);
    // prev_content lets clients show "changed the topic from …"; it is unsigned, so it may be added now.
    const replaced = draft.stateKey !== undefined ? state.get(stateKeyOf(draft.type, draft.stateKey)) : undefined;
    if (replaced) {
      const prev = pduOf(replaced);
      pdu.unsigned = { replaces_state: replaced.eventId, prev_content: prev.content, prev_sender: prev.sender };
    }
    const json = JSON.stringify(pdu);
    const group = draft.stateKey === undefined ? head.group : await this.#groupWith(tx, draft.roomId, head.group, draft.type, draft.stateKey, eventId);
    const streamOrdering = await tx.rooms.appendEvent({
      eventId,
      roomId: draft.roomId,
      type: draft.type,
      stateKey: draft.stateKey ?? null,
      sender: draft.sender,
      originServerTs: pdu.origin_server_ts,
      depth: pdu.depth,
      json,
      membership: draft.type === "m.room.member" && typeof draft.content.membership === "string" ? draft.content.membership : null,
      txn: draft.txn && {
        userId: draft.sender,
        deviceId: draft.txn.deviceId,
        txnId: draft.txn.txnId,
        key: txnKey(draft.txn),
      },
      // MSC4354: sticky from the moment it is made, for at most an hour.
      stickyUntil:
        draft.stickyDurationMs === undefined ? undefined : pdu.origin_server_ts + Math.min(draft.stickyDurationMs, MSC4354_MAX_STICKY_MS),
      stateGroup: group?.id ?? null,
    });
    head.extremities = [{ eventId, depth: pdu.depth }];
    head.group = group;
    const event = { eventId, streamOrdering, pdu };
    await this.afterAppend(tx, event, version, lookup);
    return { event, fresh: true, version };
  }
}
