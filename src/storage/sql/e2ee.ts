/**
 * Device keys, one-time and fallback keys, device-list changes and to-device inboxes: one set
 * of queries for both dialects. The rows reference `devices` with ON DELETE CASCADE, so deleting
 * a device deletes its keys and inbox (the device-list change that this is, DeviceStore records).
 */
import type { ClaimedKey, DeviceKeyStore, DeviceKeysRecord, StoredToDevice, ToDeviceMessage, ToDeviceStore, UploadedKey } from "../e2ee.js";
import { inJsonList, jsonRows, sql, type Executor, type Transaction } from "./executor.js";

/** Records that a user's devices changed, inside the transaction that changed them. */
export async function recordDeviceListChange(tx: Transaction, userId: string): Promise<number> {
  const id = await tx.nextPosition("device_lists");
  await tx.run("INSERT INTO device_list_changes (stream_id, user_id) VALUES (?, ?)", [id, userId]);
  return id;
}

/** A one-time key ID already stored with a different key: nothing of the upload is kept. */
class KeyConflict extends Error {
  constructor(readonly keyId: string) {
    super(keyId);
  }
}

const Q = {
  deviceKeys: `SELECT k.device_id, k.key_json, d.display_name FROM e2e_device_keys k
    JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
    WHERE k.user_id = ? ORDER BY k.device_id`,
  someDeviceKeys: sql`SELECT k.device_id, k.key_json, d.display_name FROM e2e_device_keys k
    JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
    WHERE k.user_id = ? AND ${inJsonList("k.device_id")} ORDER BY k.device_id`,
  // An upload's keys go as one JSON list of [algorithm, key ID, key] in one statement, not a
  // statement each: a client's first upload carries 50, and on PostgreSQL each statement is a
  // round trip, which under load kept a new device's keys unpublished for seconds.
  addOneTimeKeys: sql`INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)
    SELECT ?, ?, k.value ->> 0, k.value ->> 1, k.value ->> 2 FROM ${jsonRows("k")} WHERE true ON CONFLICT DO NOTHING`,
  // Those of the listed keys already stored with a different value.
  conflictingOneTimeKeys: sql`SELECT o.algorithm, o.key_id FROM ${jsonRows("k")}
    JOIN e2e_one_time_keys o ON o.user_id = ? AND o.device_id = ? AND o.algorithm = k.value ->> 0 AND o.key_id = k.value ->> 1
    WHERE o.key_json != k.value ->> 2`,
  // One statement takes a key, so two claims never get the same one; PostgreSQL's SKIP LOCKED lets
  // a second claim take the next key instead of waiting for the first.
  takeOneTimeKey: sql`DELETE FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = (
      SELECT key_id FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?
      ORDER BY key_id LIMIT 1 ${{ sqlite: "", postgres: "FOR UPDATE SKIP LOCKED" }})
    RETURNING key_id, key_json`,
  anyOneTimeKey: "SELECT 1 AS one FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ? LIMIT 1",
  useFallback: `UPDATE e2e_fallback_keys SET used = 1 WHERE user_id = ? AND device_id = ? AND algorithm = ?
    RETURNING key_id, key_json`,
  deviceListChanges: sql`SELECT DISTINCT user_id FROM device_list_changes WHERE stream_id > ? AND stream_id <= ?
    AND ${inJsonList("user_id")}`,
} as const;

export class SqlDeviceKeyStore implements DeviceKeyStore {
  constructor(private readonly db: Executor) {}

