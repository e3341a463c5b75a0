/**
 * HTTP pushers (spec: Push Notifications): where to push a user's notifications, and how far
 * each pusher has pushed. A pusher is identified by (app ID, pushkey, user); the process that
 * delivers for it holds it by a lease (`claimedBy` until `leaseUntil`), one process at a time.
 */

export interface PusherRecord {
  userId: string;
  appId: string;
  pushkey: string;
  kind: string;
  appDisplayName: string;
  deviceDisplayName: string;
  profileTag: string | null;
  lang: string;
  /** The pusher's `data`, as the client gave it (`url` included). */
  data: Record<string, unknown>;
  /** The device that set it; deleting the device deletes the pusher. */
  deviceId: string | null;
  createdTs: number;
  /** The stream position of the last notification pushed (or skipped). */
  lastStreamOrdering: number;
  lastSuccessTs: number | null;
  /** When pushing to the gateway started failing, while it is. */
  failingSince: number | null;
  claimedBy: string | null;
  leaseUntil: number | null;
}

export type NewPusher = Omit<PusherRecord, "lastSuccessTs" | "failingSince" | "claimedBy" | "leaseUntil">;

export interface PusherKey {
  appId: string;
  pushkey: string;
  userId: string;
}

/** A claim on pushers: who delivers for them, and until when that holds if it never says more. */
export interface PusherClaim {
  worker: string;
  leaseUntil: number;
  /** The workers alive now: claims of any other worker are void. */
  live: readonly string[];
  now: number;
}

/** A user's badge (unread count), and when it was read, in microseconds since the epoch. */
export interface Badge {
  count: number;
  readUs: number;
}

/**
 * How far a pusher got: it moves past `streamOrdering` (never backwards), records a success at
 * `successTs` (which also ends a failure) when given, and the badge the gateway was last sent
 * when given. Only while `worker` holds the pusher.
 */
export interface PusherProgress {
  key: PusherKey;
  worker: string;
  streamOrdering: number;
  successTs: number | null;
  /** The badge the pushes carried; recorded unless a later-read one is. */
  badge?: Badge;
}

/** A notification to push: a push action with `notify`. */
export interface PendingPush {
  roomId: string;
  eventId: string;
  streamOrdering: number;
  actions: string;
  ts: number;
  /** The user has read it since (a read receipt in the room covers it): nothing to push. */
  read: boolean;
}

export interface PusherStore {
  /**
   * Creates the pusher, or updates the one with its key (keeping any claim on it). Unless
   * `append`, also deletes the pushers of other users with the same app ID and pushkey.
   */
  set(pusher: NewPusher, append: boolean): Promise<void>;
  /** Deletes one pusher; false when there was none. */
  delete(key: PusherKey): Promise<boolean>;
  get(key: PusherKey): Promise<PusherRecord | undefined>;
  listOf(userId: string): Promise<PusherRecord[]>;
  /** The pushers of these users, whoever holds them. */
  ofUsers(userIds: readonly string[]): Promise<PusherRecord[]>;
  /**
   * Claims the given pushers, each only if no live worker holds an unexpired claim on it (or
   * `claim.worker` already does); resolves to the ones claimed.
   */
  claim(keys: readonly PusherKey[], claim: PusherClaim): Promise<PusherRecord[]>;
  /**
   * Claims up to `limit` pushers that have notifications to push and that nobody holds; rows
   * another process is claiming at this moment are skipped, not waited for.
   */
  claimPending(claim: PusherClaim, limit: number): Promise<PusherRecord[]>;
  /** Extends the leases `worker` holds on these users' pushers. */
  renew(worker: string, userIds: readonly string[], leaseUntil: number): Promise<void>;
  /** Gives up `worker`'s claims: the given pushers, or all it holds. */
  release(worker: string, keys?: readonly PusherKey[]): Promise<void>;
  /** The user's notifications after `after`, oldest first, each saying whether the user has read it since. */
  pending(userId: string, after: number, limit: number): Promise<PendingPush[]>;
  /** Those of the given events that notified the user and that the user has not read, oldest first. */
  pendingEvents(userId: string, eventIds: readonly string[]): Promise<PendingPush[]>;
  /**
   * Records the progress of several pushers at once, in one transaction; one answer each, in
   * order: false when that pusher is gone or its worker no longer holds it, so the caller stops
   * pushing for it.
   */
  advance(progress: readonly PusherProgress[]): Promise<boolean[]>;
  /**
   * Records `badge` (read at `badge.readUs`) as the last one sent to the pusher's gateway,
   * whoever holds it; false when that was already the last one, when a badge read later is
   * recorded, or when the pusher is gone: then there is nothing new to send.
   */
  noteBadge(key: PusherKey, badge: Badge): Promise<boolean>;
  /** Records when pushing started failing (`null`: it no longer is). */
  setFailingSince(key: PusherKey, worker: string, since: number | null): Promise<void>;
}
