/** Writing to rooms: creation, messages, state, membership and redaction. */
import { randomBytes } from "node:crypto";
import type { Config } from "../../config/config.js";
import { Errors, MatrixError } from "../../errors.js";
import {
  isValidUserId,
  pduOf,
  serverNameOf,
  ROOM_VERSIONS,
} from "../../events/index.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import type { Clock } from "../clock.js";
import type { RateLimiter } from "../ratelimiter.js";
import { applyRedaction } from "./redactions.js";
import { remoteJoinTarget, serversKnowing, type RemoteRooms } from "./remote_rooms.js";
import { planInitialState, type CreateRoomRequest } from "./create_room.js";
import { additionalCreatorsFor, RoomIdClaims } from "./room_ids_v12.js";
import type { EventDraft, EventPersister } from "./persister.js";

export interface SendOptions {
  /** MSC4354: keep the event sticky for this long. */
  stickyDurationMs?: number;
}

export interface CreateRoomInput extends CreateRoomRequest {
  roomVersion?: string;
}

export class RoomService {
  #remote: RemoteRooms | undefined;

  /** Federation hands itself in once assembled. */
  useRemoteRooms(remote: RemoteRooms): void {
    this.#remote = remote;
  }

  constructor(
    private readonly config: Config,
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly persister: EventPersister,
    private readonly messageLimiter: RateLimiter,
  ) {
    // Every event the persister stores, local or from another server, applies its redaction here
    // (the remote persister then applies the redactions that were waiting for its events).
    persister.inTransaction((tx, event, version) => applyRedaction(tx, event, version, this.clock.now()));
    this.#roomIds = new RoomIdClaims(storage, clock);
  }

  /** Room version 12 room IDs handed out and not yet stored. */
  readonly #roomIds: RoomIdClaims;