  setDeviceKeys(userId: string, deviceId: string, json: string): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const existing = await tx.get<{ key_json: string }>("SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?", [
        userId,
        deviceId,
      ]);
      if (existing?.key_json === json) return false;
      await tx.run(
        `INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES (?, ?, ?)
         ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json`,
        [userId, deviceId, json],
      );
      await recordDeviceListChange(tx, userId);
      return true;
    });
  }

  async deviceKeys(userId: string, deviceIds?: string[]): Promise<DeviceKeysRecord[]> {
    const rows =
      deviceIds === undefined
        ? await this.db.all<{ device_id: string; key_json: string; display_name: string | null }>(Q.deviceKeys, [userId])
        : await this.db.all<{ device_id: string; key_json: string; display_name: string | null }>(Q.someDeviceKeys, [
            userId,
            JSON.stringify(deviceIds),
          ]);
    return rows.map((r) => ({ deviceId: r.device_id, json: r.key_json, displayName: r.display_name }));
  }

  async addOneTimeKeys(userId: string, deviceId: string, keys: UploadedKey[]): Promise<string | undefined> {
    if (keys.length === 0) return undefined;
    const list = JSON.stringify(keys.map((k) => [k.algorithm, k.keyId, k.json]));
    try {
      await this.db.transaction(async (tx) => {
        const inserted = await tx.run(Q.addOneTimeKeys, [userId, deviceId, list]);
        if (inserted === keys.length) return;
        // Some were there: the same key again is fine (a retried upload); a different one refuses the whole upload.
        const clashes = await tx.all<{ algorithm: string; key_id: string }>(Q.conflictingOneTimeKeys, [list, userId, deviceId]);
        const clashing = new Set(clashes.map((c) => `${c.algorithm}:${c.key_id}`));
        const first = keys.find((k) => clashing.has(`${k.algorithm}:${k.keyId}`));
        if (first) throw new KeyConflict(`${first.algorithm}:${first.keyId}`);
      });
      return undefined;
    } catch (err) {
      if (err instanceof KeyConflict) return err.keyId;
      throw err;
    }
  }

  async oneTimeKeyCounts(userId: string, deviceId: string): Promise<Record<string, number>> {
    const rows = await this.db.all<{ algorithm: string; n: number }>(
      "SELECT algorithm, COUNT(*) AS n FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? GROUP BY algorithm",
      [userId, deviceId],
    );
    return Object.fromEntries(rows.map((r) => [r.algorithm, r.n]));
  }

  async setFallbackKey(userId: string, deviceId: string, key: UploadedKey): Promise<void> {
    // The same key again keeps its used flag; a new one starts unused.
    await this.db.run(
      `INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES (?, ?, ?, ?, ?, 0)
       ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, used = 0
       WHERE e2e_fallback_keys.key_id != excluded.key_id OR e2e_fallback_keys.key_json != excluded.key_json`,
      [userId, deviceId, key.algorithm, key.keyId, key.json],
    );
  }

  async keyCounts(userId: string, deviceId: string): Promise<{ oneTimeKeys: Record<string, number>; unusedFallbackTypes: string[] }> {
    const rows = await this.db.all<{ kind: string; algorithm: string; n: number }>(
      `SELECT 'otk' AS kind, algorithm, COUNT(*) AS n FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? GROUP BY algorithm
       UNION ALL
       SELECT 'fallback' AS kind, algorithm, 1 AS n FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ? AND used = 0
       ORDER BY kind, algorithm`,
      [userId, deviceId, userId, deviceId],
    );
    return {
      oneTimeKeys: Object.fromEntries(rows.filter((r) => r.kind === "otk").map((r) => [r.algorithm, Number(r.n)])),
      unusedFallbackTypes: rows.filter((r) => r.kind === "fallback").map((r) => r.algorithm),
    };
  }

  async claimKey(userId: string, deviceId: string, algorithm: string): Promise<ClaimedKey | undefined> {
    const at = [userId, deviceId, algorithm];
    for (;;) {
      const otk = await this.db.get<{ key_id: string; key_json: string }>(Q.takeOneTimeKey, [...at, ...at]);
      if (otk) return { id: `${algorithm}:${otk.key_id}`, json: otk.key_json };
      // Nothing taken: either none is left, or (PostgreSQL) every one left is being taken by another claim right now.
      if (!(await this.db.get(Q.anyOneTimeKey, at))) break;
    }
    // A fallback key is handed out again until the device replaces it; it is only marked used.
    const fallback = await this.db.get<{ key_id: string; key_json: string }>(Q.useFallback, at);
    return fallback && { id: `${algorithm}:${fallback.key_id}`, json: fallback.key_json };
  }

  recordDeviceListChange(userId: string): Promise<number> {
    return this.db.transaction((tx) => recordDeviceListChange(tx, userId));
  }

  async deviceListChanges(userIds: string[], from: number, to: number): Promise<string[]> {
    if (userIds.length === 0 || to <= from) return [];
    return (await this.db.all<{ user_id: string }>(Q.deviceListChanges, [from, to, JSON.stringify(userIds)])).map((r) => r.user_id);
  }
}

