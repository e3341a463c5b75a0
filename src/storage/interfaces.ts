/**
 * What the domain needs from storage, one interface per concept. One implementation
 * (`sql/`) serves SQLite and PostgreSQL; every method is async because PostgreSQL is.
 */
import type { Dialect } from "./sql/executor.js";
import type { Cluster } from "./cluster.js";
import type { StreamPositions } from "./sql/streams.js";
import type { DelayedEventStore } from "./delayed_events.js";
import type { LiveKitDelegationStore } from "./livekit_delegations.js";
import type { CrossSigningStore, DeviceKeyStore, ToDeviceStore } from "./e2ee.js";
import type { ServerKeyStore } from "./federation.js";
import type { FederationQueueStore } from "./federation_queue.js";
import type { KeyBackupStore } from "./key_backup.js";
import type { MediaStore } from "./media.js";
import type { PushActionStore } from "./push.js";
import type { PusherStore } from "./pushers.js";
import type { PushRuleStore } from "./push_rules.js";
import type { RoomDagStore } from "./room_dag.js";
import type { RoomStore } from "./rooms.js";
import type { SlidingSyncStore } from "./sliding_sync.js";
import type { AccountDataStore, FilterStore, ReceiptStore } from "./user_data.js";

export interface UserRecord {
  userId: string;
  passwordHash: string | null;
  isGuest: boolean;
  isAdmin: boolean;
  createdTs: number;
}

export interface Profile {
  displayname: string | null;
  avatar_url: string | null;
}

export interface DeviceRecord {
  userId: string;
  deviceId: string;
  displayName: string | null;
  lastSeenTs: number | null;
  lastSeenIp: string | null;
}

export interface TokenOwner {
  userId: string;
  deviceId: string;
  isGuest: boolean;
  /** The stored hash, so callers can compare it in constant time. */
  tokenHash: string;
}

/** A new login: a device (created or reused) and an access token for it. */
export interface NewSession {
  deviceId: string;
  displayName: string | null;
  tokenHash: string;
  ip: string | null;
}

export interface NewUser {
  userId: string;
  passwordHash: string | null;
  isGuest: boolean;
  isAdmin: boolean;
  displayname: string | null;
}

export interface AccountStore {
  /** Creates the user, and a session when given; false if the user ID is taken. */
  createUser(user: NewUser, session: NewSession | null, now: number): Promise<boolean>;
  getUser(userId: string): Promise<UserRecord | undefined>;
  setPasswordHash(userId: string, hash: string): Promise<void>;
  getProfile(userId: string): Promise<Profile | undefined>;
  setProfileField(userId: string, field: keyof Profile, value: string | null): Promise<void>;
}

export interface DeviceStore {
  /** Creates the device if new and adds an access token for it, atomically. */
  createSession(userId: string, session: NewSession, now: number): Promise<void>;
  findToken(tokenHash: string): Promise<TokenOwner | undefined>;
  getDevice(userId: string, deviceId: string): Promise<DeviceRecord | undefined>;
  listDevices(userId: string): Promise<DeviceRecord[]>;
  /** Returns false when the device does not exist. */
  setDeviceDisplayName(userId: string, deviceId: string, name: string | null): Promise<boolean>;
  /** Deletes the devices and their tokens; returns the deleted token hashes. */
  deleteDevices(userId: string, deviceIds: string[]): Promise<string[]>;
  /**
   * Deletes every device of the user and its tokens, except `keep`: that device
   * survives with only that token. Returns the deleted token hashes.
   */
  deleteAllDevices(userId: string, keep?: { deviceId: string; tokenHash: string }): Promise<string[]>;
}

export interface RegistrationToken {
  token: string;
  usesAllowed: number | null;
  pending: number;
  completed: number;
  expiryTime: number | null;
}

