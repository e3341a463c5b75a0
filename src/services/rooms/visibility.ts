/**
 * Who may see which events (spec: "History visibility"). Works over a
 * contiguous run of one room's events, walking state forward once instead of
 * computing the state at every event.
 */
import type { Storage } from "../../storage/interfaces.js";
import { stateKeyOf, type StoredEvent } from "../../storage/rooms.js";
import { pduOf } from "../../events/index.js";

export type Visibility = "world_readable" | "shared" | "invited" | "joined";

/** An `m.room.history_visibility` content's setting; anything else, or none, is `shared`. */
export function visibilityOf(content: Record<string, unknown> | undefined): Visibility {
  const v = content?.history_visibility;
  return v === "world_readable" || v === "invited" || v === "joined" ? v : "shared";
}

const PERMISSIVENESS: Visibility[] = ["joined", "invited", "shared", "world_readable"];

/**
 * Keeps the events `userId` may see. `events` must be one room's events in
 * stream order with no gaps. `joinedAtEnd` says whether the user is (or, for
 * a user who left, was until then) joined at the end of the range: under
 * "shared", that is what unlocks history from before they joined.
 */
export async function filterVisible(
  storage: Storage,
  userId: string,
  events: StoredEvent[],
  joinedAtEnd: boolean,
): Promise<StoredEvent[]> {
  if (events.length === 0) return events;
  const first = events[0]!;
  const before = await storage.rooms.stateAt(first.roomId, first.streamOrdering - 1);
  const hvEvent = before.get(stateKeyOf("m.room.history_visibility", ""));
  let visibility = visibilityOf(hvEvent ? pduOf(hvEvent).content : undefined);
  const memberEvent = before.get(stateKeyOf("m.room.member", userId));
  let membership = memberEvent ? (pduOf(memberEvent).content.membership as string | undefined) : undefined;

  const out: StoredEvent[] = [];
  for (const event of events) {
    let effective = visibility;
    if (event.type === "m.room.history_visibility" && event.stateKey === "") {
      const next = visibilityOf(pduOf(event).content);
      // The change itself is judged by the more permissive of the old and new setting, as Synapse does.
      effective = PERMISSIVENESS[Math.max(PERMISSIVENESS.indexOf(visibility), PERMISSIVENESS.indexOf(next))]!;
      visibility = next;
    }
    if (event.type === "m.room.member" && event.stateKey === userId) {
      membership = pduOf(event).content.membership as string | undefined;
    }
    if (
      effective === "world_readable" ||
      membership === "join" ||
      (effective === "shared" && joinedAtEnd) ||
      (effective === "invited" && membership === "invite") ||
      // Everyone sees their own membership changes, such as being kicked or banned.
      (event.type === "m.room.member" && event.stateKey === userId)
    ) {
      out.push(event);
    }
  }
  return out;
}
