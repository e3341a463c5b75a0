import type Database from "better-sqlite3";
import type { ClaimedKey, DeviceKeyStore, DeviceKeysRecord, StoredToDevice, ToDeviceMessage, ToDeviceStore, UploadedKey } from "../e2ee.js";

/** The rows of these tables reference `devices` with ON DELETE CASCADE: deleting a device deletes its keys and inbox. */
export class SqliteDeviceKeyStore implements DeviceKeyStore {
  readonly #s;
  readonly #setDeviceKeys: (userId: string, deviceId: string, json: string) => boolean;
  readonly #addOneTimeKeys: (userId: string, deviceId: string, keys: UploadedKey[]) => string | undefined;
  readonly #setFallback: (userId: string, deviceId: string, key: UploadedKey) => void;
  readonly #claim: (userId: string, deviceId: string, algorithm: string) => ClaimedKey | undefined;

  constructor(db: Database.Database) {
    const s = {
      getDeviceKeys: db.prepare<[string, string], { key_json: string }>(
        "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
      ),
      upsertDeviceKeys: db.prepare(
        `INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES (?, ?, ?)
         ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json`,
      ),
      allDeviceKeys: db.prepare<[string], { device_id: string; key_json: string; display_name: string | null }>(
        `SELECT k.device_id, k.key_json, d.display_name FROM e2e_device_keys k
         JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
         WHERE k.user_id = ? ORDER BY k.device_id`,
      ),
      someDeviceKeys: db.prepare<[string, string], { device_id: string; key_json: string; display_name: string | null }>(
        `SELECT k.device_id, k.key_json, d.display_name FROM e2e_device_keys k
         JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
         WHERE k.user_id = ? AND k.device_id IN (SELECT value FROM json_each(?)) ORDER BY k.device_id`,
      ),
      getOneTimeKey: db.prepare<[string, string, string, string], { key_json: string }>(
        "SELECT key_json FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = ?",
      ),
      insertOneTimeKey: db.prepare(
        "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json) VALUES (?, ?, ?, ?, ?)",
      ),
      countOneTimeKeys: db.prepare<[string, string], { algorithm: string; n: number }>(
        "SELECT algorithm, COUNT(*) AS n FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? GROUP BY algorithm",
      ),
      firstOneTimeKey: db.prepare<[string, string, string], { key_id: string; key_json: string }>(
        "SELECT key_id, key_json FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ? ORDER BY rowid LIMIT 1",
      ),
      deleteOneTimeKey: db.prepare("DELETE FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = ?"),
      getFallback: db.prepare<[string, string, string], { key_id: string; key_json: string; used: number }>(
        "SELECT key_id, key_json, used FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?",
      ),
      upsertFallback: db.prepare(
        `INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES (?, ?, ?, ?, ?, 0)
         ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, used = 0`,
      ),
      markFallbackUsed: db.prepare("UPDATE e2e_fallback_keys SET used = 1 WHERE user_id = ? AND device_id = ? AND algorithm = ?"),
      unusedFallbacks: db.prepare<[string, string], { algorithm: string }>(
        "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ? AND used = 0 ORDER BY algorithm",
      ),
      insertChange: db.prepare("INSERT INTO device_list_changes (user_id) VALUES (?)"),
      changes: db.prepare<[number, number, string], { user_id: string }>(
        `SELECT DISTINCT user_id FROM device_list_changes WHERE stream_id > ? AND stream_id <= ?
         AND user_id IN (SELECT value FROM json_each(?))`,
      ),
      maxChange: db.prepare<[], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'device_list_changes'"),
    };
    this.#s = s;
    this.#setDeviceKeys = db.transaction((userId: string, deviceId: string, json: string) => {
      if (s.getDeviceKeys.get(userId, deviceId)?.key_json === json) return false;
      s.upsertDeviceKeys.run(userId, deviceId, json);
      s.insertChange.run(userId);
      return true;
    });
    this.#addOneTimeKeys = db.transaction((userId: string, deviceId: string, keys: UploadedKey[]) => {
      for (const k of keys) {
        const existing = s.getOneTimeKey.get(userId, deviceId, k.algorithm, k.keyId);
        if (existing && existing.key_json !== k.json) return `${k.algorithm}:${k.keyId}`;
      }
      for (const k of keys) {
        if (!s.getOneTimeKey.get(userId, deviceId, k.algorithm, k.keyId)) s.insertOneTimeKey.run(userId, deviceId, k.algorithm, k.keyId, k.json);
      }
      return undefined;
    });
    this.#setFallback = db.transaction((userId: string, deviceId: string, key: UploadedKey) => {
      const existing = s.getFallback.get(userId, deviceId, key.algorithm);
      if (existing && existing.key_id === key.keyId && existing.key_json === key.json) return;
      s.upsertFallback.run(userId, deviceId, key.algorithm, key.keyId, key.json);
    });
    this.#claim = db.transaction((userId: string, deviceId: string, algorithm: string) => {
      const otk = s.firstOneTimeKey.get(userId, deviceId, algorithm);
      if (otk) {
        s.deleteOneTimeKey.run(userId, deviceId, algorithm, otk.key_id);
        return { id: `${algorithm}:${otk.key_id}`, json: otk.key_json };
      }
      const fallback = s.getFallback.get(userId, deviceId, algorithm);
      if (!fallback) return undefined;
      // A fallback key is handed out again until the device replaces it; it is only marked used.
      s.markFallbackUsed.run(userId, deviceId, algorithm);
      return { id: `${algorithm}:${fallback.key_id}`, json: fallback.key_json };
    });
  }

  async setDeviceKeys(userId: string, deviceId: string, json: string): Promise<boolean> {
    return this.#setDeviceKeys(userId, deviceId, json);
  }

  async deviceKeys(userId: string, deviceIds?: string[]): Promise<DeviceKeysRecord[]> {
    const rows = deviceIds === undefined ? this.#s.allDeviceKeys.all(userId) : this.#s.someDeviceKeys.all(userId, JSON.stringify(deviceIds));
    return rows.map((r) => ({ deviceId: r.device_id, json: r.key_json, displayName: r.display_name }));
  }

  async addOneTimeKeys(userId: string, deviceId: string, keys: UploadedKey[]): Promise<string | undefined> {
    return this.#addOneTimeKeys(userId, deviceId, keys);
  }

  async oneTimeKeyCounts(userId: string, deviceId: string): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const r of this.#s.countOneTimeKeys.all(userId, deviceId)) out[r.algorithm] = r.n;
    return out;
  }

  async setFallbackKey(userId: string, deviceId: string, key: UploadedKey): Promise<void> {
    this.#setFallback(userId, deviceId, key);
  }

  async unusedFallbackKeyTypes(userId: string, deviceId: string): Promise<string[]> {
    return this.#s.unusedFallbacks.all(userId, deviceId).map((r) => r.algorithm);
  }

  async claimKey(userId: string, deviceId: string, algorithm: string): Promise<ClaimedKey | undefined> {
    return this.#claim(userId, deviceId, algorithm);
  }

  async recordDeviceListChange(userId: string): Promise<number> {
    return Number(this.#s.insertChange.run(userId).lastInsertRowid);
  }

  async deviceListChanges(userIds: string[], from: number, to: number): Promise<string[]> {
    if (userIds.length === 0 || to <= from) return [];
    return this.#s.changes.all(from, to, JSON.stringify(userIds)).map((r) => r.user_id);
  }

  async maxDeviceListStreamId(): Promise<number> {
    return this.#s.maxChange.get()?.seq ?? 0;
  }
}

