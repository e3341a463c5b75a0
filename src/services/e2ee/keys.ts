/**
 * End-to-end encryption keys (spec: "Key management API"): devices publish
 * their identity keys and one-time and fallback keys; other devices look them
 * up and claim one-time keys to open Olm sessions. This is the local part:
 * `FederatedKeys` (federated_keys.ts) asks other servers about their users and
 * hands only local users to `query` and `claim` here.
 */
import { Errors } from "../../errors.js";
import type { UploadedKey } from "../../storage/e2ee.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import { serverNameOf } from "../../events/index.js";
import type { Notifier } from "../sync/notifier.js";
import { dict } from "../../records.js";

/** The algorithm clients count their one-time keys in; always reported, with 0 when none are left. */
export const SIGNED_CURVE25519 = "signed_curve25519";

export interface KeysUploadBody {
  device_keys?: Record<string, unknown>;
  one_time_keys?: Record<string, unknown>;
  fallback_keys?: Record<string, unknown>;
  /** The unstable name of `fallback_keys` (MSC2732), which older clients send. */
  "org.matrix.msc2732.fallback_keys"?: Record<string, unknown>;
}

export interface KeysQueryBody {
  device_keys: Record<string, string[]>;
}

export interface KeysClaimBody {
  one_time_keys: Record<string, Record<string, string>>;
}

/** A remote server this one cannot reach, in the `failures` shape the spec leaves open. */
const NO_FEDERATION = { status: 503, message: "This server does not federate" };

function splitKeyIds(keys: Record<string, unknown> | undefined, what: string): UploadedKey[] {
  const out: UploadedKey[] = [];
  for (const [id, key] of Object.entries(keys ?? {})) {
    const colon = id.indexOf(":");
    if (colon <= 0 || colon === id.length - 1) throw Errors.invalidParam(`${what} key ID ${JSON.stringify(id)} is not of the form <algorithm>:<key_id>`);
    if (typeof key !== "string" && (typeof key !== "object" || key === null || Array.isArray(key))) {
      throw Errors.invalidParam(`${what} key ${JSON.stringify(id)} must be a string or an object`);
    }
    out.push({ algorithm: id.slice(0, colon), keyId: id.slice(colon + 1), json: JSON.stringify(key) });
  }
  return out;
}

export class DeviceKeyService {
  readonly #changeListeners: ((userId: string, deviceId?: string) => void)[] = [];

  constructor(
    private readonly storage: Storage,
    private readonly notifier: Notifier,
    private readonly serverName: string,
  ) {}

  /** `POST /keys/upload`. */
  async upload(requester: Requester, body: KeysUploadBody): Promise<{ one_time_key_counts: Record<string, number> }> {
    const { userId, deviceId } = requester;
    const keys = this.storage.deviceKeys;
    const oneTime = splitKeyIds(body.one_time_keys, "One-time");
    const fallback = splitKeyIds(body.fallback_keys ?? body["org.matrix.msc2732.fallback_keys"], "Fallback");
    if (body.device_keys !== undefined) {
      const dk = body.device_keys;
      if (dk.user_id !== userId) throw Errors.invalidParam("`device_keys.user_id` must be the uploader's user ID");
      if (dk.device_id !== deviceId) throw Errors.invalidParam("`device_keys.device_id` must be the uploading device's ID");
      if (typeof dk.keys !== "object" || dk.keys === null || !Array.isArray(dk.algorithms)) {
        throw Errors.badJson("`device_keys` needs `algorithms` and `keys`");
      }
    }
    if (oneTime.length > 0) {
      const clash = await keys.addOneTimeKeys(userId, deviceId, oneTime);
      if (clash !== undefined) throw Errors.invalidParam(`One-time key ${clash} already exists with a different value`);
    }
    for (const key of fallback) await keys.setFallbackKey(userId, deviceId, key);
    if (body.device_keys !== undefined && (await keys.setDeviceKeys(userId, deviceId, JSON.stringify(body.device_keys)))) {
      await this.announceDeviceChange(userId, deviceId);
    }
    return { one_time_key_counts: await this.oneTimeKeyCounts(userId, deviceId) };
  }

