/**
 * Server-side key backup: one set of queries for both dialects. Every write to a version's
 * keys first locks the version's row (PostgreSQL; SQLite runs one write transaction at a time),
 * so concurrent uploads see each other's keys and count the etag up once each.
 */
import type { BackedUpKey, BackedUpKeyInfo, BackupVersion, KeyBackupStore, KeyScope, PutKeysOutcome } from "../key_backup.js";
import { sql, type Executor, type Transaction } from "./executor.js";

interface VersionRow {
  version: number;
  algorithm: string;
  auth_data: string;
  etag: number;
}

interface KeyRow {
  room_id: string;
  session_id: string;
  first_message_index: number;
  forwarded_count: number;
  is_verified: number;
  session_data: string;
}

const FOR_UPDATE = { sqlite: "", postgres: "FOR UPDATE" };

const Q = {
  // The new number is one past every version the user ever had, deleted ones included; a
  // concurrent creation taking the same number makes this insert nothing, and it is tried again.
  create: `INSERT INTO e2e_room_keys_versions (user_id, version, algorithm, auth_data, etag, deleted)
    SELECT ?, COALESCE(MAX(version), 0) + 1, ?, ?, 0, 0 FROM e2e_room_keys_versions WHERE user_id = ?
    ON CONFLICT DO NOTHING RETURNING version`,
  current: "SELECT MAX(version) AS version FROM e2e_room_keys_versions WHERE user_id = ? AND deleted = 0",
  version: "SELECT version, algorithm, auth_data, etag FROM e2e_room_keys_versions WHERE user_id = ? AND version = ? AND deleted = 0",
  lockVersion: sql`SELECT version, algorithm, auth_data, etag FROM e2e_room_keys_versions
    WHERE user_id = ? AND version = ? AND deleted = 0 ${FOR_UPDATE}`,
  count: "SELECT COUNT(*) AS n FROM e2e_room_keys WHERE user_id = ? AND version = ?",
  bumpEtag: "UPDATE e2e_room_keys_versions SET etag = etag + 1 WHERE user_id = ? AND version = ? RETURNING etag",
  updateVersion: "UPDATE e2e_room_keys_versions SET auth_data = ? WHERE user_id = ? AND version = ? AND deleted = 0",
  deleteVersion: "UPDATE e2e_room_keys_versions SET deleted = 1 WHERE user_id = ? AND version = ? AND deleted = 0",
  storedKey: `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM e2e_room_keys
    WHERE user_id = ? AND version = ? AND room_id = ? AND session_id = ?`,
  upsertKey: `INSERT INTO e2e_room_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET first_message_index = excluded.first_message_index,
      forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified, session_data = excluded.session_data`,
} as const;

/** A version number as stored, or undefined for a string that cannot be one (so no such version exists). */
function versionNumber(version: string): number | undefined {
  return /^[1-9][0-9]{0,14}$/.test(version) ? Number(version) : undefined;
}

/** The WHERE clause (after user and version) and its parameters for a scope. */
function scopeFilter(scope: KeyScope): { clause: string; params: string[] } {
  if (scope.roomId === undefined) return { clause: "", params: [] };
  if (scope.sessionId === undefined) return { clause: " AND room_id = ?", params: [scope.roomId] };
  return { clause: " AND room_id = ? AND session_id = ?", params: [scope.roomId, scope.sessionId] };
}

const toKey = (r: KeyRow): BackedUpKey => ({
  roomId: r.room_id,
  sessionId: r.session_id,
  firstMessageIndex: r.first_message_index,
  forwardedCount: r.forwarded_count,
  isVerified: r.is_verified === 1,
  sessionData: r.session_data,
});

async function countKeys(db: Executor, userId: string, version: number): Promise<number> {
  return Number((await db.get<{ n: number }>(Q.count, [userId, version]))?.n ?? 0);
}

async function bumpEtag(tx: Transaction, userId: string, version: number): Promise<number> {
  return Number((await tx.get<{ etag: number }>(Q.bumpEtag, [userId, version]))!.etag);
}

export class SqlKeyBackupStore implements KeyBackupStore {
  constructor(private readonly db: Executor) {}

