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

export async function deviceSections(
  storage: Storage,
  requester: Requester,
  joinedRoomIds: string[],
  range: { toDeviceFrom: number; toDeviceTo: number; deviceListsFrom?: number; deviceListsTo: number },
): Promise<DeviceSectionsResult> {
  const { userId, deviceId } = requester;
  const messages = await storage.toDevice.acknowledgeAndRead(userId, deviceId, range.toDeviceFrom, range.toDeviceTo, TO_DEVICE_LIMIT);
  const toDevicePosition = messages.length === TO_DEVICE_LIMIT ? messages[messages.length - 1]!.streamId : range.toDeviceTo;

  // Only an incremental sync reports changes; an initial one makes the client query everyone it needs.
  let changed: string[] = [];
  const from = range.deviceListsFrom;
  if (from !== undefined && range.deviceListsTo > from) {
    const candidates = await usersSharingRooms(storage, userId, joinedRoomIds);
    changed = await storage.deviceKeys.deviceListChanges(candidates, from, range.deviceListsTo);
  }
  const fallbackTypes = await storage.deviceKeys.unusedFallbackKeyTypes(userId, deviceId);
  return {
    sections: {
      to_device: { events: messages.map((m) => ({ sender: m.sender, type: m.type, content: m.content })) },
      device_lists: { changed, left: [] },
      device_one_time_keys_count: { [SIGNED_CURVE25519]: 0, ...(await storage.deviceKeys.oneTimeKeyCounts(userId, deviceId)) },
      device_unused_fallback_key_types: fallbackTypes,
      "org.matrix.msc2732.device_unused_fallback_key_types": fallbackTypes,
    },
    toDevicePosition,
    hasNews: messages.length > 0 || changed.length > 0,
  };
}
