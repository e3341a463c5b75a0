/** Users, profiles, devices, access tokens, registration and OpenID tokens: one set of queries for both dialects. */
import type {
  AccountStore,
  DeviceRecord,
  DeviceStore,
  NewSession,
  NewUser,
  OpenIdTokenStore,
  Profile,
  RegistrationToken,
  RegistrationTokenStore,
  TokenOwner,
  UserRecord,
} from "../interfaces.js";
import { recordDeviceListChange } from "./e2ee.js";
import type { Executor, Transaction } from "./executor.js";

interface UserRow {
  user_id: string;
  password_hash: string | null;
  is_guest: number;
  is_admin: number;
  created_ts: number;
}

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

/** A known device keeps its name: the spec ignores `initial_device_display_name` then. */
async function insertSession(tx: Executor, userId: string, s: NewSession, now: number): Promise<void> {
  await tx.run(
    `INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip`,
    [userId, s.deviceId, s.displayName, now, s.ip],
  );
  await tx.run("INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) VALUES (?, ?, ?, ?)", [
    s.tokenHash,
    userId,
    s.deviceId,
    now,
  ]);
}

export class SqlAccountStore implements AccountStore {
  constructor(private readonly db: Executor) {}

  createUser(user: NewUser, session: NewSession | null, now: number): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const created = await tx.run(
        "INSERT INTO users (user_id, password_hash, is_guest, is_admin, created_ts) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [user.userId, user.passwordHash, user.isGuest ? 1 : 0, user.isAdmin ? 1 : 0, now],
      );
      if (created === 0) return false;
      await tx.run("INSERT INTO profiles (user_id, displayname, avatar_url) VALUES (?, ?, NULL)", [user.userId, user.displayname]);
      if (session) await insertSession(tx, user.userId, session, now);
      return true;
    });
  }

  async getUser(userId: string): Promise<UserRecord | undefined> {
    const row = await this.db.get<UserRow>("SELECT * FROM users WHERE user_id = ?", [userId]);
    if (!row) return undefined;
    return {
      userId: row.user_id,
      passwordHash: row.password_hash,
      isGuest: row.is_guest === 1,
      isAdmin: row.is_admin === 1,
      createdTs: row.created_ts,
    };
  }

  async setPasswordHash(userId: string, hash: string): Promise<void> {
    await this.db.run("UPDATE users SET password_hash = ? WHERE user_id = ?", [hash, userId]);
  }

  async getProfile(userId: string): Promise<Profile | undefined> {
    return this.db.get<Profile>("SELECT displayname, avatar_url FROM profiles WHERE user_id = ?", [userId]);
  }

  async setProfileField(userId: string, field: keyof Profile, value: string | null): Promise<void> {
    // The column name comes from a closed union, never from input.
    const column = field === "displayname" ? "displayname" : "avatar_url";
    await this.db.run(`UPDATE profiles SET ${column} = ? WHERE user_id = ?`, [value, userId]);
  }
}

export class SqlDeviceStore implements DeviceStore {
  constructor(private readonly db: Executor) {}

  createSession(userId: string, session: NewSession, now: number): Promise<void> {
    return this.db.transaction((tx) => insertSession(tx, userId, session, now));
  }

  async findToken(tokenHash: string): Promise<TokenOwner | undefined> {
    const row = await this.db.get<{ user_id: string; device_id: string; is_guest: number; token_hash: string }>(
      `SELECT t.user_id, t.device_id, t.token_hash, u.is_guest FROM access_tokens t JOIN users u ON u.user_id = t.user_id
       WHERE t.token_hash = ?`,
      [tokenHash],
    );
    if (!row) return undefined;
    return { userId: row.user_id, deviceId: row.device_id, isGuest: row.is_guest === 1, tokenHash: row.token_hash };
  }

  async getDevice(userId: string, deviceId: string): Promise<DeviceRecord | undefined> {
    const row = await this.db.get<DeviceRow>("SELECT * FROM devices WHERE user_id = ? AND device_id = ?", [userId, deviceId]);
    return row && toDevice(row);
  }

  async listDevices(userId: string): Promise<DeviceRecord[]> {
    return (await this.db.all<DeviceRow>("SELECT * FROM devices WHERE user_id = ? ORDER BY device_id", [userId])).map(toDevice);
  }

  async setDeviceDisplayName(userId: string, deviceId: string, name: string | null): Promise<boolean> {
    return (await this.db.run("UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?", [name, userId, deviceId])) > 0;
  }

