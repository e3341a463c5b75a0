/**
 * The per-device parts of a `/sync` response that end-to-end encryption
 * needs: the device's to-device inbox, which users' devices changed, and how
 * many one-time keys the device has left.
 *
 * To-device messages stay queued until the device syncs with a token past
 * them: that acknowledges them and they are deleted. A response carries at
 * most `TO_DEVICE_LIMIT`; the rest follow in the next one.
 */
import { pduOf } from "../../events/index.js";
import type { Storage } from "../../storage/interfaces.js";
import type { MembershipRecord, StoredEvent } from "../../storage/rooms.js";
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

export interface DeviceListChanges {
  changed: string[];
  left: string[];
}

/** An incremental sync's window: (from, to] of the device-list stream and of the events stream. */
export interface DeviceListWindow {
  from: number;
  to: number;
  eventsFrom: number;
  eventsTo: number;
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

/** The membership before a member event, as recorded in its `prev_content` (unknown for some events from other servers). */
function previousMembership(e: StoredEvent): string | undefined {
  const m = (pduOf(e).unsigned?.prev_content as Record<string, unknown> | undefined)?.membership;
  return typeof m === "string" ? m : undefined;
}

/**
 * `device_lists` of an incremental sync (shared by `/sync` v2 and sliding sync), as the spec's
 * `/sync` describes it. `changed`: users sharing a room with the user (or the user) whose devices
 * changed, and users who came to share one (they joined one of the user's rooms, or the user
 * joined theirs), whose devices the client must now track. `left`: users who shared a room with
 * the user and share none any more (they left, were kicked or banned, or the user left).
 * `joinedRoomIds` are the user's joined rooms at `eventsTo`.
 */
export async function deviceListChanges(storage: Storage, userId: string, joinedRoomIds: string[], w: DeviceListWindow): Promise<DeviceListChanges> {
  const changed = new Set<string>();
  if (w.to > w.from) {
    // Whose devices changed, among the user and everyone in the user's rooms (one query for all the
    // rooms: a round trip per room would cost every /sync on PostgreSQL). Read only when the
    // device-list stream moved, as a big account's rooms hold many members.
    const sharing = new Set<string>([userId]);
    for (const m of await storage.rooms.membershipsIn(joinedRoomIds)) if (m.membership === "join") sharing.add(m.userId);
    for (const u of await storage.deviceKeys.deviceListChanges([...sharing], w.from, w.to)) changed.add(u);
  }
  if (w.eventsTo <= w.eventsFrom) return { changed: [...changed], left: [] };

  // Who came to share a room with the user, or stopped: the window's membership changes, of the
  // user anywhere and of anyone in the user's rooms, compared from before the window to its end.
  const changes = await storage.rooms.membershipChangesAround(userId, joinedRoomIds, w.eventsFrom, w.eventsTo);
  if (changes.length === 0) return { changed: [...changed], left: [] };
  const byMember = new Map<string, { first: MembershipRecord; last: MembershipRecord }>();
  for (const c of changes) {
    const key = JSON.stringify([c.roomId, c.userId]);
    const seen = byMember.get(key);
    if (seen) seen.last = c;
    else byMember.set(key, { first: c, last: c });
  }
  // The membership before the window is in the first change's `prev_content` (absent from some
  // events of other servers: then a join counts as new and a leave as ending a join, since telling
  // the client too much costs it a key query, too little its keys).
  const firsts = [...byMember.values()].map((m) => m.first.eventId);
  const previous = new Map((await storage.rooms.getEvents(firsts)).map((e) => [e.eventId, previousMembership(e)]));
  const wasJoined = (first: MembershipRecord) => {
    const p = previous.get(first.eventId);
    return p === undefined ? first.membership !== "join" : p === "join";
  };
  const joinedRooms = new Set(joinedRoomIds);
  const roomsJoined: string[] = [];
  const roomsLeft: string[] = [];
  const mayHaveLeft = new Set<string>();
  for (const { first, last } of byMember.values()) {
    const before = wasJoined(first);
    const after = last.membership === "join";
    if (before === after) continue;
    if (first.userId === userId) (after ? roomsJoined : roomsLeft).push(first.roomId);
    else if (after && joinedRooms.has(first.roomId)) changed.add(first.userId);
    else if (!after) mayHaveLeft.add(first.userId);
  }
  // Everyone in a room the user joined is now someone whose devices it must track; everyone in a
  // room the user left (or who left it meanwhile) may no longer share any room with the user.
  const fromRoomsJoinedOrLeft = await storage.rooms.membershipsIn([...roomsJoined, ...roomsLeft]);
  for (const m of fromRoomsJoinedOrLeft) {
    if (m.userId === userId) continue;
    if (roomsJoined.includes(m.roomId) && m.membership === "join") changed.add(m.userId);
    if (roomsLeft.includes(m.roomId) && (m.membership === "join" || m.streamOrdering > w.eventsFrom)) mayHaveLeft.add(m.userId);
  }
  mayHaveLeft.delete(userId);
  if (mayHaveLeft.size === 0) return { changed: [...changed], left: [] };
  const stillSharing = new Set((await storage.rooms.joinedAmong([...mayHaveLeft], joinedRoomIds)).map((m) => m.userId));
  const left = [...mayHaveLeft].filter((u) => !stillSharing.has(u));
  return { changed: [...changed].filter((u) => !left.includes(u)), left };
}

/** The device's one-time key counts (always with `signed_curve25519`) and unused fallback key types. */
export async function keyCounts(storage: Storage, requester: Requester) {
  const counts = await storage.deviceKeys.keyCounts(requester.userId, requester.deviceId);
  return { oneTimeKeys: { [SIGNED_CURVE25519]: 0, ...counts.oneTimeKeys }, fallbackTypes: counts.unusedFallbackTypes };
}

export async function deviceSections(
  storage: Storage,
  requester: Requester,
  joinedRoomIds: string[],
  range: { toDeviceFrom: number; toDeviceTo: number; deviceListsFrom?: number; deviceListsTo: number; eventsFrom?: number; eventsTo: number },
): Promise<DeviceSectionsResult> {
  const toDevice = await readToDevice(storage, requester, range.toDeviceFrom, range.toDeviceTo);
  // Only an incremental sync reports changes; an initial one makes the client query everyone it needs.
  const from = range.deviceListsFrom;
  const lists =
    from === undefined || range.eventsFrom === undefined
      ? { changed: [], left: [] }
      : await deviceListChanges(storage, requester.userId, joinedRoomIds, { from, to: range.deviceListsTo, eventsFrom: range.eventsFrom, eventsTo: range.eventsTo });
  const keys = await keyCounts(storage, requester);
  return {
    sections: {
      to_device: { events: toDevice.events },
      device_lists: lists,
      device_one_time_keys_count: keys.oneTimeKeys,
      device_unused_fallback_key_types: keys.fallbackTypes,
      "org.matrix.msc2732.device_unused_fallback_key_types": keys.fallbackTypes,
    },
    toDevicePosition: toDevice.position,
    hasNews: toDevice.events.length > 0 || lists.changed.length > 0 || lists.left.length > 0,
  };
}
