/**
 * What push-rule evaluation decided for each recipient of each event: the source of the
 * notification counts in `/sync` and of `/notifications` (and, with pushers, of what is pushed).
 */

export interface PushActionRecord {
  userId: string;
  roomId: string;
  eventId: string;
  streamOrdering: number;
  /** `main` for the main timeline, else the thread root's event ID. */
  threadId: string;
  /** The matching rule's actions, as JSON text. */
  actions: string;
  notify: boolean;
  highlight: boolean;
  ts: number;
}

export interface NotificationCounts {
  notify: number;
  highlight: number;
}

export interface RoomCounts extends NotificationCounts {
  /** Per thread (`main` included), for clients that asked for thread counts. */
  threads: Map<string, NotificationCounts>;
}

export interface NotificationRecord extends PushActionRecord {
  /** Whether the user's read receipt covers the event. */
  read: boolean;
}

export interface PushActionStore {
  /** Records actions (an event's, in its transaction); readers see them at once, and `settle` files them. */
  add(records: readonly PushActionRecord[]): Promise<void>;
  /**
   * Files the actions added so far where per-user reads find them cheaply: a batch of events'
   * rows at once, which is cheaper than each event's rows on its own (see migration 26).
   * What readers see is the same before and after. Returns how many rows moved.
   */
  settle(): Promise<number>;
  /**
   * Unread counts of `userId` in each room, for events at or below `upTo` after the user's
   * read receipts: an unthreaded receipt covers every thread, a threaded one its thread.
   * Without an unthreaded receipt they start at the user's current membership (the join), as
   * Synapse's `/sync` does, so the invite that brought the user in no longer counts.
   */
  counts(userId: string, roomIds: readonly string[], upTo: number): Promise<Map<string, RoomCounts>>;
  /**
   * Push badges, by user: the notifications after the read receipts across the user's joined
   * rooms, summed (the invite that brought them in still counts, as in Synapse's badge), plus
   * one per pending invite. Users with none are left out.
   */
  badges(userIds: readonly string[], upTo: number): Promise<Map<string, number>>;
  /** The user's notifications, newest first, below `before` (a stream position) when given. */
  notifications(userId: string, opts: { before?: number; limit: number; onlyHighlight: boolean }): Promise<NotificationRecord[]>;
  /**
   * A read receipt at stream position `upTo` makes the non-highlight notifications it covers
   * redundant: they go (as Synapse removes them), only in `threadId` for a threaded receipt.
   */
  forgetRead(userId: string, roomId: string, upTo: number, threadId: string | null): Promise<void>;
  /** Forgets actions older than `before` (ms); returns how many went. */
  prune(before: number): Promise<number>;
}
