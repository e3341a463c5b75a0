/**
 * Typing notifications (spec: "Typing Notifications"). Held in memory only:
 * they are worthless after a few seconds, so a restart may forget them.
 *
 * Every change (start, stop, expiry) takes a position of the `typing` stream, and
 * each room remembers the position of its last change, so `/sync` sends a room's
 * `m.typing` when it is newer than the client's token. With several processes on
 * the database, each change is told to the others (cluster topic `typing`) while
 * its position still holds their readers back, so a client that moves between
 * processes sees every change once. The process where a user started typing ends
 * it when it expires; if that process dies, the others end it instead.
 */
import { Errors } from "../../errors.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import type { Clock } from "../clock.js";
import type { Notifier } from "./notifier.js";

/** Synapse's default and cap for `timeout`. */
const DEFAULT_TIMEOUT_MS = 30_000;
const MAX_TIMEOUT_MS = 120_000;
/** Another server's user types until it says otherwise or this long passes (Synapse's figure). */
const REMOTE_TIMEOUT_MS = 60_000;

interface Typist {
  expiresAt: number;
  /** The process that ends this typing when it expires. */
  origin: string;
  timer?: NodeJS.Timeout;
}

interface RoomTyping {
  /** The position of this room's last change. */
  serial: number;
  users: Map<string, Typist>;
  /** The position of each user's last change here, so an older change arriving late is ignored. */
  changed: Map<string, number>;
}

export interface TypingSnapshot {
  serial: number;
  userIds: string[];
}

/** What the processes tell each other about one change. */
interface TypingChange {
  roomId: string;
  userId: string;
  typing: boolean;
  expiresAt: number;
  position: number;
}

function isTypingChange(body: unknown): body is TypingChange {
  const b = body as Partial<TypingChange> | null;
  return (
    typeof b === "object" &&
    b !== null &&
    typeof b.roomId === "string" &&
    typeof b.userId === "string" &&
    typeof b.typing === "boolean" &&
    typeof b.expiresAt === "number" &&
    typeof b.position === "number"
  );
}

