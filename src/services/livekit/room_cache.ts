/**
 * Which LiveKit rooms this process made sure of lately, so that a burst of `get_token` requests
 * for one call costs the SFU one CreateRoom rather than one each. Requests that arrive while the
 * creation is under way wait for that same creation; a creation that fails is forgotten at once,
 * so the next request tries again.
 */
import type { Clock } from "../clock.js";

/**
 * How long a room made sure of is taken to be there still. The SFU keeps a room nobody joined for
 * its empty timeout (300 s) and closes one everybody left after its departure timeout (20 s): an
 * entry lasts less than the latter, so that a room closed meanwhile is made again within seconds
 * even when no `room_finished` webhook says so.
 */
export const ROOM_KNOWN_FOR_MS = 10_000;
/** Expired entries are swept when the map grows past this, so that it stays bounded by the rooms in use. */
const SWEEP_ABOVE = 1024;

interface Entry {
  /** Set while the creation is under way: later requests wait for it. */
  pending?: Promise<void>;
  /** Once created: until when the room is taken to be there. */
  until: number;
}

export class RoomCache {
  readonly #rooms = new Map<string, Entry>();

  constructor(private readonly clock: Clock) {}

  /** Resolves once `room` is there: at once when it was made lately, else after `create` (shared by concurrent callers). */
  ensure(room: string, create: () => Promise<void>): Promise<void> {
    const now = this.clock.now();
    const known = this.#rooms.get(room);
    if (known?.pending) return known.pending;
    if (known && now < known.until) return Promise.resolve();
    if (this.#rooms.size >= SWEEP_ABOVE) this.#sweep(now);
    const entry: Entry = { until: 0 };
    entry.pending = create().then(
      () => {
        entry.pending = undefined;
        entry.until = this.clock.now() + ROOM_KNOWN_FOR_MS;
      },
      (err: unknown) => {
        // Only this attempt's entry: a `forget` and a newer attempt may have replaced it.
        if (this.#rooms.get(room) === entry) this.#rooms.delete(room);
        throw err;
      },
    );
    this.#rooms.set(room, entry);
    return entry.pending;
  }

  /** The SFU closed the room (its `room_finished` webhook): the next request makes it again. */
  forget(room: string): void {
    const entry = this.#rooms.get(room);
    // A creation under way started after the room closed, so it stands.
    if (entry && !entry.pending) this.#rooms.delete(room);
  }

  get size(): number {
    return this.#rooms.size;
  }

  #sweep(now: number): void {
    for (const [room, entry] of this.#rooms) if (!entry.pending && entry.until <= now) this.#rooms.delete(room);
  }
}
