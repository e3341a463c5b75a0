/** Sliding-sync connection state: one set of queries for both dialects. */
import type { ConnectionKey, SlidingSyncStore } from "../sliding_sync.js";
import type { Executor } from "./executor.js";

const KEY = "user_id = ? AND device_id = ? AND conn_id = ?";
const keyOf = (k: ConnectionKey) => [k.userId, k.deviceId, k.connId];

/** Marking a connection used costs a write: once a minute is precise enough for expiry after days. */
const TOUCH_EVERY_MS = 60_000;

export class SqlSlidingSyncStore implements SlidingSyncStore {
  constructor(private readonly db: Executor) {}

  async load(key: ConnectionKey, position: string, usedSince: number, now: number): Promise<string | undefined> {
    const row = await this.db.get<{ state: string; last_used_ts: number }>(
      `SELECT p.state, c.last_used_ts FROM sliding_sync_positions p
       JOIN sliding_sync_connections c ON c.user_id = p.user_id AND c.device_id = p.device_id AND c.conn_id = p.conn_id
       WHERE p.user_id = ? AND p.device_id = ? AND p.conn_id = ? AND p.position = ?`,
      [...keyOf(key), position],
    );
    if (!row || row.last_used_ts < usedSince) return undefined;
    if (row.last_used_ts < now - TOUCH_EVERY_MS) {
      await this.db.run(`UPDATE sliding_sync_connections SET last_used_ts = ? WHERE ${KEY}`, [now, ...keyOf(key)]);
    }
    return row.state;
  }

  save(key: ConnectionKey, position: string, state: string, keep: string | null, now: number): Promise<void> {
    return this.db.transaction(async (tx) => {
      if (keep === null) await tx.run(`DELETE FROM sliding_sync_connections WHERE ${KEY}`, keyOf(key));
      await tx.run(
        `INSERT INTO sliding_sync_connections (user_id, device_id, conn_id, last_used_ts) VALUES (?, ?, ?, ?)
         ON CONFLICT (user_id, device_id, conn_id) DO UPDATE SET last_used_ts = excluded.last_used_ts`,
        [...keyOf(key), now],
      );
      if (keep !== null) await tx.run(`DELETE FROM sliding_sync_positions WHERE ${KEY} AND position != ?`, [...keyOf(key), keep]);
      await tx.run("INSERT INTO sliding_sync_positions (user_id, device_id, conn_id, position, state, created_ts) VALUES (?, ?, ?, ?, ?, ?)", [
        ...keyOf(key),
        position,
        state,
        now,
      ]);
    });
  }

  async keepOnly(key: ConnectionKey, keep: string, now: number): Promise<void> {
    await this.db.run(`DELETE FROM sliding_sync_positions WHERE ${KEY} AND position != ?`, [...keyOf(key), keep]);
    await this.db.run(`UPDATE sliding_sync_connections SET last_used_ts = ? WHERE ${KEY} AND last_used_ts < ?`, [
      now,
      ...keyOf(key),
      now - TOUCH_EVERY_MS,
    ]);
  }

  expire(before: number): Promise<number> {
    // Positions go with their connection (ON DELETE CASCADE).
    return this.db.run("DELETE FROM sliding_sync_connections WHERE last_used_ts < ?", [before]);
  }
}
