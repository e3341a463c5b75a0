/**
 * Server-side key backup (spec: "Server-side key backups"): a user's devices store their
 * encrypted room keys in the current backup version, so that a new device can recover the
 * history. The server keeps versions and keys, chooses between two copies of a session's key
 * by the spec's rules, and never sees a key in the clear.
 */
import { Errors, MatrixError } from "../../errors.js";
import type { BackedUpKey, BackedUpKeyInfo, BackupVersion, KeyScope } from "../../storage/key_backup.js";
import type { Storage } from "../../storage/interfaces.js";

/** One session's key as clients send and receive it (spec: KeyBackupData). */
export interface KeyBackupData {
  first_message_index: number;
  forwarded_count: number;
  is_verified: boolean;
  session_data: Record<string, unknown>;
}

export type RoomKeyBackup = { sessions: Record<string, KeyBackupData> };
export type KeysBackup = { rooms: Record<string, RoomKeyBackup> };

export interface VersionBody {
  algorithm: string;
  auth_data: Record<string, unknown>;
  version?: string;
}

const noBackup = () => Errors.notFound("No backup found");
const unknownVersion = (version: string) => Errors.notFound(`Unknown backup version ${JSON.stringify(version)}`);

/**
 * Whether an uploaded key replaces the stored one (spec, "Storing keys"): a verified key beats
 * an unverified one; then the lower first message index (it decrypts more); then the lower
 * forwarded count (fewer hands it went through). A tie keeps the stored key.
 */
export function replacesStoredKey(stored: BackedUpKeyInfo, uploaded: BackedUpKeyInfo): boolean {
  if (stored.isVerified !== uploaded.isVerified) return uploaded.isVerified;
  if (stored.firstMessageIndex !== uploaded.firstMessageIndex) return uploaded.firstMessageIndex < stored.firstMessageIndex;
  return uploaded.forwardedCount < stored.forwardedCount;
}

function versionView(v: BackupVersion) {
  return { algorithm: v.algorithm, auth_data: JSON.parse(v.authData) as unknown, count: v.count, etag: String(v.etag), version: v.version };
}

const toData = (k: BackedUpKey): KeyBackupData => ({
  first_message_index: k.firstMessageIndex,
  forwarded_count: k.forwardedCount,
  is_verified: k.isVerified,
  session_data: JSON.parse(k.sessionData) as Record<string, unknown>,
});

export class KeyBackupService {
  constructor(private readonly storage: Storage) {}

  async createVersion(userId: string, body: VersionBody): Promise<{ version: string }> {
    return { version: await this.storage.keyBackup.createVersion(userId, body.algorithm, JSON.stringify(body.auth_data)) };
  }

  /** The current version, or the one asked for. */
  async getVersion(userId: string, version?: string) {
    const v = await this.storage.keyBackup.version(userId, version);
    if (!v) throw version === undefined ? noBackup() : unknownVersion(version);
    return versionView(v);
  }

  /** Replaces `auth_data`; the algorithm cannot change (a new version is needed for that). */
  async updateVersion(userId: string, version: string, body: VersionBody): Promise<Record<string, never>> {
    if (body.version !== undefined && body.version !== version) throw Errors.invalidParam("The version in the body does not match the path");
    const existing = await this.storage.keyBackup.version(userId, version);
    if (!existing) throw unknownVersion(version);
    if (existing.algorithm !== body.algorithm) throw Errors.invalidParam("The algorithm does not match the backup's");
    if (!(await this.storage.keyBackup.updateVersion(userId, version, JSON.stringify(body.auth_data)))) throw unknownVersion(version);
    return {};
  }

  async deleteVersion(userId: string, version: string): Promise<Record<string, never>> {
    if (!(await this.storage.keyBackup.deleteVersion(userId, version))) throw unknownVersion(version);
    return {};
  }

  /** Stores keys in the current version: 404 with no backup, 403 when `version` is not the current one. */
  async putKeys(userId: string, version: string, backup: KeysBackup): Promise<{ etag: string; count: number }> {
    const keys: BackedUpKey[] = [];
    for (const [roomId, room] of Object.entries(backup.rooms)) {
      for (const [sessionId, data] of Object.entries(room.sessions)) {
        keys.push({
          roomId,
          sessionId,
          firstMessageIndex: data.first_message_index,
          forwardedCount: data.forwarded_count,
          isVerified: data.is_verified,
          sessionData: JSON.stringify(data.session_data),
        });
      }
    }
    const outcome = await this.storage.keyBackup.putKeys(userId, version, keys, replacesStoredKey);
    if (outcome.kind === "no_backup") throw noBackup();
    if (outcome.kind === "not_current") {
      throw new MatrixError(403, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version", { current_version: outcome.current });
    }
    return { etag: String(outcome.etag), count: outcome.count };
  }

  async getKeys(userId: string, version: string, scope: KeyScope): Promise<KeysBackup | RoomKeyBackup | KeyBackupData> {
    const keys = await this.storage.keyBackup.keys(userId, version, scope);
    if (!keys) throw unknownVersion(version);
    if (scope.sessionId !== undefined) {
      if (keys.length === 0) throw Errors.notFound("No key for that session");
      return toData(keys[0]!);
    }
    const rooms: Record<string, RoomKeyBackup> = {};
    for (const k of keys) (rooms[k.roomId] ??= { sessions: {} }).sessions[k.sessionId] = toData(k);
    if (scope.roomId !== undefined) return rooms[scope.roomId] ?? { sessions: {} };
    return { rooms };
  }

  async deleteKeys(userId: string, version: string, scope: KeyScope): Promise<{ etag: string; count: number }> {
    const result = await this.storage.keyBackup.deleteKeys(userId, version, scope);
    if (!result) throw unknownVersion(version);
    return { etag: String(result.etag), count: result.count };
  }
}