  async createVersion(userId: string, algorithm: string, authData: string): Promise<string> {
    for (;;) {
      const row = await this.db.get<{ version: number }>(Q.create, [userId, algorithm, authData, userId]);
      if (row) return String(row.version);
    }
  }

  async version(userId: string, version?: string): Promise<BackupVersion | undefined> {
    let n: number | undefined;
    if (version === undefined) n = (await this.db.get<{ version: number | null }>(Q.current, [userId]))?.version ?? undefined;
    else n = versionNumber(version);
    if (n === undefined) return undefined;
    const row = await this.db.get<VersionRow>(Q.version, [userId, n]);
    if (!row) return undefined;
    return {
      version: String(row.version),
      algorithm: row.algorithm,
      authData: row.auth_data,
      etag: Number(row.etag),
      count: await countKeys(this.db, userId, n),
    };
  }

  async updateVersion(userId: string, version: string, authData: string): Promise<boolean> {
    const n = versionNumber(version);
    return n !== undefined && (await this.db.run(Q.updateVersion, [authData, userId, n])) > 0;
  }

  async deleteVersion(userId: string, version: string): Promise<boolean> {
    const n = versionNumber(version);
    if (n === undefined) return false;
    return this.db.transaction(async (tx) => {
      if ((await tx.run(Q.deleteVersion, [userId, n])) === 0) return false;
      await tx.run("DELETE FROM e2e_room_keys WHERE user_id = ? AND version = ?", [userId, n]);
      return true;
    });
  }

  putKeys(
    userId: string,
    version: string,
    keys: BackedUpKey[],
    replaces: (stored: BackedUpKeyInfo, uploaded: BackedUpKeyInfo) => boolean,
  ): Promise<PutKeysOutcome> {
    return this.db.transaction(async (tx): Promise<PutKeysOutcome> => {
      const current = (await tx.get<{ version: number | null }>(Q.current, [userId]))?.version ?? null;
      if (current === null) return { kind: "no_backup" };
      // The lock makes the version stay current (a deletion waits) and serialises uploads.
      const locked = await tx.get<VersionRow>(Q.lockVersion, [userId, current]);
      if (!locked) return { kind: "no_backup" };
      if (versionNumber(version) !== current) return { kind: "not_current", current: String(current) };
      let changed = false;
      for (const key of keys) {
        const stored = await tx.get<KeyRow>(Q.storedKey, [userId, current, key.roomId, key.sessionId]);
        if (stored && !replaces(toKey(stored), key)) continue;
        await tx.run(Q.upsertKey, [
          userId,
          current,
          key.roomId,
          key.sessionId,
          key.firstMessageIndex,
          key.forwardedCount,
          key.isVerified ? 1 : 0,
          key.sessionData,
        ]);
        changed = true;
      }
      const etag = changed ? await bumpEtag(tx, userId, current) : Number(locked.etag);
      return { kind: "stored", etag, count: await countKeys(tx, userId, current) };
    });
  }

  async keys(userId: string, version: string, scope: KeyScope): Promise<BackedUpKey[] | undefined> {
    const n = versionNumber(version);
    if (n === undefined || !(await this.db.get(Q.version, [userId, n]))) return undefined;
    const { clause, params } = scopeFilter(scope);
    const rows = await this.db.all<KeyRow>(
      `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM e2e_room_keys
       WHERE user_id = ? AND version = ?${clause} ORDER BY room_id, session_id`,
      [userId, n, ...params],
    );
    return rows.map(toKey);
  }

  deleteKeys(userId: string, version: string, scope: KeyScope): Promise<{ etag: number; count: number } | undefined> {
    const n = versionNumber(version);
    if (n === undefined) return Promise.resolve(undefined);
    return this.db.transaction(async (tx) => {
      if (!(await tx.get(Q.lockVersion, [userId, n]))) return undefined;
      const { clause, params } = scopeFilter(scope);
      await tx.run(`DELETE FROM e2e_room_keys WHERE user_id = ? AND version = ?${clause}`, [userId, n, ...params]);
      // As Synapse does, a deletion always moves the etag on, so clients re-check their copy.
      return { etag: await bumpEtag(tx, userId, n), count: await countKeys(tx, userId, n) };
    });
  }
}
