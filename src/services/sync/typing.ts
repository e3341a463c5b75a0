/**
 * Typing notifications (spec: "Typing Notifications"). Held in memory only:
 * they are worthless after a few seconds, so a restart may forget them.
 *
 * Every change (start, stop, expiry) takes a new serial; each room remembers
 * the serial of its last change, so `/sync` sends a room's `m.typing` when it is
 * newer than the client's token. Serials are the clock's milliseconds (or one
 * more than the last serial, if that is higher), not a counter from 0: they need
 * no shared counter to be comparable between processes, and a restart does not
 * start them again below the tokens clients hold.
 */
import { Errors } from "../../errors.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import type { Clock } from "../clock.js";
import type { Notifier } from "./notifier.js";

/** Synapse's default and cap for `timeout`. */
const DEFAULT_TIMEOUT_MS = 30_000;
const MAX_TIMEOUT_MS = 120_000;

interface RoomTyping {
  /** The serial of this room's last change. */
  serial: number;
  /** Typing users and the timer that ends their typing. */
  users: Map<string, NodeJS.Timeout>;
}

export interface TypingSnapshot {
  serial: number;
  userIds: string[];
}

export class TypingService {
  #position = 0;
  readonly #rooms = new Map<string, RoomTyping>();

  constructor(
    private readonly storage: Storage,
    private readonly notifier: Notifier,
    private readonly clock: Clock,
  ) {}

  /** The latest serial: the typing part of a sync token. */
  position(): number {
    return this.#position;
  }

  /** Who is typing in a room now, and the serial of the room's last change. */
  snapshot(roomId: string): TypingSnapshot {
    const room = this.#rooms.get(roomId);
    return room ? { serial: room.serial, userIds: [...room.users.keys()] } : { serial: 0, userIds: [] };
  }

  /** `PUT /rooms/{roomId}/typing/{userId}`: only for yourself, only in a room you are joined to. */
  async setTyping(requester: Requester, roomId: string, userId: string, typing: boolean, timeoutMs?: number): Promise<void> {
    if (userId !== requester.userId) throw Errors.forbidden("Cannot set another user's typing state");
    const membership = await this.storage.rooms.membership(roomId, userId);
    if (membership?.membership !== "join") throw Errors.forbidden("You are not in this room");
    if (typing) this.#start(roomId, userId, Math.min(timeoutMs ?? DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS));
    else this.#stop(roomId, userId);
  }

  /** A member who leaves (or is kicked or banned) stops typing at once. */
  membershipChanged(roomId: string, userId: string, membership: unknown): void {
    if (membership !== "join") this.#stop(roomId, userId);
  }

  #start(roomId: string, userId: string, timeoutMs: number): void {
    let room = this.#rooms.get(roomId);
    if (!room) {
      room = { serial: 0, users: new Map() };
      this.#rooms.set(roomId, room);
    }
    const existing = room.users.get(userId);
    if (existing) clearTimeout(existing);
    const timer = setTimeout(() => this.#stop(roomId, userId), timeoutMs);
    // A pending expiry must not keep the process alive on shutdown.
    timer.unref();
    room.users.set(userId, timer);
    // Renewing an existing typing state changes nothing a client sees.
    if (!existing) this.#changed(roomId, room);
  }

  #stop(roomId: string, userId: string): void {
    const room = this.#rooms.get(roomId);
    const timer = room?.users.get(userId);
    if (!room || !timer) return;
    clearTimeout(timer);
    room.users.delete(userId);
    this.#changed(roomId, room);
  }

  #changed(roomId: string, room: RoomTyping): void {
    this.#position = Math.max(this.clock.now(), this.#position + 1);
    room.serial = this.#position;
    this.notifier.notify({ roomIds: [roomId] });
  }

  /** Clears every timer (used on shutdown). */
  close(): void {
    for (const room of this.#rooms.values()) for (const timer of room.users.values()) clearTimeout(timer);
    this.#rooms.clear();
  }
}
