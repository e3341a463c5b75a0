/** Per-user data that sync delivers: account data, filters and read receipts. */

export interface AccountDataChange {
  roomId: string | null;
  type: string;
  content: Record<string, unknown>;
  streamId: number;
}

export interface AccountDataStore {
  /** Stores the content and returns its new stream ID. */
  set(userId: string, roomId: string | null, type: string, content: Record<string, unknown>): Promise<number>;
  get(userId: string, roomId: string | null, type: string): Promise<Record<string, unknown> | undefined>;
  /** Everything that changed in (from, to]; with from = 0, everything. */
  changes(userId: string, from: number, to: number): Promise<AccountDataChange[]>;
}

export interface FilterStore {
  create(userId: string, filterJson: string): Promise<string>;
  get(userId: string, filterId: string): Promise<string | undefined>;
}

export interface Receipt {
  roomId: string;
  userId: string;
  receiptType: string;
  threadId: string | null;
  eventId: string;
  ts: number;
  streamId: number;
}

export interface ReceiptStore {
  /** Moves the user's receipt of this type (and thread) to the event; returns its stream ID. */
  set(receipt: Omit<Receipt, "streamId">): Promise<number>;
  /** Receipts in the rooms that changed in (from, to]; with from = 0, all of them. */
  changes(roomIds: string[], from: number, to: number): Promise<Receipt[]>;
}
