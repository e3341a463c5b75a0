/**
 * What server-side key backup needs from storage (spec: "Server-side key backups"): numbered
 * backup versions per user, the latest undeleted one being current, and the encrypted room
 * keys stored in a version. The server never reads the keys' content.
 */

export interface BackupVersion {
  version: string;
  algorithm: string;
  /** The `auth_data` object's JSON text. */
  authData: string;
  /** Changes whenever the version's keys change. */
  etag: number;
  /** How many keys the version holds. */
  count: number;
}

/** The metadata that decides whether an uploaded key replaces a stored one. */
export interface BackedUpKeyInfo {
  firstMessageIndex: number;
  forwardedCount: number;
  isVerified: boolean;
}

export interface BackedUpKey extends BackedUpKeyInfo {
  roomId: string;
  sessionId: string;
  /** The encrypted `session_data` object's JSON text. */
  sessionData: string;
}

/** Where keys are read or deleted: the whole version, one room, or one session of a room. */
export interface KeyScope {
  roomId?: string;
  sessionId?: string;
}

export type PutKeysOutcome =
  | { kind: "stored"; etag: number; count: number }
  | { kind: "no_backup" }
  | { kind: "not_current"; current: string };

export interface KeyBackupStore {
  /** Creates a new version, which becomes current; returns its number. */
  createVersion(userId: string, algorithm: string, authData: string): Promise<string>;
  /** A version that exists and is not deleted; the current one when `version` is undefined. */
  version(userId: string, version?: string): Promise<BackupVersion | undefined>;
  /** Replaces a version's `auth_data`; false when it does not exist. */
  updateVersion(userId: string, version: string, authData: string): Promise<boolean>;
  /** Deletes a version and its keys; false when it does not exist. */
  deleteVersion(userId: string, version: string): Promise<boolean>;
  /**
   * Stores keys in the version if it is the current one. A key for a session already stored
   * replaces it only when `replaces(stored, uploaded)`. Concurrent uploads are serialised.
   */
  putKeys(
    userId: string,
    version: string,
    keys: BackedUpKey[],
    replaces: (stored: BackedUpKeyInfo, uploaded: BackedUpKeyInfo) => boolean,
  ): Promise<PutKeysOutcome>;
  /** The keys in scope, or undefined when the version does not exist. */
  keys(userId: string, version: string, scope: KeyScope): Promise<BackedUpKey[] | undefined>;
  /** Deletes the keys in scope; the version's new etag and count, or undefined when it does not exist. */
  deleteKeys(userId: string, version: string, scope: KeyScope): Promise<{ etag: number; count: number } | undefined>;
}
