/**
 * Read receipts and the read marker (spec: "Receipts", "Fully read markers").
 * `m.read` is shared with the room, `m.read.private` only with yourself, and
 * `m.fully_read` is room account data rather than a receipt.
 */
import { Errors } from "../errors.js";
import type { Storage } from "../storage/interfaces.js";
import type { Receipt } from "../storage/user_data.js";
import type { AccountDataService } from "./account_data.js";
import type { Requester } from "./auth.js";
import type { Clock } from "./clock.js";
import type { Notifier } from "./sync/notifier.js";

export const RECEIPT_TYPES = ["m.read", "m.read.private", "m.fully_read"] as const;
export type ReceiptType = (typeof RECEIPT_TYPES)[number];

export interface ReadMarkers {
  "m.fully_read"?: string;
  "m.read"?: string;
  "m.read.private"?: string;
}

export class ReceiptService {
  readonly #readListeners: ((userId: string) => void)[] = [];
  readonly #receiptListeners: ((receipt: Omit<Receipt, "streamId">) => void)[] = [];

  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly notifier: Notifier,
    private readonly accountData: AccountDataService,
  ) {}

  /** Called after each stored `m.read`/`m.read.private` receipt (pushers send badge updates). */
  onRead(listener: (userId: string) => void): void {
    this.#readListeners.push(listener);
  }

  /** Called after each stored receipt (federation sends the public ones to the room's other servers). */
  onReceipt(listener: (receipt: Omit<Receipt, "streamId">) => void): void {
    this.#receiptListeners.push(listener);
  }

  /** `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`. */
  async receipt(requester: Requester, roomId: string, receiptType: string, eventId: string, threadId?: unknown): Promise<void> {
    if (!(RECEIPT_TYPES as readonly string[]).includes(receiptType)) {
      throw Errors.invalidParam(`Receipt type ${receiptType} is not recognised`);
    }
    if (threadId !== undefined) {
      if (typeof threadId !== "string" || threadId === "") throw Errors.invalidParam("thread_id field must be a non-empty string");
      if (receiptType === "m.fully_read") throw Errors.invalidParam("thread_id is not allowed for m.fully_read");
      if (threadId !== "main" && !threadId.startsWith("$")) throw Errors.invalidParam("thread_id must be 'main' or an event ID");
    }
    await this.#checkTarget(requester, roomId, eventId);
    if (receiptType === "m.fully_read") await this.#fullyRead(requester, roomId, eventId);
    else await this.#store(requester, roomId, receiptType, eventId, threadId ?? null);
  }

  /** `POST /rooms/{roomId}/read_markers`: any of the three, in one call. */
  async readMarkers(requester: Requester, roomId: string, markers: ReadMarkers): Promise<void> {
    const given = (["m.fully_read", "m.read", "m.read.private"] as const).filter((t) => markers[t] !== undefined);
    for (const type of given) await this.#checkTarget(requester, roomId, markers[type]!);
    if (markers["m.fully_read"] !== undefined) await this.#fullyRead(requester, roomId, markers["m.fully_read"]);
    if (markers["m.read"] !== undefined) await this.#store(requester, roomId, "m.read", markers["m.read"], null);
    if (markers["m.read.private"] !== undefined) await this.#store(requester, roomId, "m.read.private", markers["m.read.private"], null);
  }

  async #checkTarget(requester: Requester, roomId: string, eventId: string): Promise<void> {
    const membership = await this.storage.rooms.membership(roomId, requester.userId);
    if (membership?.membership !== "join") throw Errors.forbidden("You are not in this room");
    const event = await this.storage.rooms.getEvent(eventId);
    if (!event || event.roomId !== roomId) throw Errors.notFound(`Event ${eventId} not found in this room`);
  }

  async #fullyRead(requester: Requester, roomId: string, eventId: string): Promise<void> {
    await this.accountData.write(requester.userId, roomId, "m.fully_read", { event_id: eventId });
  }

  async #store(requester: Requester, roomId: string, receiptType: string, eventId: string, threadId: string | null): Promise<void> {
    const receipt: Omit<Receipt, "streamId"> = { roomId, userId: requester.userId, receiptType, threadId, eventId, ts: this.clock.now() };
    await this.storage.receipts.set(receipt);
    // What the receipt covers is read: its plain notifications go, highlights stay for /notifications.
    const target = await this.storage.rooms.getEvent(eventId);
    if (target) await this.storage.pushActions.forgetRead(requester.userId, roomId, target.streamOrdering, threadId);
    // A private receipt concerns nobody else: wake only its owner's syncs.
    if (receiptType === "m.read.private") this.notifier.notify({ userIds: [requester.userId] });
    else this.notifier.notify({ roomIds: [roomId] });
    for (const listener of this.#readListeners) listener(requester.userId);
    for (const listener of this.#receiptListeners) listener(receipt);
  }
}
