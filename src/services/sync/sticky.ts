/**
 * MSC4354 sticky events in `/sync`: `rooms.join.{id}.msc4354_sticky.events`
 * carries the room's sticky events that are still sticky and that the client
 * has not been sent, whatever the timeline limit, without the ones the
 * timeline of the same response already holds. Like the timeline, each is sent
 * once: an incremental sync covers only events after `since`; a room new to
 * the client (a join, an initial sync) gets every live one. History
 * visibility does not apply to them (the MSC): joined members see them all.
 */
import type { StoredEvent } from "../../storage/rooms.js";
import { toClientEvent, type ClientEvent, type Viewer } from "../rooms/client_format.js";

/** The unstable key of the sync section (MSC4354's `sticky`). */
export const STICKY_SECTION = "msc4354_sticky";

/** `live`: the room's sticky events of the window still live at `now` (read for all rooms at once). */
export function stickyEvents(
  live: StoredEvent[],
  window: { from: number; to: number },
  timeline: ClientEvent[],
  now: number,
  viewer: Viewer,
): ClientEvent[] {
  if (window.to <= window.from) return [];
  const inTimeline = new Set(timeline.map((e) => e.event_id));
  return live.filter((e) => !inTimeline.has(e.eventId)).map((e) => toClientEvent(e, now, viewer));
}
