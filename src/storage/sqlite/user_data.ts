import type Database from "better-sqlite3";
import type { AccountDataChange, AccountDataStore, FilterStore, Receipt, ReceiptStore } from "../user_data.js";

/** Global account data is stored under room_id "" so that the primary key covers it. */
const GLOBAL = "";

export class SqliteAccountDataStore implements AccountDataStore {
  readonly #set: (userId: string, roomId: string, type: string, content: string) => number;
  readonly #s;

  constructor(db: Database.Database) {
    const next = db.prepare<[], { m: number | null }>("SELECT MAX(stream_id) AS m FROM account_data");
    const upsert = db.prepare(
      `INSERT INTO account_data (user_id, room_id, type, content, stream_id) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id`,
    );
    this.#set = db.transaction((userId: string, roomId: string, type: string, content: string) => {
      const id = (next.get()?.m ?? 0) + 1;
      upsert.run(userId, roomId, type, content, id);
      return id;
    });
    // Prepared once: /sync reads these on every request.
    this.#s = {
      max: next,
      get: db.prepare<[string, string, string], { content: string }>(
        "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?",
      ),
      changes: db.prepare<[string, number, number], { room_id: string; type: string; content: string; stream_id: number }>(
        "SELECT * FROM account_data WHERE user_id = ? AND stream_id > ? AND stream_id <= ? ORDER BY stream_id",
      ),
    };
  }

  async set(userId: string, roomId: string | null, type: string, content: Record<string, unknown>): Promise<number> {
    return this.#set(userId, roomId ?? GLOBAL, type, JSON.stringify(content));
  }

  async get(userId: string, roomId: string | null, type: string) {
    const row = this.#s.get.get(userId, roomId ?? GLOBAL, type);
    return row && (JSON.parse(row.content) as Record<string, unknown>);
  }

  async changes(userId: string, from: number, to: number): Promise<AccountDataChange[]> {
    return this.#s.changes.all(userId, from, to).map((r) => ({
      roomId: r.room_id === GLOBAL ? null : r.room_id,
      type: r.type,
      content: JSON.parse(r.content) as Record<string, unknown>,
      streamId: r.stream_id,
    }));
  }

  async maxStreamId(): Promise<number> {
    return this.#s.max.get()?.m ?? 0;
  }
}

export class SqliteFilterStore implements FilterStore {
  readonly #create: (userId: string, json: string) => number;

  constructor(private readonly db: Database.Database) {
    const next = db.prepare<[string], { m: number | null }>("SELECT MAX(filter_id) AS m FROM filters WHERE user_id = ?");
    const insert = db.prepare("INSERT INTO filters (user_id, filter_id, json) VALUES (?, ?, ?)");
    this.#create = db.transaction((userId: string, json: string) => {
      const id = (next.get(userId)?.m ?? -1) + 1;
      insert.run(userId, id, json);
      return id;
    });
  }

  async create(userId: string, filterJson: string): Promise<string> {
    return String(this.#create(userId, filterJson));
  }

  async get(userId: string, filterId: string): Promise<string | undefined> {
    if (!/^[0-9]{1,15}$/.test(filterId)) return undefined;
    return this.db
      .prepare<[string, number], { json: string }>("SELECT json FROM filters WHERE user_id = ? AND filter_id = ?")
      .get(userId, Number(filterId))?.json;
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

export class SqliteReceiptStore implements ReceiptStore {
  readonly #set: (r: Omit<Receipt, "streamId">) => number;
  readonly #s;

  constructor(db: Database.Database) {
    const next = db.prepare<[], { m: number | null }>("SELECT MAX(stream_id) AS m FROM receipts");
    const upsert = db.prepare(
      `INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_id) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (room_id, receipt_type, user_id, thread_id)
       DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, stream_id = excluded.stream_id`,
    );
    this.#set = db.transaction((r: Omit<Receipt, "streamId">) => {
      const id = (next.get()?.m ?? 0) + 1;
      upsert.run(r.roomId, r.userId, r.receiptType, r.threadId ?? "", r.eventId, r.ts, id);
      return id;
    });
    // Prepared once, with the room list passed as one JSON array: /sync reads these on every request.
    this.#s = {
      max: next,
      changes: db.prepare<[string, number, number], ReceiptRow>(
        `SELECT * FROM receipts WHERE room_id IN (SELECT value FROM json_each(?)) AND stream_id > ? AND stream_id <= ?
         ORDER BY stream_id`,
      ),
    };
  }

  async set(receipt: Omit<Receipt, "streamId">): Promise<number> {
    return this.#set(receipt);
  }

  async changes(roomIds: string[], from: number, to: number): Promise<Receipt[]> {
    if (roomIds.length === 0 || to <= from) return [];
    return this.#s.changes.all(JSON.stringify(roomIds), from, to).map((r) => ({
      roomId: r.room_id,
      userId: r.user_id,
      receiptType: r.receipt_type,
      threadId: r.thread_id === "" ? null : r.thread_id,
      eventId: r.event_id,
      ts: r.ts,
      streamId: r.stream_id,
    }));
  }

  async maxStreamId(): Promise<number> {
    return this.#s.max.get()?.m ?? 0;
  }
}
