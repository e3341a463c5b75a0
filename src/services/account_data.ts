/** Account data, global and per room (spec: "Client Config"). Only ever your own. */
import { Errors, MatrixError } from "../errors.js";
import type { Storage } from "../storage/interfaces.js";
import type { Requester } from "./auth.js";
import type { Notifier } from "./sync/notifier.js";

/** Types the server manages through other endpoints; the spec answers 405 M_BAD_JSON for them. */
const SERVER_MANAGED: Record<string, string> = {
  "m.fully_read": "Cannot set m.fully_read through this API. Use /rooms/{roomId}/read_markers",
  "m.push_rules": "Cannot set m.push_rules through this API. Use /pushrules",
};

/** `!opaque:server`, or (room version 12, MSC4291) `!` and the create event's 43-character hash. */
const ROOM_ID = /^!(?:[^:\s]+:\S+|[A-Za-z0-9_-]{43})$/;

export class AccountDataService {
  constructor(
    private readonly storage: Storage,
    private readonly notifier: Notifier,
  ) {}

  #checkAccess(requester: Requester, userId: string, verb: "add" | "get"): void {
    if (requester.userId !== userId) throw Errors.forbidden(`Cannot ${verb} account data for other users.`);
  }

  #checkRoomId(roomId: string | null): void {
    if (roomId !== null && !ROOM_ID.test(roomId)) throw Errors.invalidParam(`${roomId} is not a valid room ID.`);
  }

  async get(requester: Requester, userId: string, roomId: string | null, type: string): Promise<Record<string, unknown>> {
    this.#checkAccess(requester, userId, "get");
    this.#checkRoomId(roomId);
    const content = await this.storage.accountData.get(userId, roomId, type);
    if (content === undefined) throw Errors.notFound(roomId === null ? "Account data not found." : "Room account data not found.");
    return content;
  }

  async set(requester: Requester, userId: string, roomId: string | null, type: string, content: Record<string, unknown>): Promise<void> {
    this.#checkAccess(requester, userId, "add");
    this.#checkRoomId(roomId);
    const managed = SERVER_MANAGED[type];
    if (managed !== undefined) throw new MatrixError(405, "M_BAD_JSON", managed);
    await this.write(userId, roomId, type, content);
  }

  /** Stores without the client-facing checks (read markers use it for `m.fully_read`), and wakes the user's syncs. */
  async write(userId: string, roomId: string | null, type: string, content: Record<string, unknown>): Promise<void> {
    await this.storage.accountData.set(userId, roomId, type, content);
    this.notifier.notify({ userIds: [userId] });
  }
}
