/**
 * What the room core needs from storage. Room history on one server is a
 * single chain per room, so the state at any point is "the latest state event
 * per (type, state_key) at or before a stream position".
 */

/** A persisted event with its place in the server-wide stream. */
export interface StoredEvent {
  streamOrdering: number;
  eventId: string;
  roomId: string;
  type: string;
  stateKey: string | null;
  sender: string;
  originServerTs: number;
  depth: number;
  /** The PDU as JSON text (already redacted, when `redactedBy` is set). */
  json: string;
  redactedBy: string | null;
  /** Who sent it with which transaction ID, so the sender alone sees `unsigned.transaction_id`. */
  txn: { deviceId: string; txnId: string } | null;
}

export interface NewEvent {
  eventId: string;
  roomId: string;
  type: string;
  stateKey: string | null;
  sender: string;
  originServerTs: number;
  depth: number;
  json: string;
  /** For m.room.member: the target's membership after this event. */
  membership: string | null;
  /**
   * The client transaction that sent it. `key` is what idempotency is checked on (the
   * transaction ID scoped to its endpoint, see `getEventByTxn`); it defaults to `txnId`.
   */
  txn?: { userId: string; deviceId: string; txnId: string; key?: string };
  /** MSC4354: a sticky event stays sticky until this time (ms since the epoch). */
  stickyUntil?: number;
  /** Federation: the state group after the event (see room_dag.ts). */
  stateGroup?: string | null;
  /** Federation: state received with a join, never shown in a timeline. */
  outlier?: boolean;
  /**
   * False when the event's place in current state is decided by a state resolution (the
   * caller writes it with `RoomDagStore.setCurrentState`); defaults to true.
   */
  updatesCurrentState?: boolean;
}

export interface RoomRecord {
  roomId: string;
  roomVersion: string;
  creator: string;
  createdTs: number;
  isPublic: boolean;
}

export interface MembershipRecord {
  roomId: string;
  userId: string;
  membership: string;
  eventId: string;
  streamOrdering: number;
}

/** The newest event of a room: where the next event attaches. */
export interface RoomTip {
  eventId: string;
  depth: number;
  streamOrdering: number;
}

export type StateMap = Map<string, StoredEvent>;

/** Below every position: history fetched from other servers is stored at negative positions. */
export const HISTORY_FLOOR = -Number.MAX_SAFE_INTEGER;

/** Key of a state map entry. */
export const stateKeyOf = (type: string, stateKey: string) => `${type}\u0000${stateKey}`;

export interface RoomStore {
  createRoom(room: RoomRecord): Promise<void>;
  getRoom(roomId: string): Promise<RoomRecord | undefined>;
  /**
   * Inside a transaction: holds the room against other writers until it ends (a row lock on
   * PostgreSQL; SQLite's write transaction already excludes them). False for an unknown room.
   */
  lockRoom(roomId: string): Promise<boolean>;
  /** `lockRoom`, answering the room's version ID (undefined for an unknown room): one round trip for both. */
  lockRoomVersion(roomId: string): Promise<string | undefined>;
  setRoomPublic(roomId: string, isPublic: boolean): Promise<void>;

  /**
   * Appends an event and updates current state and memberships, atomically.
   * Returns its stream ordering.
   */
  appendEvent(event: NewEvent): Promise<number>;
  getTip(roomId: string): Promise<RoomTip | undefined>;
  getEvent(eventId: string): Promise<StoredEvent | undefined>;
  /** The event a user's device already sent with this transaction key (`NewEvent.txn.key`), if any. */
  getEventByTxn(userId: string, deviceId: string, key: string): Promise<string | undefined>;
  /** Replaces an event's JSON with its redacted form and records the redaction. */
  redactEvent(eventId: string, redactedJson: string, redactedBy: string): Promise<void>;

  /** Current state of a room. */
  currentState(roomId: string): Promise<StateMap>;
  /** The current state events at the given keys (missing keys are absent from the map). */
  currentStateEvents(roomId: string, keys: readonly (readonly [string, string])[]): Promise<StateMap>;
  /** One current state event. */
  currentStateEvent(roomId: string, type: string, stateKey: string): Promise<StoredEvent | undefined>;
  /** State after the event at `streamOrdering` (inclusive) in that room. */
  stateAt(roomId: string, streamOrdering: number): Promise<StateMap>;
  /**
   * The state that changed in (from, to]: for each (type, state_key) set in that range,
   * the last event that set it. Empty when `to <= from`.
   */
  stateDelta(roomId: string, from: number, to: number): Promise<StateMap>;

