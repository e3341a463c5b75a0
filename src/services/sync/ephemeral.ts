/** The ephemeral events of `/sync`: `m.typing` and `m.receipt`, one of each per room at most. */
import type { Receipt } from "../../storage/user_data.js";
import type { TypingSnapshot } from "./typing.js";
import { dict } from "../../records.js";

export interface EphemeralEvent {
  type: string;
  content: Record<string, unknown>;
}

export function typingEvent(snapshot: TypingSnapshot): EphemeralEvent {
  return { type: "m.typing", content: { user_ids: snapshot.userIds } };
}

/**
 * Groups receipts into one `m.receipt` event per room:
 * `{ eventId: { receiptType: { userId: { ts, thread_id? } } } }`.
 * Private receipts are shown to their owner only.
 */
export function receiptEvents(receipts: Receipt[], viewerId: string): Map<string, EphemeralEvent> {
  const byRoom = new Map<string, Record<string, Record<string, Record<string, Record<string, unknown>>>>>();
  for (const r of receipts) {
    if (r.receiptType === "m.read.private" && r.userId !== viewerId) continue;
    let content = byRoom.get(r.roomId);
    if (!content) {
      content = dict();
      byRoom.set(r.roomId, content);
    }
    // Event IDs come from other servers' receipts too: no key may reach a prototype.
    const forEvent = (content[r.eventId] ??= dict());
    const forType = (forEvent[r.receiptType] ??= dict());
    forType[r.userId] = r.threadId === null ? { ts: r.ts } : { ts: r.ts, thread_id: r.threadId };
  }
  const out = new Map<string, EphemeralEvent>();
  for (const [roomId, content] of byRoom) out.set(roomId, { type: "m.receipt", content });
  return out;
}
