/**
 * Rooms as a DAG, for federation: each room's forward extremities and current state group,
 * immutable state groups (a delta on a parent, or a full map), and events known only as auth
 * events or rejected (outliers that never enter a timeline).
 *
 * State maps here are keyed by `stateKeyOf(type, state_key)` and hold event IDs.
 */
import type { NewEvent, RoomRecord } from "./rooms.js";

/** A forward extremity: an event nothing in the room points to yet. */
export interface Extremity {
  eventId: string;
  depth: number;
}

/** The DAG facts of a room, read under its lock. */
export interface RoomDagHead {
  roomVersion: string;
  /** NULL for a room from before federation: its tip is its only extremity. */
  extremities: Extremity[] | null;
  /** NULL for a room from before federation (its state is `current_state`). */
  stateGroup: string | null;
}

export interface NewStateGroup {
  id: string;
  roomId: string;
  /** The parent this is a delta on; NULL when `delta` is the whole map. */
  prevGroup: string | null;
  delta: Record<string, string>;
  /** Deltas between this group and a full map (0 for a full map). */
  chain: number;
}

/** An event's place in the DAG as stored with it. */
export interface EventDagRecord {
  eventId: string;
  roomId: string;
  streamOrdering: number;
  /** The state after the event; NULL for events from before federation. */
  stateGroup: string | null;
  outlier: boolean;
}

/** A PDU by ID, wherever it is kept. */
export interface StoredPdu {
  eventId: string;
  roomId: string;
  json: string;
  /** Why it was rejected, for events kept only to answer for them. */
  rejected: string | null;
  /** In a timeline here (not an outlier, nor state received with a join). */
  inTimeline: boolean;
  /** In the events table: in a timeline, or state received with a join. */
  inEvents: boolean;
  /** Soft-failed: outside the events table, but with the state after it known (events may build on it). */
  softFailed: boolean;
}

/** One entry of a current state change; `streamOrdering` is the event's own. */
export interface CurrentStateEntry {
  type: string;
  stateKey: string;
  eventId: string;
  streamOrdering: number;
  /** The member's membership after it, for `m.room.member`. */
  membership: string | null;
}

export interface RoomDagStore {
  /** Inside a transaction: holds the room against other writers (as `lockRoom`) and reads its head. */
  lockRoomDag(roomId: string): Promise<RoomDagHead | undefined>;
  /** Records the room's new extremities and current state group (inside its lock). */
  setRoomDag(roomId: string, extremities: readonly Extremity[], stateGroup: string | null): Promise<void>;

  insertStateGroup(group: NewStateGroup): Promise<void>;
  /** The deltas of a group and its ancestors, nearest first (the last has `prevGroup` NULL). */
  stateGroupChain(id: string): Promise<{ id: string; prevGroup: string | null; delta: Record<string, string>; chain: number }[]>;

  /** DAG records of events in the `events` table (unknown IDs are absent). */
  eventDagRecords(eventIds: readonly string[]): Promise<Map<string, EventDagRecord>>;
  /** PDUs by ID from the events table and the outliers (unknown IDs are absent). */
  getPdus(eventIds: readonly string[]): Promise<Map<string, StoredPdu>>;
  /** Keeps an event known only as an auth event, or a rejected one; a known ID is left alone. */
  insertOutlier(eventId: string, roomId: string, json: string, rejected: string | null, receivedTs: number): Promise<void>;

  /**
   * Keeps a soft-failed event with the state group after it (it never enters a timeline nor
   * current state); a known outlier with its ID (an auth event, or once rejected) becomes it.
   */
  insertSoftFailed(eventId: string, roomId: string, json: string, stateGroup: string, receivedTs: number): Promise<void>;
  /** The state groups of soft-failed events among `eventIds` (others are absent). */
  softFailedGroups(eventIds: readonly string[]): Promise<Map<string, string>>;

  /** Sets current state entries (and memberships) of a room, as a state resolution decided. */
  setCurrentState(roomId: string, entries: readonly CurrentStateEntry[]): Promise<void>;
  /** Creates a room record unless it exists (a room known from another server). */
  ensureRoom(room: RoomRecord): Promise<void>;
  /** Removes current state entries that a state resolution dropped. */
  removeCurrentState(roomId: string, keys: readonly (readonly [string, string])[]): Promise<void>;
  /** Joined members of the room on other servers than `localServer` (a local room answers none, cheaply). */
  remoteJoinedMembers(roomId: string, localServer: string): Promise<string[]>;
  /** The room's earliest timeline event here (the lowest position), if any. */
  oldestTimelineEvent(roomId: string): Promise<StoredPdu | undefined>;
  /**
   * Stores history fetched from another server below everything the events stream has, newest
   * first in `events` (each gets a lower position than the one before). Known IDs are skipped;
   * current state and memberships are not touched. Answers how many were stored.
   */
  insertBackfilled(events: readonly BackfilledEvent[]): Promise<number>;

  /** Remembers a redaction whose target is not here yet, to apply when the target arrives (a known pair is left alone). */
  addPendingRedaction(roomId: string, targetEventId: string, redactionEventId: string): Promise<void>;
  /** The redactions waiting for `targetEventId`, with the rooms they were received in. */
  pendingRedactions(targetEventId: string): Promise<{ roomId: string; redactionEventId: string }[]>;
  /** Forgets the redactions waiting for `targetEventId` (they have been considered). */
  deletePendingRedactions(targetEventId: string): Promise<void>;
}

/** A historic event to store below the events stream: a new event's row, without what makes it current. */
export type BackfilledEvent = Pick<NewEvent, "eventId" | "roomId" | "type" | "stateKey" | "sender" | "originServerTs" | "depth" | "json">;
