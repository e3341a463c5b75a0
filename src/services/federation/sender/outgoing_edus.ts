/**
 * EDUs from local activity, for the servers that should hear of it: typing and public read
 * receipts go to the servers of the room's other joined members; to-device messages to the
 * recipients' servers; device-list and cross-signing key changes to every server sharing a
 * room with the user. Memberships are read when the activity happens, so a server whose
 * users joined since hears of what follows. Only local users' activity goes out: what other
 * servers told us is theirs to tell.
 */
import { randomBytes } from "node:crypto";
import { serverNameOf } from "../../../events/ids.js";
import type { Storage } from "../../../storage/interfaces.js";
import { BoundedMap } from "../../bounded_map.js";
import type { Clock } from "../../clock.js";
import type { SenderLogger } from "./sender.js";

export interface EduSink {
  sendEdu(destination: string, eduType: string, content: Record<string, unknown>): Promise<void>;
}

/** How often a continuing typing state is told again to other servers. */
const TYPING_REPEAT_MS = 40_000;

export class OutgoingEdus {
  readonly #typingSent = new BoundedMap<string, number>(10_000);

  constructor(
    private readonly serverName: string,
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly sink: EduSink,
    private readonly logger: SenderLogger,
  ) {}

  #local(userId: string): boolean {
    return serverNameOf(userId) === this.serverName;
  }

  /** Runs in the background: the local operation that caused it has already succeeded. */
  #background(what: string, work: () => Promise<void>): void {
    void work().catch((err: unknown) => this.logger.warn({ err }, `federation: could not queue ${what}`));
  }

  /** Servers (other than this one) with a member joined to the room. */
  async roomServers(roomId: string): Promise<string[]> {
    const servers = new Set<string>();
    for (const m of await this.storage.rooms.membersOf(roomId, "join")) {
      const server = serverNameOf(m.userId);
      if (server !== undefined && server !== this.serverName) servers.add(server);
    }
    return [...servers];
  }

  /** Servers (other than this one) sharing a joined room with the user. */
  async serversSharingRoomsWith(userId: string): Promise<string[]> {
    const joined = (await this.storage.rooms.membershipsOf(userId)).filter((m) => m.membership === "join").map((m) => m.roomId);
    if (joined.length === 0) return [];
    const servers = new Set<string>();
    for (const m of await this.storage.rooms.membershipsIn(joined)) {
      if (m.membership !== "join") continue;
      const server = serverNameOf(m.userId);
      if (server !== undefined && server !== this.serverName) servers.add(server);
    }
    return [...servers];
  }

  typing(roomId: string, userId: string, typing: boolean): void {
    if (!this.#local(userId)) return;
    // A client renews its typing every few seconds; other servers need a renewal only before
    // their own timeout (60 s at Synapse), so repeats within 40 s stay here.
    const key = JSON.stringify([roomId, userId]);
    const now = this.clock.now();
    if (typing) {
      const last = this.#typingSent.get(key);
      if (last !== undefined && now - last < TYPING_REPEAT_MS) return;
      this.#typingSent.set(key, now);
    } else {
      this.#typingSent.delete(key);
    }
    this.#background("m.typing", async () => {
      for (const server of await this.roomServers(roomId)) await this.sink.sendEdu(server, "m.typing", { room_id: roomId, user_id: userId, typing });
    });
  }

  /** A public read receipt (`m.read`); private ones never leave the server. */
  receipt(r: { roomId: string; userId: string; receiptType: string; threadId: string | null; eventId: string; ts: number }): void {
    if (r.receiptType !== "m.read" || !this.#local(r.userId)) return;
    this.#background("m.receipt", async () => {
      const data: Record<string, unknown> = { ts: r.ts };
      if (r.threadId !== null) data.thread_id = r.threadId;
      const content = { [r.roomId]: { "m.read": { [r.userId]: { event_ids: [r.eventId], data } } } };
      for (const server of await this.roomServers(r.roomId)) await this.sink.sendEdu(server, "m.receipt", content);
    });
  }

  /** To-device messages for other servers' users: one `m.direct_to_device` per server. */
  toDevice(sender: string, type: string, messages: Record<string, Record<string, unknown>>): void {
    const byServer = new Map<string, Record<string, Record<string, unknown>>>();
    for (const [userId, byDevice] of Object.entries(messages)) {
      const server = serverNameOf(userId);
      if (server === undefined || server === this.serverName) continue;
      let forServer = byServer.get(server);
      if (!forServer) byServer.set(server, (forServer = {}));
      forServer[userId] = byDevice;
    }
    if (byServer.size === 0) return;
    this.#background("m.direct_to_device", async () => {
      for (const [server, forServer] of byServer) {
        // The receiver deduplicates on (sender, message_id): a retried transaction delivers once.
        const content = { sender, type, message_id: randomBytes(16).toString("hex"), messages: forServer };
        await this.sink.sendEdu(server, "m.direct_to_device", content);
      }
    });
  }

  /**
   * A local user's devices changed: with `deviceId`, that device's keys (or its deletion) as
   * `m.device_list_update`; without, the user's cross-signing keys as `m.signing_key_update`.
   */
  deviceChanged(userId: string, deviceId?: string): void {
    if (!this.#local(userId)) return;
    this.#background(deviceId === undefined ? "m.signing_key_update" : "m.device_list_update", async () => {
      const servers = await this.serversSharingRoomsWith(userId);
      if (servers.length === 0) return;
      const [type, content] = deviceId === undefined ? await this.#signingKeys(userId) : await this.#deviceUpdate(userId, deviceId);
      if (content === undefined) return;
      for (const server of servers) await this.sink.sendEdu(server, type, content);
    });
  }

  async #deviceUpdate(userId: string, deviceId: string): Promise<[string, Record<string, unknown> | undefined]> {
    // stream_id is this change's position; prev_id the user's change before it, as the receiver
    // uses it to notice a missed update.
    const [streamId, prevId] = await this.storage.federationQueue.deviceListStreamIds(userId, 2);
    const content: Record<string, unknown> = { user_id: userId, device_id: deviceId, stream_id: streamId ?? 0, prev_id: prevId === undefined ? [] : [prevId] };
    const [record] = await this.storage.deviceKeys.deviceKeys(userId, [deviceId]);
    if (record) {
      content.keys = JSON.parse(record.json) as unknown;
      if (record.displayName !== null) content.device_display_name = record.displayName;
    } else {
      content.deleted = true;
    }
    return ["m.device_list_update", content];
  }

  async #signingKeys(userId: string): Promise<[string, Record<string, unknown> | undefined]> {
    const keys = await this.storage.crossSigning.keys([userId]);
    const content: Record<string, unknown> = { user_id: userId };
    for (const k of keys) {
      if (k.keyType === "master") content.master_key = JSON.parse(k.json) as unknown;
      if (k.keyType === "self_signing") content.self_signing_key = JSON.parse(k.json) as unknown;
    }
    return ["m.signing_key_update", Object.keys(content).length > 1 ? content : undefined];
  }
}
