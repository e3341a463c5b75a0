/**
 * What the domain needs from storage, one interface per concept. SQLite
 * implements them now; PostgreSQL will later, which is why every method is
 * async even though better-sqlite3 is not.
 */
import type { DelayedEventStore } from "./delayed_events.js";
import type { DeviceKeyStore, ToDeviceStore } from "./e2ee.js";
import type { RoomStore } from "./rooms.js";
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

export interface Storage {
  accounts: AccountStore;
  rooms: RoomStore;
  accountData: AccountDataStore;
  filters: FilterStore;
  receipts: ReceiptStore;
  delayedEvents: DelayedEventStore;
  devices: DeviceStore;
  registrationTokens: RegistrationTokenStore;
  openIdTokens: OpenIdTokenStore;
  deviceKeys: DeviceKeyStore;
  toDevice: ToDeviceStore;
  close(): Promise<void>;
}
