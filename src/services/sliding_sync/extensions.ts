/**
 * Sliding-sync extensions: `to_device`, `e2ee`, `account_data`, `receipts`, `typing` and
 * MSC4354's sticky events (MSC4480). Each reads the same streams `/sync` v2 does, over the
 * positions of the request's `pos` and of this response. Unknown extensions never get here
 * (the request parser drops them).
 */
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import { toClientEvent } from "../rooms/client_format.js";
import { deviceListChanges, keyCounts, readToDevice } from "../sync/device_sections.js";
import { receiptEvents, typingEvent } from "../sync/ephemeral.js";
import type { SyncPosition } from "../sync/tokens.js";
import type { TypingService } from "../sync/typing.js";
import { unknownPos } from "./connection.js";
import type { ExtensionsRequest, RoomSelection } from "./request.js";

/** What the extensions need to know of the response the rooms part built. */
export interface ExtensionInput {
  storage: Storage;
  typing: TypingService;
  pushRules: (userId: string) => Promise<unknown>;
  requester: Requester;
  now: number;
  since?: SyncPosition;
  upTo: SyncPosition;
  /** Per list, the rooms in its ranges. */
  listRooms: Map<string, string[]>;
  subscribed: string[];
  joined: ReadonlySet<string>;
  /** Rooms matching any list (in a range or not) and subscribed ones: where sticky events are looked for. */
  interested: string[];
  /** Rooms sent with `initial` in this response: their room data is sent whole. */
  initialRooms: Set<string>;
  /** Per room, the position its missed updates start after (rooms that were out of range). */
  roomSince: Map<string, SyncPosition>;
  timelines: Map<string, string[]>;
}

export interface ExtensionsOutput {
  extensions: Record<string, unknown>;
  /** Something a long-poll should be answered for. */
  hasNews: boolean;
}

/** The rooms of the response an extension covers (MSC4186: `lists` and `rooms`, `*` meaning all). */
function selectedRooms(input: ExtensionInput, sel: RoomSelection): string[] {
  const out = new Set<string>();
  for (const [name, rooms] of input.listRooms) if (sel.lists.includes("*") || sel.lists.includes(name)) rooms.forEach((r) => out.add(r));
  for (const r of input.subscribed) if (sel.rooms.includes("*") || sel.rooms.includes(r)) out.add(r);
  return [...out].filter((r) => input.joined.has(r));
}

export async function buildExtensions(input: ExtensionInput, req: ExtensionsRequest): Promise<ExtensionsOutput> {
  const out: Record<string, unknown> = {};
  let hasNews = false;
  const { storage, requester, since, upTo } = input;
  if (req.toDevice) {
    const from = req.toDevice.since ?? 0;
    // A token from ahead of the stream (another server's, a restored database): nothing yet.
    const read = from > upTo.toDevice ? { events: [], position: from } : await readToDevice(storage, requester, from, upTo.toDevice, req.toDevice.limit);
    out.to_device = { next_batch: String(read.position), events: read.events };
    hasNews ||= read.events.length > 0;
  }
  if (req.e2ee) {
    const keys = await keyCounts(storage, requester);
    const e2ee: Record<string, unknown> = {
      device_one_time_keys_count: keys.oneTimeKeys,
      device_unused_fallback_key_types: keys.fallbackTypes,
    };
    // Only changes since the connection's position; a new connection makes the client query everyone.
    if (since) {
      const lists = await deviceListChanges(storage, requester.userId, [...input.joined], {
        from: since.deviceLists,
        to: upTo.deviceLists,
        eventsFrom: since.events,
        eventsTo: upTo.events,
      });
      e2ee.device_lists = lists;
      hasNews ||= lists.changed.length > 0 || lists.left.length > 0;
    }
    out.e2ee = e2ee;
  }
  if (req.accountData) {
    const data = await accountData(input, selectedRooms(input, req.accountData));
    out.account_data = data;
    hasNews ||= data.global.length > 0 || Object.keys(data.rooms).length > 0;
  }
  if (req.receipts) {
    const rooms = await receipts(input, selectedRooms(input, req.receipts));
    out.receipts = { rooms };
    hasNews ||= Object.keys(rooms).length > 0;
  }
  if (req.typing) {
    const rooms: Record<string, unknown> = {};
    for (const roomId of selectedRooms(input, req.typing)) {
      const snapshot = input.typing.snapshot(roomId);
      const fresh = !since || input.initialRooms.has(roomId);
      // A room new to the client gets typing only if someone types; a known one every change (even to nobody).
      if (fresh ? snapshot.userIds.length > 0 : snapshot.serial > since.typing) rooms[roomId] = typingEvent(snapshot);
    }
    out.typing = { rooms };
    hasNews ||= Object.keys(rooms).length > 0;
  }
  if (req.sticky) {
    const sticky = await stickyEvents(input, req.sticky);
    if (sticky) {
      out["org.matrix.msc4354.sticky_events"] = sticky;
      // A batch whose events all rode in the timelines moves `next_batch` on, but is nothing to wake for.
      hasNews ||= Object.keys(sticky.rooms).length > 0;
    }
  }
  return { extensions: out, hasNews };
}

