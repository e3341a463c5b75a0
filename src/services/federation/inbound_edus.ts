/**
 * EDUs received in transactions. A server speaks only for its own users: an EDU about a user
 * of another server is ignored, as are typing and receipts of a user not joined to the room
 * (as this server knows the room). Malformed EDUs and unknown types are ignored, never failing
 * the transaction; presence is not served, so `m.presence` is dropped.
 */
import { isValidUserId, serverNameOf } from "../../events/ids.js";
import type { ToDeviceMessage } from "../../storage/e2ee.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Clock } from "../clock.js";
import type { Notifier } from "../sync/notifier.js";

/** What received EDUs change locally; the services that own it. */
export interface LocalEduSinks {
  notifier: Notifier;
  /** Another server's user started or stopped typing (ends by itself if no stop comes). */
  setRemoteTyping(roomId: string, userId: string, typing: boolean): Promise<void>;
  /** Wakes the syncs of the local users sharing a room with the user (their device_lists.changed). */
  announceDeviceChange(userId: string): Promise<void>;
}

export interface EduLogger {
  info(obj: object, msg: string): void;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

export class InboundEdus {
  constructor(
    private readonly serverName: string,
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly sinks: LocalEduSinks | undefined,
    private readonly logger: EduLogger,
  ) {}

  /** One EDU of a transaction from `origin`; resolves whatever happened to it. */
  async handle(origin: string, edu: unknown): Promise<void> {
    if (!isObj(edu) || typeof edu.edu_type !== "string" || !isObj(edu.content) || !this.sinks) return;
    const content = edu.content;
    switch (edu.edu_type) {
      case "m.typing":
        return this.#typing(origin, content, this.sinks);
      case "m.receipt":
        return this.#receipts(origin, content, this.sinks);
      case "m.direct_to_device":
        return this.#toDevice(origin, content, this.sinks);
      case "m.device_list_update":
      case "m.signing_key_update":
        return this.#deviceList(origin, content, this.sinks);
      default:
        return;
    }
  }

  /** A user of `origin` that is joined to the room here. */
  async #joinedFrom(origin: string, roomId: unknown, userId: unknown): Promise<boolean> {
    if (typeof roomId !== "string" || typeof userId !== "string" || !isValidUserId(userId) || serverNameOf(userId) !== origin) return false;
    return (await this.storage.rooms.membership(roomId, userId))?.membership === "join";
  }

  async #typing(origin: string, c: Obj, sinks: LocalEduSinks): Promise<void> {
    if (typeof c.typing !== "boolean") return;
    if (!(await this.#joinedFrom(origin, c.room_id, c.user_id))) {
      this.logger.info({ origin, roomId: c.room_id, userId: c.user_id }, "federation: ignoring typing of a user the origin does not host, or not in the room");
      return;
    }
    await sinks.setRemoteTyping(c.room_id as string, c.user_id as string, c.typing);
  }

  async #receipts(origin: string, c: Obj, sinks: LocalEduSinks): Promise<void> {
    const rooms = new Set<string>();
    for (const [roomId, byType] of Object.entries(c)) {
      if (!isObj(byType)) continue;
      // Only public read receipts travel between servers.
      const byUser = byType["m.read"];
      if (!isObj(byUser)) continue;
      for (const [userId, receipt] of Object.entries(byUser)) {
        if (!isObj(receipt) || !Array.isArray(receipt.event_ids)) continue;
        const eventId = receipt.event_ids.find((e): e is string => typeof e === "string");
        if (eventId === undefined || !(await this.#joinedFrom(origin, roomId, userId))) continue;
        const data = isObj(receipt.data) ? receipt.data : {};
        const ts = typeof data.ts === "number" && Number.isSafeInteger(data.ts) ? data.ts : this.clock.now();
        const threadId = typeof data.thread_id === "string" && data.thread_id !== "" ? data.thread_id : null;
        await this.storage.receipts.set({ roomId, userId, receiptType: "m.read", threadId, eventId, ts });
        rooms.add(roomId);
      }
    }
    if (rooms.size > 0) sinks.notifier.notify({ roomIds: rooms });
  }

  async #toDevice(origin: string, c: Obj, sinks: LocalEduSinks): Promise<void> {
    const { sender, type, message_id: messageId, messages } = c;
    if (typeof sender !== "string" || serverNameOf(sender) !== origin || typeof type !== "string" || typeof messageId !== "string" || !isObj(messages)) {
      this.logger.info({ origin, sender }, "federation: ignoring a to-device message not from a user of its origin");
      return;
    }
    const queued: ToDeviceMessage[] = [];
    for (const [userId, byDevice] of Object.entries(messages)) {
      if (serverNameOf(userId) !== this.serverName || !isObj(byDevice)) continue;
      for (const [deviceId, body] of Object.entries(byDevice)) {
        if (!isObj(body)) continue;
        const json = JSON.stringify(body);
        const targets = deviceId === "*" ? (await this.storage.devices.listDevices(userId)).map((d) => d.deviceId) : [deviceId];
        for (const target of targets) queued.push({ userId, deviceId: target, sender, type, content: json });
      }
    }
    const recipients = await this.storage.federationQueue.acceptToDevice(sender, messageId, queued, this.clock.now());
    if (recipients && recipients.length > 0) sinks.notifier.notify({ userIds: recipients });
  }

  async #deviceList(origin: string, c: Obj, sinks: LocalEduSinks): Promise<void> {
    const userId = c.user_id;
    if (typeof userId !== "string" || serverNameOf(userId) !== origin) return;
    // Only users sharing a room with someone here matter: the others' changes concern nobody.
    const memberships = await this.storage.rooms.membershipsOf(userId);
    if (!memberships.some((m) => m.membership === "join")) return;
    await this.storage.deviceKeys.recordDeviceListChange(userId);
    await sinks.announceDeviceChange(userId);
  }
}
