/**
 * The per-device parts of a `/sync` response that end-to-end encryption
 * needs: the device's to-device inbox, which users' devices changed, and how
 * many one-time keys the device has left.
 *
 * To-device messages stay queued until the device syncs with a token past
 * them: that acknowledges them and they are deleted. A response carries at
 * most `TO_DEVICE_LIMIT`; the rest follow in the next one.
 */
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import { SIGNED_CURVE25519 } from "../e2ee/keys.js";

export const TO_DEVICE_LIMIT = 100;

export interface ToDeviceEvent {
  sender: string;
  type: string;
  content: Record<string, unknown>;
}

export interface DeviceSections {
  to_device: { events: ToDeviceEvent[] };
  device_lists: { changed: string[]; left: string[] };
  device_one_time_keys_count: Record<string, number>;
  device_unused_fallback_key_types: string[];
  /** MSC2732's unstable name, which older clients read. */
  "org.matrix.msc2732.device_unused_fallback_key_types": string[];
}

export interface DeviceSectionsResult {
  sections: DeviceSections;
  /** The to-device position the next token should carry: `to`, or the last message sent when more are waiting. */
  toDevicePosition: number;
  /** Something for the client: an incremental sync need not wait. */
  hasNews: boolean;
}

/** The user and everyone joined to a room the user is joined to. */
async function usersSharingRooms(storage: Storage, userId: string, joinedRoomIds: string[]): Promise<string[]> {
  const users = new Set<string>([userId]);
  // One query for all the rooms: a round trip per room would cost every /sync on PostgreSQL.
  for (const m of await storage.rooms.membershipsIn(joinedRoomIds)) if (m.membership === "join") users.add(m.userId);
  return [...users];
}

/**
 * Acknowledges the device's to-device messages up to `from` and reads the next ones up to
 * `to`; `position` is where the next request should resume (`to`, or the last message sent
 * when more are waiting).
 */
export async function readToDevice(
  storage: Storage,
  requester: Requester,
  from: number,
  to: number,
  limit = TO_DEVICE_LIMIT,
): Promise<{ events: ToDeviceEvent[]; position: number }> {
  const messages = await storage.toDevice.acknowledgeAndRead(requester.userId, requester.deviceId, from, to, limit);
  const position = messages.length === limit ? messages[messages.length - 1]!.streamId : to;
  return { events: messages.map((m) => ({ sender: m.sender, type: m.type, content: m.content })), position };
}

/** Users sharing a room with the user (or the user) whose devices changed in (from, to]. */
export async function changedDeviceLists(storage: Storage, userId: string, joinedRoomIds: string[], from: number, to: number): Promise<string[]> {
  if (to <= from) return [];
  return storage.deviceKeys.deviceListChanges(await usersSharingRooms(storage, userId, joinedRoomIds), from, to);
}

/** The device's one-time key counts (always with `signed_curve25519`) and unused fallback key types. */
export async function keyCounts(storage: Storage, requester: Requester) {
  const { userId, deviceId } = requester;
  return {
    oneTimeKeys: { [SIGNED_CURVE25519]: 0, ...(await storage.deviceKeys.oneTimeKeyCounts(userId, deviceId)) },
    fallbackTypes: await storage.deviceKeys.unusedFallbackKeyTypes(userId, deviceId),
  };
}

export async function deviceSections(
  storage: Storage,
  requester: Requester,
  joinedRoomIds: string[],
  range: { toDeviceFrom: number; toDeviceTo: number; deviceListsFrom?: number; deviceListsTo: number },
): Promise<DeviceSectionsResult> {
  const toDevice = await readToDevice(storage, requester, range.toDeviceFrom, range.toDeviceTo);
  // Only an incremental sync reports changes; an initial one makes the client query everyone it needs.
  const from = range.deviceListsFrom;
  const changed = from === undefined ? [] : await changedDeviceLists(storage, requester.userId, joinedRoomIds, from, range.deviceListsTo);
  const keys = await keyCounts(storage, requester);
  return {
    sections: {
      to_device: { events: toDevice.events },
      device_lists: { changed, left: [] },
      device_one_time_keys_count: keys.oneTimeKeys,
      device_unused_fallback_key_types: keys.fallbackTypes,
      "org.matrix.msc2732.device_unused_fallback_key_types": keys.fallbackTypes,
    },
    toDevicePosition: toDevice.position,
    hasNews: toDevice.events.length > 0 || changed.length > 0,
  };
}