  deleteDevices(userId: string, deviceIds: string[]): Promise<string[]> {
    return this.db.transaction(async (tx) => {
      const hashes: string[] = [];
      for (const id of deviceIds) hashes.push(...(await deleteDevice(tx, userId, id)));
      return hashes;
    });
  }

  deleteAllDevices(userId: string, keep?: { deviceId: string; tokenHash: string }): Promise<string[]> {
    return this.db.transaction(async (tx) => {
      const ids = await tx.all<{ device_id: string }>("SELECT device_id FROM devices WHERE user_id = ?", [userId]);
      const hashes: string[] = [];
      for (const { device_id } of ids) if (device_id !== keep?.deviceId) hashes.push(...(await deleteDevice(tx, userId, device_id)));
      if (keep) {
        const others = await tx.all<{ token_hash: string }>(
          "DELETE FROM access_tokens WHERE user_id = ? AND device_id = ? AND token_hash != ? RETURNING token_hash",
          [userId, keep.deviceId, keep.tokenHash],
        );
        hashes.push(...others.map((r) => r.token_hash));
      }
      return hashes;
    });
  }
}

/**
 * Deletes a device, its tokens and (by the cascade) its keys and inbox. A device that had
 * keys is a device-list change the user's contacts must hear of.
 */
async function deleteDevice(tx: Transaction, userId: string, deviceId: string): Promise<string[]> {
  const tokens = await tx.all<{ token_hash: string }>("DELETE FROM access_tokens WHERE user_id = ? AND device_id = ? RETURNING token_hash", [
    userId,
    deviceId,
  ]);
  const hadKeys = await tx.run("DELETE FROM e2e_device_keys WHERE user_id = ? AND device_id = ?", [userId, deviceId]);
  await tx.run("DELETE FROM devices WHERE user_id = ? AND device_id = ?", [userId, deviceId]);
  if (hadKeys > 0) await recordDeviceListChange(tx, userId);
  return tokens.map((r) => r.token_hash);
}

interface TokenRow {
  token: string;
  uses_allowed: number | null;
  pending: number;
  completed: number;
  expiry_time: number | null;
}

const toToken = (r: TokenRow): RegistrationToken => ({
  token: r.token,
  usesAllowed: r.uses_allowed,
  pending: r.pending,
  completed: r.completed,
  expiryTime: r.expiry_time,
});

export class SqlRegistrationTokenStore implements RegistrationTokenStore {
  constructor(private readonly db: Executor) {}

  async create(t: RegistrationToken): Promise<boolean> {
    const n = await this.db.run(
      `INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_time) VALUES (?, ?, 0, 0, ?)
       ON CONFLICT DO NOTHING`,
      [t.token, t.usesAllowed, t.expiryTime],
    );
    return n > 0;
  }

  async get(token: string): Promise<RegistrationToken | undefined> {
    const row = await this.db.get<TokenRow>("SELECT * FROM registration_tokens WHERE token = ?", [token]);
    return row && toToken(row);
  }

  async list(): Promise<RegistrationToken[]> {
    return (await this.db.all<TokenRow>("SELECT * FROM registration_tokens ORDER BY token")).map(toToken);
  }

  async delete(token: string): Promise<boolean> {
    return (await this.db.run("DELETE FROM registration_tokens WHERE token = ?", [token])) > 0;
  }

  async consume(token: string, now: number): Promise<boolean> {
    const n = await this.db.run(
      `UPDATE registration_tokens SET completed = completed + 1
       WHERE token = ? AND (expiry_time IS NULL OR expiry_time > ?) AND (uses_allowed IS NULL OR completed + pending < uses_allowed)`,
      [token, now],
    );
    return n > 0;
  }
}

export class SqlOpenIdTokenStore implements OpenIdTokenStore {
  constructor(private readonly db: Executor) {}

  create(tokenHash: string, userId: string, expiresTs: number, now: number): Promise<void> {
    return this.db.transaction(async (tx) => {
      await tx.run("DELETE FROM openid_tokens WHERE expires_ts <= ?", [now]);
      await tx.run("INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES (?, ?, ?)", [tokenHash, userId, expiresTs]);
    });
  }

  async findUser(tokenHash: string, now: number): Promise<string | undefined> {
    return (await this.db.get<{ user_id: string }>("SELECT user_id FROM openid_tokens WHERE token_hash = ? AND expires_ts > ?", [tokenHash, now]))
      ?.user_id;
  }
}