const EXISTING_DEVICES = sql`SELECT user_id, device_id FROM devices WHERE ${inJsonList("user_id")}`;

/**
 * Queues to-device messages in the open transaction, each at its own stream position. Messages
 * for devices that do not exist are dropped (for local and remote senders alike); answers the
 * messages kept.
 */
export async function insertToDevice(tx: Transaction, messages: readonly ToDeviceMessage[]): Promise<ToDeviceMessage[]> {
  const users = [...new Set(messages.map((m) => m.userId))];
  if (users.length === 0) return [];
  const existing = new Set(
    (await tx.all<{ user_id: string; device_id: string }>(EXISTING_DEVICES, [JSON.stringify(users)])).map((r) => JSON.stringify([r.user_id, r.device_id])),
  );
  const kept = messages.filter((m) => existing.has(JSON.stringify([m.userId, m.deviceId])));
  if (kept.length === 0) return [];
  const ids = await tx.nextPositions("to_device", kept.length);
  for (const [i, m] of kept.entries()) {
    await tx.run("INSERT INTO to_device_messages (stream_id, user_id, device_id, sender, type, content) VALUES (?, ?, ?, ?, ?, ?)", [
      ids[i]!,
      m.userId,
      m.deviceId,
      m.sender,
      m.type,
      m.content,
    ]);
  }
  return kept;
}

/** Devices whose acknowledged position this store remembers; it starts afresh when full. */
const ACKNOWLEDGED_MAX = 10_000;

export class SqlToDeviceStore implements ToDeviceStore {
  /**
   * Per device, the position up to which this process has deleted acknowledged messages. A sync
   * token only carries positions every write below had committed by, so once messages up to a
   * position are deleted none can appear there again: the same acknowledgement (every long-poll
   * of a device that has nothing new) needs no second DELETE. Another process deleting more is
   * harmless; forgetting only costs a DELETE that finds nothing.
   */
  readonly #acknowledged = new Map<string, number>();

  constructor(private readonly db: Executor) {}

  add(messages: ToDeviceMessage[], txn: { userId: string; deviceId: string; txnId: string }): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const fresh = await tx.run("INSERT INTO to_device_txns (user_id, device_id, txn_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [
        txn.userId,
        txn.deviceId,
        txn.txnId,
      ]);
      if (fresh === 0) return false;
      await insertToDevice(tx, messages);
      return true;
    });
  }

  async acknowledgeAndRead(userId: string, deviceId: string, upTo: number, to: number, limit: number): Promise<StoredToDevice[]> {
    const device = JSON.stringify([userId, deviceId]);
    if (upTo > 0 && (this.#acknowledged.get(device) ?? 0) < upTo) {
      await this.db.run("DELETE FROM to_device_messages WHERE user_id = ? AND device_id = ? AND stream_id <= ?", [userId, deviceId, upTo]);
      if (this.#acknowledged.size >= ACKNOWLEDGED_MAX) this.#acknowledged.clear();
      this.#acknowledged.set(device, upTo);
    }
    if (to <= upTo) return [];
    const rows = await this.db.all<{ stream_id: number; sender: string; type: string; content: string }>(
      `SELECT stream_id, sender, type, content FROM to_device_messages
       WHERE user_id = ? AND device_id = ? AND stream_id > ? AND stream_id <= ? ORDER BY stream_id LIMIT ?`,
      [userId, deviceId, upTo, to, limit],
    );
    return rows.map((r) => ({
      streamId: r.stream_id,
      sender: r.sender,
      type: r.type,
      content: JSON.parse(r.content) as Record<string, unknown>,
    }));
  }
}
