/**
 * Send-to-device messaging (spec: "Send-to-Device messaging"): a message to
 * one device, or to every device of a user with `*`, queued until the device
 * has acknowledged it by syncing past it. Each transaction is delivered once.
 * Messages for other servers' users go to the `onRemote` listeners (federation).
 */
import { Errors } from "../../errors.js";
import type { ToDeviceMessage } from "../../storage/e2ee.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import { serverNameOf } from "../../events/index.js";
import type { Notifier } from "../sync/notifier.js";
import { dict } from "../../records.js";

/** All devices of the user. */
const ALL_DEVICES = "*";

export class ToDeviceService {
  readonly #remoteListeners: ((sender: string, type: string, messages: Record<string, Record<string, unknown>>) => void)[] = [];

  constructor(
    private readonly storage: Storage,
    private readonly notifier: Notifier,
    private readonly serverName: string,
  ) {}

  /** Called once per sender transaction with its messages for other servers' users (by user, then device or `*`). */
  onRemote(listener: (sender: string, type: string, messages: Record<string, Record<string, unknown>>) => void): void {
    this.#remoteListeners.push(listener);
  }

  /** `PUT /sendToDevice/{eventType}/{txnId}`. */
  async send(requester: Requester, type: string, txnId: string, messages: Record<string, Record<string, unknown>>): Promise<void> {
    const queued: ToDeviceMessage[] = [];
    const remote = dict<Record<string, unknown>>();
    for (const [userId, byDevice] of Object.entries(messages)) {
      const local = serverNameOf(userId) === this.serverName;
      for (const [deviceId, content] of Object.entries(byDevice)) {
        if (typeof content !== "object" || content === null || Array.isArray(content)) {
          throw Errors.badJson(`The message for ${userId} ${deviceId} must be an object`);
        }
        if (!local) {
          if (serverNameOf(userId) !== undefined) (remote[userId] ??= dict())[deviceId] = content;
          continue;
        }
        const json = JSON.stringify(content);
        const targets = deviceId === ALL_DEVICES ? (await this.storage.devices.listDevices(userId)).map((d) => d.deviceId) : [deviceId];
        for (const target of targets) queued.push({ userId, deviceId: target, sender: requester.userId, type, content: json });
      }
    }
    const txn = { userId: requester.userId, deviceId: requester.deviceId, txnId };
    if (await this.storage.toDevice.add(queued, txn)) {
      const recipients = new Set(queued.map((m) => m.userId));
      if (recipients.size > 0) this.notifier.notify({ userIds: recipients });
      if (Object.keys(remote).length > 0) for (const listener of this.#remoteListeners) listener(requester.userId, type, remote);
    }
  }
}
