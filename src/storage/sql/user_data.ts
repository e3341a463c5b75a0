/** Account data, filters and read receipts: one set of queries for both dialects. */
import type { AccountDataChange, AccountDataStore, FilterStore, Receipt, ReceiptStore } from "../user_data.js";
import { inJsonList, sql, type Executor } from "./executor.js";

/** Global account data is stored under room_id "" so that the primary key covers it. */
const GLOBAL = "";

export class SqlAccountDataStore implements AccountDataStore {
  constructor(private readonly db: Executor) {}

  set(userId: string, roomId: string | null, type: string, content: Record<string, unknown>): Promise<number> {
    return this.db.transaction(async (tx) => {
      const id = await tx.nextPosition("account_data");
      await tx.run(
        `INSERT INTO account_data (user_id, room_id, type, content, stream_id) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id`,
        [userId, roomId ?? GLOBAL, type, JSON.stringify(content), id],
      );
      return id;
    });
  }

  async get(userId: string, roomId: string | null, type: string) {
    const row = await this.db.get<{ content: string }>("SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?", [
      userId,
      roomId ?? GLOBAL,
      type,
    ]);
    return row && (JSON.parse(row.content) as Record<string, unknown>);
  }

  async changes(userId: string, from: number, to: number): Promise<AccountDataChange[]> {
    if (to <= from) return [];
    const rows = await this.db.all<{ room_id: string; type: string; content: string; stream_id: number }>(
      "SELECT room_id, type, content, stream_id FROM account_data WHERE user_id = ? AND stream_id > ? AND stream_id <= ? ORDER BY stream_id",
      [userId, from, to],
    );
    return rows.map((r) => ({
      roomId: r.room_id === GLOBAL ? null : r.room_id,
      type: r.type,
      content: JSON.parse(r.content) as Record<string, unknown>,
      streamId: r.stream_id,
    }));
  }
}

export class SqlFilterStore implements FilterStore {
  constructor(private readonly db: Executor) {}

  async create(userId: string, filterJson: string): Promise<string> {
    // The next ID per user in one statement; two creations racing for one ID: the loser tries the next.
    for (;;) {
      const row = await this.db.get<{ filter_id: number }>(
        `INSERT INTO filters (user_id, filter_id, json)
         SELECT ?, COALESCE(MAX(filter_id), -1) + 1, ? FROM filters WHERE user_id = ?
         ON CONFLICT DO NOTHING RETURNING filter_id`,
        [userId, filterJson, userId],
      );
      if (row) return String(row.filter_id);
    }
  }

  async get(userId: string, filterId: string): Promise<string | undefined> {
    if (!/^[0-9]{1,15}$/.test(filterId)) return undefined;
    const row = await this.db.get<{ json: string }>("SELECT json FROM filters WHERE user_id = ? AND filter_id = ?", [userId, Number(filterId)]);
    return row?.json;
  }
}

interface ReceiptRow {
  room_id: string;
  user_id: string;
  receipt_type: string;
  thread_id: string;
  event_id: string;
  ts: number;
  stream_id: number;
}

const RECEIPT_CHANGES = sql`SELECT * FROM receipts WHERE ${inJsonList("room_id")} AND stream_id > ? AND stream_id <= ? ORDER BY stream_id`;

export class SqlReceiptStore implements ReceiptStore {
  constructor(private readonly db: Executor) {}

  set(r: Omit<Receipt, "streamId">): Promise<number> {
    return this.db.transaction(async (tx) => {
      const id = await tx.nextPosition("receipts");
      await tx.run(
        `INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_id) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (room_id, receipt_type, user_id, thread_id)
         DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, stream_id = excluded.stream_id`,
        [r.roomId, r.userId, r.receiptType, r.threadId ?? "", r.eventId, r.ts, id],
      );
      return id;
    });
  }

  async changes(roomIds: string[], from: number, to: number): Promise<Receipt[]> {
    if (roomIds.length === 0 || to <= from) return [];
    const rows = await this.db.all<ReceiptRow>(RECEIPT_CHANGES, [JSON.stringify(roomIds), from, to]);
    return rows.map((r) => ({
      roomId: r.room_id,
      userId: r.user_id,
      receiptType: r.receipt_type,
      threadId: r.thread_id === "" ? null : r.thread_id,
      eventId: r.event_id,
      ts: r.ts,
      streamId: r.stream_id,
    }));
  }
}
