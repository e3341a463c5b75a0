import type Database from "better-sqlite3";
import type { DeviceRecord, DeviceStore, NewSession, TokenOwner } from "../interfaces.js";

interface DeviceRow {
  user_id: string;
  device_id: string;
  display_name: string | null;
  last_seen_ts: number | null;
  last_seen_ip: string | null;
}

const toDevice = (r: DeviceRow): DeviceRecord => ({
  userId: r.user_id,
  deviceId: r.device_id,
  displayName: r.display_name,
  lastSeenTs: r.last_seen_ts,
  lastSeenIp: r.last_seen_ip,
});

/**
 * Shared with account creation, which makes the first session in the same transaction.
 * A known device keeps its name: the spec ignores `initial_device_display_name` then.
 */
export function insertSession(db: Database.Database, userId: string, s: NewSession, now: number): void {
  db.prepare(
    `INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip`,
  ).run(userId, s.deviceId, s.displayName, now, s.ip);
  db.prepare("INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) VALUES (?, ?, ?, ?)").run(
    s.tokenHash,
    userId,
    s.deviceId,
    now,
  );
}

export class SqliteDeviceStore implements DeviceStore {
  readonly #createSession: (userId: string, s: NewSession, now: number) => void;
  readonly #deleteDevices: (userId: string, ids: string[]) => string[];
  readonly #deleteAll: (userId: string, keep: { deviceId: string; tokenHash: string } | null) => string[];
  readonly #findToken: Database.Statement<[string], { user_id: string; device_id: string; is_guest: number; token_hash: string }>;
  readonly #getDevice: Database.Statement<[string, string], DeviceRow>;
  readonly #listDevices: Database.Statement<[string], DeviceRow>;
  readonly #setName: Database.Statement<[string | null, string, string]>;

  constructor(db: Database.Database) {
    this.#createSession = db.transaction((userId: string, s: NewSession, now: number) => insertSession(db, userId, s, now));
    this.#findToken = db.prepare(
      `SELECT t.user_id, t.device_id, t.token_hash, u.is_guest FROM access_tokens t JOIN users u ON u.user_id = t.user_id
       WHERE t.token_hash = ?`,
    );
    this.#getDevice = db.prepare("SELECT * FROM devices WHERE user_id = ? AND device_id = ?");
    this.#listDevices = db.prepare("SELECT * FROM devices WHERE user_id = ? ORDER BY device_id");
    this.#setName = db.prepare("UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?");
    const tokensOf = db.prepare<[string, string], { token_hash: string }>(
      "SELECT token_hash FROM access_tokens WHERE user_id = ? AND device_id = ?",
    );
    const delTokens = db.prepare("DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?");
    const delDevice = db.prepare("DELETE FROM devices WHERE user_id = ? AND device_id = ?");
    const deleteOne = (userId: string, deviceId: string): string[] => {
      const hashes = tokensOf.all(userId, deviceId).map((r) => r.token_hash);
      delTokens.run(userId, deviceId);
      delDevice.run(userId, deviceId);
      return hashes;
    };
    this.#deleteDevices = db.transaction((userId: string, ids: string[]) => ids.flatMap((id) => deleteOne(userId, id)));
    const deviceIds = db.prepare<[string], { device_id: string }>("SELECT device_id FROM devices WHERE user_id = ?");
    const otherTokens = db.prepare<[string, string, string], { token_hash: string }>(
      "DELETE FROM access_tokens WHERE user_id = ? AND device_id = ? AND token_hash != ? RETURNING token_hash",
    );
    this.#deleteAll = db.transaction((userId: string, keep: { deviceId: string; tokenHash: string } | null) => {
      const hashes = deviceIds
        .all(userId)
        .filter((r) => r.device_id !== keep?.deviceId)
        .flatMap((r) => deleteOne(userId, r.device_id));
      if (keep) hashes.push(...otherTokens.all(userId, keep.deviceId, keep.tokenHash).map((r) => r.token_hash));
      return hashes;
    });
  }

  async createSession(userId: string, session: NewSession, now: number): Promise<void> {
    this.#createSession(userId, session, now);
  }

  async findToken(tokenHash: string): Promise<TokenOwner | undefined> {
    const row = this.#findToken.get(tokenHash);
    if (!row) return undefined;
    return { userId: row.user_id, deviceId: row.device_id, isGuest: row.is_guest === 1, tokenHash: row.token_hash };
  }

  async getDevice(userId: string, deviceId: string): Promise<DeviceRecord | undefined> {
    const row = this.#getDevice.get(userId, deviceId);
    return row && toDevice(row);
  }

  async listDevices(userId: string): Promise<DeviceRecord[]> {
    return this.#listDevices.all(userId).map(toDevice);
  }

  async setDeviceDisplayName(userId: string, deviceId: string, name: string | null): Promise<boolean> {
    return this.#setName.run(name, userId, deviceId).changes > 0;
  }

  async deleteDevices(userId: string, deviceIds: string[]): Promise<string[]> {
    return this.#deleteDevices(userId, deviceIds);
  }

  async deleteAllDevices(userId: string, keep?: { deviceId: string; tokenHash: string }): Promise<string[]> {
    return this.#deleteAll(userId, keep ?? null);
  }
}