export class TypingService {
  readonly #rooms = new Map<string, RoomTyping>();
  readonly #listeners: ((roomId: string, userId: string, typing: boolean) => void)[] = [];
  /** Changes are made one at a time, so they apply here in the order of their positions. */
  #chain: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(
    private readonly storage: Storage,
    private readonly notifier: Notifier,
    private readonly clock: Clock,
  ) {
    storage.cluster.subscribe("typing", (body, from) => {
      if (isTypingChange(body)) this.#apply(body, from);
    });
    storage.cluster.onWorkerGone((worker) => this.#adoptFrom(worker));
  }

  /** The latest position: the typing part of a sync token. */
  position(): number {
    return this.storage.streams.current("typing");
  }

  /** Who is typing in a room now, and the position of the room's last change. */
  snapshot(roomId: string): TypingSnapshot {
    const room = this.#rooms.get(roomId);
    return room ? { serial: room.serial, userIds: [...room.users.keys()] } : { serial: 0, userIds: [] };
  }

  /** `PUT /rooms/{roomId}/typing/{userId}`: only for yourself, only in a room you are joined to. */
  async setTyping(requester: Requester, roomId: string, userId: string, typing: boolean, timeoutMs?: number): Promise<void> {
    if (userId !== requester.userId) throw Errors.forbidden("Cannot set another user's typing state");
    const membership = await this.storage.rooms.membership(roomId, userId);
    if (membership?.membership !== "join") throw Errors.forbidden("You are not in this room");
    const timeout = Math.min(timeoutMs ?? DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS);
    await this.#change(roomId, userId, typing, this.clock.now() + timeout);
  }

  /**
   * Called in the process that makes each change (a start, a renewal, a stop or an expiry),
   * for federation to tell the room's other servers.
   */
  onChange(listener: (roomId: string, userId: string, typing: boolean) => void): void {
    this.#listeners.push(listener);
  }

  /** Another server says its user started or stopped typing (it checked the user is theirs and joined). */
  async setRemoteTyping(roomId: string, userId: string, typing: boolean): Promise<void> {
    await this.#change(roomId, userId, typing, typing ? this.clock.now() + REMOTE_TIMEOUT_MS : 0);
  }

  /**
   * A member who leaves (or is kicked or banned) stops typing at once. Resolves once the stop
   * has its position and is applied, so the leave is answered only after a sync can see it. A
   * stop that fails does not fail the leave: the typing state still times out.
   */
  async membershipChanged(roomId: string, userId: string, membership: unknown): Promise<void> {
    if (membership !== "join" && this.#rooms.get(roomId)?.users.has(userId)) await this.#change(roomId, userId, false, 0).catch(() => undefined);
  }

  /** Takes a position, tells the other processes, applies it here and wakes this room's syncs. */
  #change(roomId: string, userId: string, typing: boolean, expiresAt: number): Promise<void> {
    const run = async () => {
      if (this.#closed) return;
      const room = this.#rooms.get(roomId);
      // Renewing an existing typing state changes nothing a client sees: only its expiry moves.
      const existing = room?.users.get(userId);
      if (typing && existing && existing.origin === this.storage.cluster.workerId) {
        this.#arm(roomId, userId, existing, expiresAt);
        // Other servers time typing out on their own: a renewal keeps it alive there.
        for (const listener of this.#listeners) listener(roomId, userId, true);
        return;
      }
      if (!typing && !existing) return;
      const position = await this.storage.typing.nextPosition((p) =>
        this.storage.cluster.publish("typing", { roomId, userId, typing, expiresAt, position: p } satisfies TypingChange),
      );
      this.#apply({ roomId, userId, typing, expiresAt, position }, this.storage.cluster.workerId);
      this.notifier.notify({ roomIds: [roomId] });
      for (const listener of this.#listeners) listener(roomId, userId, typing);
    };
    const next = this.#chain.then(run, run);
    this.#chain = next.catch(() => undefined);
    return next;
  }

  #apply(change: TypingChange, origin: string): void {
    let room = this.#rooms.get(change.roomId);
    if (!room) {
      room = { serial: 0, users: new Map(), changed: new Map() };
      this.#rooms.set(change.roomId, room);
    }
    if ((room.changed.get(change.userId) ?? 0) > change.position) return;
    room.changed.set(change.userId, change.position);
    room.serial = Math.max(room.serial, change.position);
    const existing = room.users.get(change.userId);
    if (existing?.timer) clearTimeout(existing.timer);
    if (!change.typing) {
      room.users.delete(change.userId);
      return;
    }
    const typist: Typist = { expiresAt: change.expiresAt, origin };
    room.users.set(change.userId, typist);
    if (origin === this.storage.cluster.workerId) this.#arm(change.roomId, change.userId, typist, change.expiresAt);
  }

  /** The process that owns a typing state ends it when it expires. */
  #arm(roomId: string, userId: string, typist: Typist, expiresAt: number): void {
    if (typist.timer) clearTimeout(typist.timer);
    typist.expiresAt = expiresAt;
    typist.timer = setTimeout(() => void this.#change(roomId, userId, false, 0).catch(() => undefined), Math.max(0, expiresAt - this.clock.now()));
    // A pending expiry must not keep the process alive on shutdown.
    typist.timer.unref();
  }

  /** A process died: its typing states are ended here when they expire (by every survivor; a second end changes nothing). */
  #adoptFrom(worker: string): void {
    for (const [roomId, room] of this.#rooms) {
      for (const [userId, typist] of room.users) {
        if (typist.origin !== worker) continue;
        typist.origin = this.storage.cluster.workerId;
        this.#arm(roomId, userId, typist, typist.expiresAt);
      }
    }
  }

  /** Clears every timer (used on shutdown). */
  close(): void {
    this.#closed = true;
    for (const room of this.#rooms.values()) for (const t of room.users.values()) if (t.timer) clearTimeout(t.timer);
    this.#rooms.clear();
  }
}
