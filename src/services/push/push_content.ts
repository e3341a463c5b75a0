/**
 * What a push says besides the rule's actions: the event, the names to show, and the user's
 * badge. Every recipient of an event gets the same event and names, so those are read once per
 * event (kept briefly, in this process only: nothing another process must see); the badge is
 * the user's, read once per batch of pushes.
 */
import { pduOf } from "../../events/index.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Badge, PendingPush } from "../../storage/pushers.js";
import { stateKeyOf } from "../../storage/rooms.js";
import type { Clock } from "../clock.js";
import type { PushContext, PushEvent } from "./gateway.js";
import { trimOldest } from "../bounded_map.js";

/** Events remembered, and for how long: the pushes of one event go out within moments. */
const CACHED_EVENTS = 1_000;
const CACHE_MS = 10_000;

type EventPart = Omit<PushEvent, "actions">;
type Names = Omit<PushContext, "unread">;

/**
 * When a badge is read, in microseconds since the epoch: the pushers' record of the last badge
 * sent keeps the latest-read one, so a delivery that records its badge late cannot overwrite a
 * newer one sent meanwhile (a read receipt's badge-only push). A monotonic clock from the
 * process's start, so that no wall-clock step reorders one process's reads; other processes'
 * stamps are as comparable as their clocks.
 */
function badgeStamp(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

interface Entry {
  at: number;
  /** Undefined when the event is gone or redacted: nothing worth alerting about. */
  event: EventPart | undefined;
  names: Names;
}

export class PushContent {
  readonly #events = new Map<string, Promise<Entry>>();
  /** Badges asked for and not read yet, by user. */
  #badgeWaiters = new Map<string, { resolve: (badge: Badge) => void; reject: (err: unknown) => void }[]>();

  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
  ) {}

  /** The event to push with the names to show; undefined when it is gone or redacted. */
  async event(push: PendingPush): Promise<{ event: PushEvent; names: Names } | undefined> {
    const now = this.clock.now();
    let entry = this.#events.get(push.eventId);
    if (entry && now - (await entry).at > CACHE_MS) entry = undefined;
    if (!entry) {
      entry = this.#read(push.eventId, now);
      this.#events.delete(push.eventId);
      this.#events.set(push.eventId, entry);
      trimOldest(this.#events, CACHED_EVENTS);
      // A failed read is not remembered.
      entry.catch(() => this.#events.delete(push.eventId));
    }
    const { event, names } = await entry;
    return event && { event: { ...event, actions: JSON.parse(push.actions) as unknown[] }, names };
  }

  /**
   * The user's unread notifications across joined rooms, plus one per pending invite (Synapse's
   * badge). An event notifies a whole room's members at once, and their pushers ask at once:
   * the badges asked for in one turn of the event loop are read together, with one query.
   */
  badge(userId: string): Promise<Badge> {
    return new Promise((resolve, reject) => {
      let waiting = this.#badgeWaiters.get(userId);
      if (!waiting) this.#badgeWaiters.set(userId, (waiting = []));
      waiting.push({ resolve, reject });
      if (this.#badgeWaiters.size === 1 && waiting.length === 1) setImmediate(() => void this.#readBadges());
    });
  }

  async #readBadges(): Promise<void> {
    const waiters = this.#badgeWaiters;
    this.#badgeWaiters = new Map();
    try {
      const readUs = badgeStamp();
      const badges = await this.storage.pushActions.badges([...waiters.keys()], this.storage.streams.current("events"));
      for (const [userId, list] of waiters) for (const w of list) w.resolve({ count: badges.get(userId) ?? 0, readUs });
    } catch (err) {
      for (const list of waiters.values()) for (const w of list) w.reject(err);
    }
  }

  async #read(eventId: string, at: number): Promise<Entry> {
    const stored = await this.storage.rooms.getEvent(eventId);
    if (!stored || stored.redactedBy !== null) return { at, event: undefined, names: {} };
    const pdu = pduOf(stored);
    const event: EventPart = {
      eventId: stored.eventId,
      roomId: stored.roomId,
      type: stored.type,
      sender: stored.sender,
      ...(stored.stateKey !== null ? { stateKey: stored.stateKey } : {}),
      content: pdu.content,
    };
    const state = await this.storage.rooms.currentStateEvents(stored.roomId, [
      ["m.room.member", stored.sender],
      ["m.room.name", ""],
      ["m.room.canonical_alias", ""],
    ]);
    const field = (type: string, key: string, name: string) => {
      const found = state.get(stateKeyOf(type, key));
      const value = found ? pduOf(found).content[name] : undefined;
      return typeof value === "string" && value !== "" ? value : undefined;
    };
    return {
      at,
      event,
      names: {
        senderDisplayName: field("m.room.member", stored.sender, "displayname"),
        // Synapse's choice: the room's name, else its canonical alias; no name made from members.
        roomName: field("m.room.name", "", "name") ?? field("m.room.canonical_alias", "", "alias"),
      },
    };
  }
}
