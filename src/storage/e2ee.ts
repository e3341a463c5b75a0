/**
 * What end-to-end encryption needs from storage (spec: "End-to-End
 * Encryption"): device identity keys, one-time and fallback keys, the stream
 * of users whose devices changed, and the to-device inboxes. Everything here
 * belongs to a device and goes when the device is deleted.
 */

/** A key as the client uploaded it (a string, or a signed object), under its `algorithm:key_id`. */
export interface UploadedKey {
  algorithm: string;
  keyId: string;
  /** The key's JSON text, stored verbatim. */
  json: string;
}

export interface DeviceKeysRecord {
  deviceId: string;
  /** The device keys object's JSON text, as uploaded. */
  json: string;
  displayName: string | null;
}

export interface ClaimedKey {
  /** `algorithm:key_id`. */
  id: string;
  json: string;
}

export interface DeviceKeyStore {
  /** Stores a device's identity keys; true when they differ from what was there (a device-list change is recorded). */
  setDeviceKeys(userId: string, deviceId: string, json: string): Promise<boolean>;
  /** The identity keys of a user's devices (all of them, or those listed) that still exist. */
  deviceKeys(userId: string, deviceIds?: string[]): Promise<DeviceKeysRecord[]>;
  /**
   * Adds one-time keys. A key ID that is already stored with the same key is skipped;
   * with a different key, nothing is stored and its `algorithm:key_id` is returned.
   */
  addOneTimeKeys(userId: string, deviceId: string, keys: UploadedKey[]): Promise<string | undefined>;
  /** Unclaimed one-time keys per algorithm. */
  oneTimeKeyCounts(userId: string, deviceId: string): Promise<Record<string, number>>;
  /** Replaces the device's fallback key for that algorithm (the same key again keeps its used flag). */
  setFallbackKey(userId: string, deviceId: string, key: UploadedKey): Promise<void>;
  /**
   * The one-time key counts and the algorithms for which the device has a fallback key that
   * nobody has claimed yet, in one round trip: what every sync response tells the device.
   */
  keyCounts(userId: string, deviceId: string): Promise<{ oneTimeKeys: Record<string, number>; unusedFallbackTypes: string[] }>;
  /** Takes one one-time key of the algorithm, or else hands out (and marks used) the fallback key. */
  claimKey(userId: string, deviceId: string, algorithm: string): Promise<ClaimedKey | undefined>;
  /** Records that a user's devices changed (a device-list update other users must hear of); returns its stream ID. */
  recordDeviceListChange(userId: string): Promise<number>;
  /** Users, among `userIds`, whose devices changed in (from, to]. */
  deviceListChanges(userIds: string[], from: number, to: number): Promise<string[]>;
}

export interface ToDeviceMessage {
  userId: string;
  deviceId: string;
  sender: string;
  type: string;
  /** The content's JSON text. */
  content: string;
}

export interface StoredToDevice {
  streamId: number;
  sender: string;
  type: string;
  content: Record<string, unknown>;
}

export interface ToDeviceStore {
  /**
   * Queues messages for existing devices (others are dropped), once per sender
   * transaction: false, with nothing stored, when the transaction was seen before.
   */
  add(messages: ToDeviceMessage[], txn: { userId: string; deviceId: string; txnId: string }): Promise<boolean>;
  /** Deletes a device's messages up to `upTo` (the client has them), then returns up to `limit` of (upTo, to]. */
  acknowledgeAndRead(userId: string, deviceId: string, upTo: number, to: number, limit: number): Promise<StoredToDevice[]>;
}

/** The three cross-signing keys a user may have (spec: "Cross-signing"). */
export type CrossSigningKeyType = "master" | "self_signing" | "user_signing";

export interface CrossSigningKey {
  keyType: CrossSigningKeyType;
  /** The unpadded Base64 ed25519 public key, which is also the key's ID after `ed25519:`. */
  publicKey: string;
  /** The key object's JSON text, as uploaded (with the signatures it was uploaded with). */
  json: string;
}

export interface StoredCrossSigningKey extends CrossSigningKey {
  userId: string;
}

/** A signature uploaded through `/keys/signatures/upload`, of a device or of a master key. */
export interface CrossSignature {
  signerUserId: string;
  /** `ed25519:<key>`: a self-signing, user-signing or device key of the signer. */
  signingKeyId: string;
  targetUserId: string;
  /** The signed device's ID, or the signed master key's public key. */
  targetKeyId: string;
  signature: string;
}

export interface CrossSigningStore {
  /**
   * Stores some of a user's cross-signing keys, only if the user's master key is still
   * `expectedMaster` (its public key, or null for none), so that two concurrent first uploads
   * cannot both skip authentication; false, with nothing stored, otherwise. Records a
   * device-list change, and drops the signatures made by keys it replaces.
   */
  setKeys(userId: string, keys: CrossSigningKey[], expectedMaster: string | null): Promise<boolean>;
  /** The cross-signing keys of the users. */
  keys(userIds: string[]): Promise<StoredCrossSigningKey[]>;
  /** Stores signatures (a newer one replaces the same signer's) and records a device-list change for each `changedUsers`. */
  addSignatures(signatures: CrossSignature[], changedUsers: string[]): Promise<void>;
  /** Signatures of the users' devices and keys made by those users themselves or by `viewer`. */
  signaturesFor(targetUserIds: string[], viewer: string): Promise<CrossSignature[]>;
}