export interface RegistrationTokenStore {
  create(token: RegistrationToken): Promise<boolean>;
  get(token: string): Promise<RegistrationToken | undefined>;
  list(): Promise<RegistrationToken[]>;
  delete(token: string): Promise<boolean>;
  /** Counts one completed registration, if the token is still valid at `now`; false otherwise. */
  consume(token: string, now: number): Promise<boolean>;
}

/** OpenID tokens that let a third party (the LiveKit JWT service) learn who a user is. */
export interface OpenIdTokenStore {
  /** Stores a token hash; also drops tokens that expired before `now`. */
  create(tokenHash: string, userId: string, expiresTs: number, now: number): Promise<void>;
  /** The owner of an unexpired token, or undefined. */
  findUser(tokenHash: string, now: number): Promise<string | undefined>;
}

/** A user-interactive auth session: what it was started for and which stages are done. */
export interface UiaSession {
  sessionId: string;
  purpose: string;
  createdTs: number;
  completed: string[];
}

/**
 * UIA sessions, in the database so that any process on it can continue a session another
 * one started. A session older than the caller's cutoff counts as gone.
 */
export interface UiaSessionStore {
  /** Stores a new session; also drops sessions created before `expiredBefore`. */
  create(session: UiaSession, expiredBefore: number): Promise<void>;
  /** The session, if it exists and was created at or after `createdSince`. */
  get(sessionId: string, createdSince: number): Promise<UiaSession | undefined>;
  /**
   * Adds a completed stage, atomically with respect to concurrent calls on the same session;
   * resolves to every completed stage, or undefined when the session is gone or expired.
   */
  completeStage(sessionId: string, stage: string, createdSince: number): Promise<string[] | undefined>;
  delete(sessionId: string): Promise<void>;
}

/** Single-use nonces for shared-secret registration. */
export interface RegistrationNonceStore {
  /** Stores a nonce; also drops nonces issued before `expiredBefore`. */
  create(nonce: string, issuedTs: number, expiredBefore: number): Promise<void>;
  /**
   * Deletes the nonce if it was issued at or after `issuedSince`; true for exactly one of any
   * number of concurrent callers, false for the others and for unknown or expired nonces.
   */
  consume(nonce: string, issuedSince: number): Promise<boolean>;
}

/** The stores, bound either to the database or to one open transaction. */
/** Typing changes are held in memory; only their positions come from the database. */
export interface TypingStore {
  /**
   * Takes the next position of the typing stream. `announce` runs while the position is
   * still open (readers held back), so what it tells other processes reaches them first.
   */
  nextPosition(announce: (position: number) => void): Promise<number>;
}

export interface Stores {
  accounts: AccountStore;
  typing: TypingStore;
  rooms: RoomStore;
  roomDag: RoomDagStore;
  accountData: AccountDataStore;
  filters: FilterStore;
  receipts: ReceiptStore;
  delayedEvents: DelayedEventStore;
  livekitDelegations: LiveKitDelegationStore;
  devices: DeviceStore;
  registrationTokens: RegistrationTokenStore;
  openIdTokens: OpenIdTokenStore;
  uiaSessions: UiaSessionStore;
  registrationNonces: RegistrationNonceStore;
  deviceKeys: DeviceKeyStore;
  toDevice: ToDeviceStore;
  crossSigning: CrossSigningStore;
  keyBackup: KeyBackupStore;
  media: MediaStore;
  pushActions: PushActionStore;
  pushers: PusherStore;
  slidingSync: SlidingSyncStore;
  pushRules: PushRuleStore;
  serverKeys: ServerKeyStore;
  federationQueue: FederationQueueStore;
}

export interface Storage extends Stores {
  readonly backend: Dialect;
  /** Where each stream is committed up to: the positions a reader may read to. */
  readonly streams: StreamPositions;
  /** The other processes on this database, and how to tell them things. */
  readonly cluster: Cluster;
  /**
   * Runs `work` with stores bound to one transaction: all of it commits, or none of it. On
   * PostgreSQL a transaction that lost a deadlock runs again, so `work` only touches storage.
   */
  transaction<T>(work: (tx: Stores) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}