  async oneTimeKeyCounts(userId: string, deviceId: string): Promise<Record<string, number>> {
    return { [SIGNED_CURVE25519]: 0, ...(await this.storage.deviceKeys.oneTimeKeyCounts(userId, deviceId)) };
  }

  /** Called on each announced change: with the device whose keys changed, or without for cross-signing keys (federation tells other servers). */
  onDeviceChange(listener: (userId: string, deviceId?: string) => void): void {
    this.#changeListeners.push(listener);
  }

  /** Wakes the syncs of everyone who shares a room with the user (and the user's own devices). */
  async announceDeviceChange(userId: string, deviceId?: string): Promise<void> {
    this.notifier.notify({ userIds: await this.usersSharingRoomsWith(userId) });
    for (const listener of this.#changeListeners) listener(userId, deviceId);
  }

  /** The user and every user joined to a room the user is joined to. */
  async usersSharingRoomsWith(userId: string): Promise<string[]> {
    const rooms = this.storage.rooms;
    const users = new Set<string>([userId]);
    const joined = (await rooms.membershipsOf(userId)).filter((m) => m.membership === "join").map((m) => m.roomId);
    // All the rooms in one query, not one each: a user in many rooms asked once per room on every key upload.
    for (const m of await rooms.membershipsIn(joined)) if (m.membership === "join") users.add(m.userId);
    return [...users];
  }

  /** `GET /keys/changes`: users sharing a room with the caller whose devices changed between two sync positions. */
  async changes(requester: Requester, from: number, to: number): Promise<{ changed: string[]; left: string[] }> {
    const candidates = await this.usersSharingRoomsWith(requester.userId);
    return { changed: await this.storage.deviceKeys.deviceListChanges(candidates, from, to), left: [] };
  }

  /** The identity keys of the devices asked for (every device for an empty list), as uploaded. */
  async query(body: KeysQueryBody) {
    const deviceKeys: Record<string, Record<string, unknown>> = {};
    const failures: Record<string, unknown> = {};
    for (const [userId, deviceIds] of Object.entries(body.device_keys)) {
      const server = serverNameOf(userId);
      if (server !== this.serverName) {
        if (server !== undefined) failures[server] = NO_FEDERATION;
        continue;
      }
      const devices: Record<string, unknown> = {};
      for (const d of await this.storage.deviceKeys.deviceKeys(userId, deviceIds.length > 0 ? deviceIds : undefined)) {
        const keys = JSON.parse(d.json) as Record<string, unknown>;
        // The display name is the server's to add, and only in `unsigned`, which signatures do not cover.
        if (d.displayName !== null) keys.unsigned = { ...(keys.unsigned as Record<string, unknown> | undefined), device_display_name: d.displayName };
        devices[d.deviceId] = keys;
      }
      deviceKeys[userId] = devices;
    }
    // CrossSigningService.query adds the cross-signing keys and the signatures uploaded separately.
    return { device_keys: deviceKeys, failures };
  }

  /** `POST /keys/claim`: one one-time key (or else the fallback key) per device asked for. */
  async claim(body: KeysClaimBody) {
    const oneTimeKeys = dict<Record<string, Record<string, unknown>>>();
    const failures: Record<string, unknown> = {};
    for (const [userId, devices] of Object.entries(body.one_time_keys)) {
      const server = serverNameOf(userId);
      if (server !== this.serverName) {
        if (server !== undefined) failures[server] = NO_FEDERATION;
        continue;
      }
      for (const [deviceId, algorithm] of Object.entries(devices)) {
        const key = await this.storage.deviceKeys.claimKey(userId, deviceId, algorithm);
        if (!key) continue;
        ((oneTimeKeys[userId] ??= dict())[deviceId] ??= dict())[key.id] = JSON.parse(key.json) as unknown;
      }
    }
    return { one_time_keys: oneTimeKeys, failures };
  }
}
