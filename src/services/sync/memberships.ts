/** The user's memberships as one sync response sees them; shared by `/sync` v2 and sliding sync. */
import type { Storage } from "../../storage/interfaces.js";
import type { MembershipRecord } from "../../storage/rooms.js";

/** The user's membership in each room as of `position`, even if it changed since. */
export async function membershipsAt(storage: Storage, userId: string, position: number): Promise<MembershipRecord[]> {
  const current = await storage.rooms.membershipsOf(userId);
  if (current.every((m) => m.streamOrdering <= position)) return current;
  // A membership changed after `position` was read: use the last change up to it instead.
  const last = new Map<string, MembershipRecord>();
  for (const c of await storage.rooms.membershipChanges(userId, 0, position)) last.set(c.roomId, c);
  return current.map((m) => (m.streamOrdering <= position ? m : last.get(m.roomId))).filter((m): m is MembershipRecord => m !== undefined);
}

/** The user's membership changes in (from, to], per room, oldest first. */
export async function membershipChangesByRoom(storage: Storage, userId: string, from: number, to: number): Promise<Map<string, MembershipRecord[]>> {
  const changes = new Map<string, MembershipRecord[]>();
  for (const c of await storage.rooms.membershipChanges(userId, from, to)) {
    const list = changes.get(c.roomId) ?? [];
    list.push(c);
    changes.set(c.roomId, list);
  }
  return changes;
}