  #newRoomId(): string {
    return `!${randomBytes(18).toString("base64url")}:${this.config.serverName}`;
  }

  aliasFor(localpart: string): string {
    return `#${localpart}:${this.config.serverName}`;
  }

  async createRoom(requester: Requester, req: CreateRoomInput): Promise<{ room_id: string; room_alias?: string }> {
    const versionId = req.roomVersion ?? this.config.defaultRoomVersion;
    const version = ROOM_VERSIONS[versionId];
    if (!version) {
      throw new MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", `Room version ${versionId} is not supported by this server`);
    }
    // Users of other servers are invited over federation once the room exists, as Synapse does;
    // local ones get their invite among the room's first events.
    const remoteInvites = req.invite.filter((u) => this.#isRemoteUser(u));
    const localInvites = req.invite.filter((u) => !remoteInvites.includes(u));
    for (const invitee of localInvites) await this.#requireLocalUser(invitee);
    let alias: string | undefined;
    if (req.roomAliasName !== undefined) {
      if (!/^[^:\s#]+$/.test(req.roomAliasName)) throw Errors.invalidParam("Invalid characters in room alias");
      alias = this.aliasFor(req.roomAliasName);
      if (await this.storage.rooms.getAlias(alias)) throw new MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken");
    }
    const creator = requester.userId;
    const createContent: Record<string, unknown> = { ...(req.creationContent ?? {}), room_version: versionId };
    if (!version.implicitRoomCreator) createContent.creator = creator;
    else delete createContent.creator;
    let createTs: number | undefined;
    if (version.privilegedCreators) {
      const extra = additionalCreatorsFor(req);
      if (extra) createContent.additional_creators = extra;
    }
    let roomId: string;
    if (version.roomIdIsCreateEventId) ({ roomId, createTs } = await this.#roomIds.claim(creator, createContent, version));
    else roomId = this.#newRoomId();
    const draft = (type: string, stateKey: string, content: Record<string, unknown>): EventDraft => ({
      roomId,
      sender: creator,
      type,
      stateKey,
      content,
    });
    const drafts: EventDraft[] = [
      { ...draft("m.room.create", "", createContent), originServerTs: createTs },
      draft("m.room.member", creator, { membership: "join", ...(await this.#profileContent(creator)) }),
      ...planInitialState(req, creator, alias, version.privilegedCreators).map((s) => draft(s.type, s.stateKey, s.content)),
      ...localInvites.map((invitee) => draft("m.room.member", invitee, { membership: "invite", ...(req.isDirect ? { is_direct: true } : {}) })),
    ];
    // Refuse a room the rules would reject part of before anything is stored.
    try {
      this.persister.checkNewRoom(drafts, version);
      await this.persister.persistNewRoom(drafts, version, async (tx) => {
        await tx.rooms.createRoom({ roomId, roomVersion: versionId, creator, createdTs: this.clock.now(), isPublic: req.visibility === "public" });
        if (alias && !(await tx.rooms.setAlias(alias, roomId, creator))) {
          throw new MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken");
        }
      });
    } finally {
      this.#roomIds.release(roomId);
    }
    // A failed remote invite fails the request, though the room stays made (as in Synapse): the
    // client learns the invite did not reach, and can retry it with /invite.
    for (const invitee of remoteInvites) await this.#remote!.invite(creator, roomId, invitee, req.isDirect ? { is_direct: true } : {});
    return alias ? { room_id: roomId, room_alias: alias } : { room_id: roomId };
  }

  #isRemoteUser(userId: string): boolean {
    return this.#remote !== undefined && isValidUserId(userId) && serverNameOf(userId) !== this.config.serverName;
  }

  async #requireLocalUser(userId: string): Promise<void> {
    if (!/^@[^:]+:.+$/.test(userId)) throw Errors.invalidParam(`Invalid user ID: ${userId}`);
    if (!userId.endsWith(`:${this.config.serverName}`)) {
      throw Errors.forbidden("This server does not federate: only its own users can be invited");
    }
    if (!(await this.storage.accounts.getUser(userId))) throw Errors.notFound(`Unknown user ${userId}`);
  }

  async #profileContent(userId: string): Promise<Record<string, unknown>> {
    const profile = await this.storage.accounts.getProfile(userId);
    const out: Record<string, unknown> = {};
    if (profile?.displayname) out.displayname = profile.displayname;
    if (profile?.avatar_url) out.avatar_url = profile.avatar_url;
    return out;
  }

  /** Resolves a room ID or alias to a room that exists here. */
  async resolveRoom(roomIdOrAlias: string): Promise<string> {
    if (roomIdOrAlias.startsWith("#")) {
      const found = await this.storage.rooms.getAlias(roomIdOrAlias);
      if (!found) throw Errors.notFound(`Room alias ${roomIdOrAlias} not found`);
      return found.roomId;
    }
    if (!roomIdOrAlias.startsWith("!")) throw Errors.invalidParam(`${roomIdOrAlias} is not a room ID or alias`);
    if (!(await this.storage.rooms.getRoom(roomIdOrAlias))) throw Errors.notFound("No known servers for this room");
    return roomIdOrAlias;
  }

  async send(
    requester: Requester,
    roomId: string,
    type: string,
    content: Record<string, unknown>,
    txnId?: string,
    opts: SendOptions = {},
  ): Promise<string> {
    this.messageLimiter.ratelimit(requester.userId);
    // A room ID goes straight to the persister: the room lock it takes reads the room anyway,
    // and answers 404 M_NOT_FOUND for one that is not here, as resolveRoom would.
    const resolved = roomId.startsWith("!") ? roomId : await this.resolveRoom(roomId);
    const event = await this.persister.persist({
      roomId: resolved,
      sender: requester.userId,
      type,
      content,
      txn: txnId === undefined ? undefined : { deviceId: requester.deviceId, txnId, scope: ["send", resolved, type] },
      stickyDurationMs: opts.stickyDurationMs,
    });
    return event.eventId;
  }

  async setState(
    requester: Requester,
    roomId: string,
    type: string,
    stateKey: string,
    content: Record<string, unknown>,
    opts: SendOptions = {},
  ): Promise<string> {
    if (type === "m.room.member") return this.#membership(requester.userId, roomId, stateKey, content);
    this.messageLimiter.ratelimit(requester.userId);
    const event = await this.persister.persist({
      roomId: await this.resolveRoom(roomId),
      sender: requester.userId,
      type,
      stateKey,
      content,
      stickyDurationMs: opts.stickyDurationMs,
    });
    return event.eventId;
  }

  async #membership(sender: string, roomId: string, target: string, content: Record<string, unknown>): Promise<string> {
    const event = await this.persister.persist({
      roomId: await this.resolveRoom(roomId),
      sender,
      type: "m.room.member",
      stateKey: target,
      content,
    });
    return event.eventId;
  }

  async join(requester: Requester, roomIdOrAlias: string, reason?: string, via: readonly string[] = []): Promise<string> {
    const remote = this.#remote && (await remoteJoinTarget(this.storage, this.#remote!, this.config.serverName, roomIdOrAlias, via));
    if (remote && !remote.resident && this.#remote) {
      const content = { ...(await this.#profileContent(requester.userId)), ...(reason ? { reason } : {}) };
      return this.#remote.join(requester.userId, remote.roomId, remote.servers, content);
    }
    const roomId = remote ? remote.roomId : await this.resolveRoom(roomIdOrAlias);
    const current = await this.storage.rooms.membership(roomId, requester.userId);
    if (current?.membership === "join") return roomId;
    await this.#membership(requester.userId, roomId, requester.userId, {
      membership: "join",
      ...(await this.#profileContent(requester.userId)),
      ...(reason ? { reason } : {}),
    });
    return roomId;
  }

  /**
   * Knocks on a room (spec: "Knocking on rooms"): a member event here when the room is resident,
   * else through the servers that know it. The auth rules decide who may knock.
   */
  async knock(requester: Requester, roomIdOrAlias: string, reason?: string, via: readonly string[] = []): Promise<string> {
    const content = { ...(await this.#profileContent(requester.userId)), ...(reason ? { reason } : {}) };
    const remote = this.#remote && (await remoteJoinTarget(this.storage, this.#remote, this.config.serverName, roomIdOrAlias, via));
    if (remote && !remote.resident && this.#remote) return this.#remote.knock(requester.userId, remote.roomId, remote.servers, content);
    const roomId = remote ? remote.roomId : await this.resolveRoom(roomIdOrAlias);
    await this.#membership(requester.userId, roomId, requester.userId, { ...content, membership: "knock" });
    return roomId;
  }

  /**
   * A new display name or avatar goes into the user's member event in every room they are
   * joined to, as the spec asks and Synapse does: clients show room members from those events.
   * One room failing (its state moved under us) does not stop the others.
   */
  async refreshMemberProfiles(userId: string, log: (err: unknown, roomId: string) => void): Promise<void> {
    const profile = await this.#profileContent(userId);
    for (const m of await this.storage.rooms.membershipsOf(userId)) {
      if (m.membership !== "join") continue;
      try {
        const current = await this.storage.rooms.currentStateEvent(m.roomId, "m.room.member", userId);
        const content = current ? pduOf(current).content : {};
        if (content.displayname === profile.displayname && content.avatar_url === profile.avatar_url) continue;
        await this.#membership(userId, m.roomId, userId, { membership: "join", ...profile });
      } catch (err) {
        log(err, m.roomId);
      }
    }
  }

  async invite(requester: Requester, roomIdOrAlias: string, target: string, reason?: string): Promise<void> {
    if (this.#isRemoteUser(target)) {
      const roomId = await this.resolveRoom(roomIdOrAlias);
      const current = await this.storage.rooms.membership(roomId, target);
      if (current?.membership === "join") throw Errors.forbidden(`${target} is already in the room`);
      await this.#remote!.invite(requester.userId, roomId, target, reason ? { reason } : {});
      return;
    }
    await this.#requireLocalUser(target);
    const roomId = await this.resolveRoom(roomIdOrAlias);
    const current = await this.storage.rooms.membership(roomId, target);
    if (current?.membership === "join") throw Errors.forbidden(`${target} is already in the room`);
    await this.#membership(requester.userId, roomId, target, { membership: "invite", ...(reason ? { reason } : {}) });
  }

  async leave(requester: Requester, roomIdOrAlias: string, reason?: string): Promise<void> {
    const roomId = await this.resolveRoom(roomIdOrAlias);
    const current = await this.storage.rooms.membership(roomId, requester.userId);
    if (!current || current.membership === "leave") return;
    if (this.#remote && !(await this.#remote.isResident(roomId))) {
      // An invite from another server to a room we are not in: rejected through the servers that know it.
      await this.#remote.leaveUnjoined(requester.userId, roomId, await serversKnowing(this.storage, roomId));
      return;
    }
    await this.#membership(requester.userId, roomId, requester.userId, { membership: "leave", ...(reason ? { reason } : {}) });
  }

  /** The room and target of a kick, ban or unban; the target need not be known here, but must be a user ID. */
  async #moderation(roomIdOrAlias: string, target: string): Promise<string> {
    if (!isValidUserId(target)) throw Errors.invalidParam(`Invalid user ID: ${target}`);
    return this.resolveRoom(roomIdOrAlias);
  }

  async kick(requester: Requester, roomIdOrAlias: string, target: string, reason?: string): Promise<void> {
    const roomId = await this.#moderation(roomIdOrAlias, target);
    const current = await this.storage.rooms.membership(roomId, target);
    if (!current || !["join", "invite", "knock"].includes(current.membership)) {
      throw Errors.forbidden(`${target} is not in the room`);
    }
    await this.#membership(requester.userId, roomId, target, { membership: "leave", ...(reason ? { reason } : {}) });
  }

  async ban(requester: Requester, roomIdOrAlias: string, target: string, reason?: string): Promise<void> {
    const roomId = await this.#moderation(roomIdOrAlias, target);
    await this.#membership(requester.userId, roomId, target, { membership: "ban", ...(reason ? { reason } : {}) });
  }

  async unban(requester: Requester, roomIdOrAlias: string, target: string, reason?: string): Promise<void> {
    const roomId = await this.#moderation(roomIdOrAlias, target);
    const current = await this.storage.rooms.membership(roomId, target);
    if (current?.membership !== "ban") throw Errors.forbidden(`${target} is not banned`);
    await this.#membership(requester.userId, roomId, target, { membership: "leave", ...(reason ? { reason } : {}) });
  }

  async forget(requester: Requester, roomId: string): Promise<void> {
    const current = await this.storage.rooms.membership(roomId, requester.userId);
    if (current && ["join", "invite", "knock"].includes(current.membership)) {
      throw new MatrixError(400, "M_UNKNOWN", "You must leave the room before forgetting it");
    }
    await this.storage.rooms.forgetRoom(requester.userId, roomId);
  }

  async redactEvent(requester: Requester, roomId: string, eventId: string, txnId: string, reason?: string): Promise<string> {
    this.messageLimiter.ratelimit(requester.userId);
    const version = await this.persister.roomVersion(roomId);
    // The sender's right to redact is checked by the persister, whichever endpoint sent the redaction.
    const event = await this.persister.persist(
      {
        roomId,
        sender: requester.userId,
        type: "m.room.redaction",
        content: reason ? { reason } : {},
        // Top-level in room version 10, `content.redacts` from 11: buildEvent puts it in place.
        redacts: eventId,
        txn: { deviceId: requester.deviceId, txnId, scope: ["redact", roomId, eventId] },
      },
      version,
    );
    return event.eventId;
  }
}