  /** Events of a room with stream ordering in (from, to], oldest first, at most `limit` (newest ones kept). */
  eventsBetween(roomId: string, from: number, to: number, limit: number): Promise<{ events: StoredEvent[]; limited: boolean }>;
  /**
   * `eventsBetween` for several rooms at once (one round trip on PostgreSQL): per room, the
   * newest `limit` events of (from, to], oldest first, and whether more exist.
   */
  eventsBetweenMany(
    roomIds: readonly string[],
    from: number,
    to: number,
    limit: number,
  ): Promise<Map<string, { events: StoredEvent[]; limited: boolean }>>;
  /** Pagination: up to `limit` events before `before` (exclusive) going back, or after `after` going forward. */
  paginate(roomId: string, from: number, dir: "b" | "f", limit: number, to?: number): Promise<StoredEvent[]>;
  /**
   * MSC4354: the room's events in (from, to] that are still sticky at `now` and not
   * redacted, oldest first.
   */
  liveStickyEvents(roomId: string, from: number, to: number, now: number): Promise<StoredEvent[]>;
  /** `liveStickyEvents` for several rooms at once, oldest first. */
  liveStickyEventsMany(roomIds: readonly string[], from: number, to: number, now: number): Promise<StoredEvent[]>;

  /** Several events at once (unknown IDs are absent). */
  getEvents(eventIds: readonly string[]): Promise<StoredEvent[]>;
  /**
   * Per room, the stream ordering of its latest event of one of `types` at or below the room's
   * cap (`caps`: [roomId, cap] pairs); rooms with none are absent. One round trip for all rooms.
   */
  latestOfTypes(caps: readonly (readonly [string, number])[], types: readonly string[]): Promise<Map<string, number>>;
  /**
   * Current state of several rooms at once: every event of the `types` (any state key) and
   * those at the exact `keys` ([type, state_key] pairs).
   */
  currentStateMany(
    roomIds: readonly string[],
    types: readonly string[],
    keys: readonly (readonly [string, string])[],
  ): Promise<StoredEvent[]>;
  /** The rooms the user has forgotten. */
  forgottenRooms(userId: string): Promise<string[]>;

  membership(roomId: string, userId: string): Promise<MembershipRecord | undefined>;
  /** A user's current memberships, in every room. */
  membershipsOf(userId: string): Promise<MembershipRecord[]>;
  /** Current membership records of several rooms (every membership), in one query. */
  membershipsIn(roomIds: readonly string[]): Promise<MembershipRecord[]>;
  /** Current members of a room with the given membership. */
  membersOf(roomId: string, membership: string): Promise<MembershipRecord[]>;
  /** Membership changes in (from, to] of the user (in any room) and of anyone in `roomIds`, oldest first. */
  membershipChangesAround(userId: string, roomIds: readonly string[], from: number, to: number): Promise<MembershipRecord[]>;
  /** The current `join` memberships of these users in these rooms. */
  joinedAmong(userIds: readonly string[], roomIds: readonly string[]): Promise<MembershipRecord[]>;
  /** Membership records of a user that changed in (from, to]. */
  membershipChanges(userId: string, from: number, to: number): Promise<MembershipRecord[]>;
  /** Whether the user's membership of the room was ever `join` at or before position `upTo`. */
  everJoined(userId: string, roomId: string, upTo: number): Promise<boolean>;
  /** Rooms, among `roomIds`, that have any event in (from, to]. */
  roomsWithEventsBetween(roomIds: string[], from: number, to: number): Promise<string[]>;

  forgetRoom(userId: string, roomId: string): Promise<void>;
  isForgotten(userId: string, roomId: string): Promise<boolean>;

  setAlias(alias: string, roomId: string, creator: string): Promise<boolean>;
  getAlias(alias: string): Promise<{ roomId: string; creator: string } | undefined>;
  deleteAlias(alias: string): Promise<boolean>;
  aliasesOf(roomId: string): Promise<string[]>;
}
