/**
 * Rooms across servers, assembled: events received in transactions, this server as resident
 * server (make/send join and leave, invites to our users), our users in rooms resident
 * elsewhere, what other servers may read of a room, and our events sent to the room's servers.
 */
import { resolveState, roomIdOfEvent, serverNameOf, type Pdu } from "../../../events/index.js";
import type { Storage } from "../../../storage/interfaces.js";
import type { Clock } from "../../clock.js";
import type { EventPersister, PersistedEvent } from "../../rooms/persister.js";
import type { RemoteRooms } from "../../rooms/remote_rooms.js";
import { RemoteEventPersister } from "../../rooms/remote_persister.js";
import type { SigningKey } from "../../signing_key.js";
import type { FederationService } from "../service.js";
import { FederationEventSource, serversInRoom, withoutUnsigned } from "./event_source.js";
import { RemoteBackfill } from "./backfill.js";
import { InboundPdus } from "./inbound.js";
import { RemoteMembership } from "./remote_membership.js";
import { ResidentServer } from "./resident.js";
import type { FederatedRoomDeps } from "./types.js";

export class FederatedRooms implements RemoteRooms {
  readonly remotePersister: RemoteEventPersister;
  readonly source: FederationEventSource;
  readonly resident: ResidentServer;
  readonly membership: RemoteMembership;
  readonly inbound: InboundPdus;
  /** Earlier history from the room's other servers, for `/messages`. */
  readonly history: RemoteBackfill;
  readonly #serverName: string;
  readonly #storage: Storage;
  readonly #federation: FederationService;

  constructor(storage: Storage, clock: Clock, persister: EventPersister, federation: FederationService, signingKey: () => SigningKey) {
    this.#serverName = federation.serverName;
    this.#storage = storage;
    this.#federation = federation;
    this.remotePersister = new RemoteEventPersister(storage, persister, resolveState, clock);
    this.source = new FederationEventSource(storage, persister.dag, resolveState, federation.serverName, clock);
    const checker = federation.pduChecker;
    const deps: FederatedRoomDeps = {
      serverName: federation.serverName,
      storage,
      clock,
      client: federation.client,
      persister,
      remote: this.remotePersister,
      source: this.source,
      checkPdu: async (raw, version, opts) => {
        const result = await checker.check(raw, version, opts);
        if (result.ok && result.rejectedReason !== undefined) return { ok: false, eventId: result.eventId, reason: result.rejectedReason };
        return result;
      },
      sendPdu: (pdu, eventId, destinations) => federation.sender.sendPdu(pdu, eventId, destinations),
      signingKey,
    };
    this.resident = new ResidentServer(deps);
    this.membership = new RemoteMembership(deps);
    this.inbound = new InboundPdus(deps);
    this.history = new RemoteBackfill(deps);
    federation.transactions.setPduHandler(this.inbound);
    persister.onPersisted((event) => this.#sendOut(event));
  }

  async resolveAlias(alias: string): Promise<{ roomId: string; servers: string[] }> {
    const found = await this.#federation.directory.fetch(alias);
    return { roomId: found.room_id, servers: found.servers };
  }

  async isResident(roomId: string): Promise<boolean> {
    return (await serversInRoom(this.#storage, roomId)).has(this.#serverName);
  }

  join(userId: string, roomId: string, servers: readonly string[], content: Record<string, unknown>): Promise<string> {
    return this.membership.join(userId, roomId, servers, content);
  }

  invite(inviter: string, roomId: string, target: string, content: Record<string, unknown>): Promise<string> {
    return this.membership.invite(inviter, roomId, target, content);
  }

  knock(userId: string, roomId: string, servers: readonly string[], content: Record<string, unknown>): Promise<string> {
    return this.membership.knock(userId, roomId, servers, content);
  }

  leaveUnjoined(userId: string, roomId: string, servers: readonly string[]): Promise<void> {
    return this.membership.leaveUnjoined(userId, roomId, servers);
  }

  /**
   * Our own events go to every other server with a member joined to the room; an invite also
   * goes to the invitee's server. Events from other servers are theirs to send.
   */
  async #sendOut({ eventId, pdu, origin }: PersistedEvent): Promise<void> {
    if (origin === "federation" || serverNameOf(pdu.sender) !== this.#serverName) return;
    // One indexed read that finds nothing for a room with no one from elsewhere: local rooms stay cheap.
    const servers = new Set((await this.#storage.roomDag.remoteJoinedMembers(roomIdOfEvent(pdu, eventId), this.#serverName)).map((u) => serverNameOf(u)!));
    if (pdu.type === "m.room.member" && typeof pdu.state_key === "string") {
      const target = serverNameOf(pdu.state_key);
      if (target && pdu.content.membership !== "invite") servers.add(target);
    }
    servers.delete(this.#serverName);
    if (servers.size === 0) return;
    await this.#federation.sender.sendPdu(withoutUnsigned(pdu) as Pdu, eventId, [...servers]);
  }
}
