/** The notification counts of each joined room in a `/sync` response (spec: "Receiving notifications"). */
import type { PushActionStore } from "../../storage/push.js";

interface Counts {
  notification_count: number;
  highlight_count: number;
}

/**
 * Fills in `unread_notifications` (and `unread_thread_notifications`) of the rooms in `rooms`,
 * as of the response's position `upTo`. With thread counts asked for, `unread_notifications`
 * covers the main timeline and each thread is counted apart; otherwise every thread counts
 * towards the room.
 */
export async function addNotificationCounts(
  store: PushActionStore,
  rooms: Record<string, Record<string, unknown>>,
  userId: string,
  upTo: number,
  perThread: boolean,
): Promise<void> {
  const counts = await store.counts(userId, Object.keys(rooms), upTo);
  for (const [roomId, room] of counts) {
    const entry = rooms[roomId]!;
    const main = perThread ? (room.threads.get("main") ?? { notify: 0, highlight: 0 }) : room;
    entry.unread_notifications = { notification_count: main.notify, highlight_count: main.highlight } satisfies Counts;
    if (!perThread) continue;
    const threads: Record<string, Counts> = {};
    for (const [threadId, c] of room.threads) {
      if (threadId !== "main") threads[threadId] = { notification_count: c.notify, highlight_count: c.highlight };
    }
    if (Object.keys(threads).length > 0) entry.unread_thread_notifications = threads;
  }
}