export class SqliteToDeviceStore implements ToDeviceStore {
  readonly #s;
  readonly #add: (messages: ToDeviceMessage[], txn: { userId: string; deviceId: string; txnId: string }) => boolean;
  readonly #ackRead: (userId: string, deviceId: string, upTo: number, to: number, limit: number) => StoredToDevice[];

  constructor(db: Database.Database) {
    const s = {
      insertTxn: db.prepare("INSERT OR IGNORE INTO to_device_txns (user_id, device_id, txn_id) VALUES (?, ?, ?)"),
      deviceExists: db.prepare<[string, string], { one: number }>("SELECT 1 AS one FROM devices WHERE user_id = ? AND device_id = ?"),
      insert: db.prepare("INSERT INTO to_device_messages (user_id, device_id, sender, type, content) VALUES (?, ?, ?, ?, ?)"),
      ack: db.prepare("DELETE FROM to_device_messages WHERE user_id = ? AND device_id = ? AND stream_id <= ?"),
      read: db.prepare<[string, string, number, number, number], { stream_id: number; sender: string; type: string; content: string }>(
        `SELECT stream_id, sender, type, content FROM to_device_messages
         WHERE user_id = ? AND device_id = ? AND stream_id > ? AND stream_id <= ? ORDER BY stream_id LIMIT ?`,
      ),
      max: db.prepare<[], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'to_device_messages'"),
    };
    this.#s = s;
    this.#add = db.transaction((messages: ToDeviceMessage[], txn: { userId: string; deviceId: string; txnId: string }) => {
      if (s.insertTxn.run(txn.userId, txn.deviceId, txn.txnId).changes === 0) return false;
      for (const m of messages) {
        if (s.deviceExists.get(m.userId, m.deviceId)) s.insert.run(m.userId, m.deviceId, m.sender, m.type, m.content);
      }
      return true;
    });
    this.#ackRead = db.transaction((userId: string, deviceId: string, upTo: number, to: number, limit: number) => {
      if (upTo > 0) s.ack.run(userId, deviceId, upTo);
      return s.read.all(userId, deviceId, upTo, to, limit).map((r) => ({
        streamId: r.stream_id,
        sender: r.sender,
        type: r.type,
        content: JSON.parse(r.content) as Record<string, unknown>,
      }));
    });
  }

  async add(messages: ToDeviceMessage[], txn: { userId: string; deviceId: string; txnId: string }): Promise<boolean> {
    return this.#add(messages, txn);
  }

  async acknowledgeAndRead(userId: string, deviceId: string, upTo: number, to: number, limit: number): Promise<StoredToDevice[]> {
    return this.#ackRead(userId, deviceId, upTo, to, limit);
  }

  async maxStreamId(): Promise<number> {
    return this.#s.max.get()?.seq ?? 0;
  }
}