interface AccountDataEvent {
  type: string;
  content: Record<string, unknown>;
}

/**
 * Global account data (all of it on a new connection, changes otherwise), with `m.push_rules`
 * as the server computes it; room account data whole for rooms new to the client, changes
 * for the others.
 */
async function accountData(input: ExtensionInput, roomIds: string[]) {
  const { storage, requester, since, upTo } = input;
  const userId = requester.userId;
  const from = since?.accountData ?? 0;
  const needsAll = roomIds.some((r) => from === 0 || input.initialRooms.has(r) || input.roomSince.has(r));
  const changes = await storage.accountData.changes(userId, needsAll ? 0 : from, upTo.accountData);
  const global: AccountDataEvent[] = [];
  let pushRulesChanged = !since;
  for (const c of changes) {
    if (c.roomId !== null || c.streamId <= from) continue;
    if (c.type === "m.push_rules") pushRulesChanged = true;
    else global.push({ type: c.type, content: c.content });
  }
  if (pushRulesChanged) global.push({ type: "m.push_rules", content: (await input.pushRules(userId)) as Record<string, unknown> });
  const wanted = new Set(roomIds);
  const rooms: Record<string, AccountDataEvent[]> = {};
  for (const c of changes) {
    if (c.roomId === null || !wanted.has(c.roomId)) continue;
    const roomFrom = input.initialRooms.has(c.roomId) ? 0 : (input.roomSince.get(c.roomId)?.accountData ?? from);
    if (c.streamId <= roomFrom) continue;
    (rooms[c.roomId] ??= []).push({ type: c.type, content: c.content });
  }
  return { global, rooms };
}

/**
 * Receipts: for a room new to the client, those on events of its timeline and the user's own;
 * otherwise every receipt since the client's position. Others' private receipts never.
 */
async function receipts(input: ExtensionInput, roomIds: string[]): Promise<Record<string, unknown>> {
  const { storage, since, upTo, requester } = input;
  const fresh = roomIds.filter((r) => !since || input.initialRooms.has(r) || input.roomSince.has(r));
  const known = roomIds.filter((r) => !fresh.includes(r));
  const all = [];
  // Rooms sent whole: one read for all of them, keeping receipts on their timelines and the user's own.
  const whole = fresh.filter((r) => !input.roomSince.has(r));
  for (const receipt of await storage.receipts.changes(whole, 0, upTo.receipts)) {
    if (receipt.userId === requester.userId || input.timelines.get(receipt.roomId)?.includes(receipt.eventId)) all.push(receipt);
  }
  // Rooms back in range: what they missed.
  for (const r of fresh.filter((x) => input.roomSince.has(x))) {
    all.push(...(await storage.receipts.changes([r], input.roomSince.get(r)!.receipts, upTo.receipts)));
  }
  if (since && known.length > 0) all.push(...(await storage.receipts.changes(known, since.receipts, upTo.receipts)));
  return Object.fromEntries(receiptEvents(all, requester.userId));
}

/**
 * MSC4480: the live sticky events of every room the user is joined to among those matching a
 * list or subscribed, oldest first and at most `limit`, without those the response's
 * timelines already carry; `next_batch` resumes after the last one sent. A non-empty batch
 * always comes with its `next_batch`, even when the timelines carried all of it: otherwise the
 * client asks from its old `since` again and gets the same events a second time.
 */
async function stickyEvents(input: ExtensionInput, req: { limit: number; since?: number }) {
  const { storage, upTo, now, requester } = input;
  const from = req.since ?? 0;
  // A `since` no response of this server gave (made up, or from before a database restore), as
  // Synapse answers it. The service waited for this process to catch up with it first.
  if (from > upTo.events) throw unknownPos();
  const rooms = input.interested.filter((r) => input.joined.has(r));
  if (from === upTo.events || rooms.length === 0) return undefined;
  const live = await storage.rooms.liveStickyEventsMany(rooms, from, upTo.events, now);
  const batch = live.slice(0, req.limit);
  const next = batch.length === req.limit && live.length > req.limit ? batch[batch.length - 1]!.streamOrdering : upTo.events;
  const byRoom: Record<string, { events: unknown[] }> = {};
  for (const e of batch) {
    if (input.timelines.get(e.roomId)?.includes(e.eventId)) continue;
    (byRoom[e.roomId] ??= { events: [] }).events.push(toClientEvent(e, now, requester));
  }
  if (batch.length === 0) return undefined;
  return { rooms: byRoom, next_batch: `sticky_${next}` };
}
