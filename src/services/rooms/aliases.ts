/** Room aliases: `#name:server` pointing at a room. */
import type { Config } from "../../config/config.js";
import { Errors, MatrixError } from "../../errors.js";
import { getRoomVersion, pduOf, PowerLevels } from "../../events/index.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import { stateLookup } from "./state_lookup.js";

const ALIAS = /^#[^:\s]+:(.+)$/;

export class AliasService {
  constructor(
    private readonly config: Config,
    private readonly storage: Storage,
    /** Asks another server about one of its aliases (federation's directory query). */
    private readonly remote?: (alias: string) => Promise<{ room_id: string; servers: string[] }>,
  ) {}

  #local(alias: string): string {
    const match = ALIAS.exec(alias);
    if (!match) throw Errors.invalidParam(`Invalid room alias: ${alias}`);
    if (match[1] !== this.config.serverName) throw Errors.invalidParam("Room alias must be on this server");
    if (alias.length > 255) throw Errors.invalidParam("Room alias is too long");
    return alias;
  }

  async resolve(alias: string): Promise<{ room_id: string; servers: string[] }> {
    const match = ALIAS.exec(alias);
    if (match && match[1] !== this.config.serverName && this.remote) return this.remote(alias);
    const found = await this.storage.rooms.getAlias(this.#local(alias));
    if (!found) throw Errors.notFound(`Room alias ${alias} not found`);
    return { room_id: found.roomId, servers: [this.config.serverName] };
  }

  async create(requester: Requester, alias: string, roomId: string): Promise<void> {
    this.#local(alias);
    if (!(await this.storage.rooms.getRoom(roomId))) throw Errors.notFound("Room not found");
    const membership = await this.storage.rooms.membership(roomId, requester.userId);
    if (membership?.membership !== "join") throw Errors.forbidden("You must be in the room to give it an alias");
    if (!(await this.storage.rooms.setAlias(alias, roomId, requester.userId))) {
      throw new MatrixError(409, "M_UNKNOWN", `Room alias ${alias} already exists`);
    }
  }

  async delete(requester: Requester, alias: string): Promise<void> {
    const found = await this.storage.rooms.getAlias(this.#local(alias));
    if (!found) throw Errors.notFound(`Room alias ${alias} not found`);
    if (found.creator !== requester.userId && !(await this.#canManage(requester.userId, found.roomId))) {
      throw Errors.forbidden("You may not delete this alias");
    }
    await this.storage.rooms.deleteAlias(alias);
  }

  /** `GET /directory/list/room/{roomId}`: whether the room is published in the room directory. */
  async visibility(roomId: string): Promise<{ visibility: "public" | "private" }> {
    const room = await this.storage.rooms.getRoom(roomId);
    if (!room) throw Errors.notFound("Room not found");
    return { visibility: room.isPublic ? "public" : "private" };
  }

  /** `PUT /directory/list/room/{roomId}`: for joined members who may change the canonical alias (as Synapse has it). */
  async setVisibility(requester: Requester, roomId: string, visibility: "public" | "private"): Promise<void> {
    if (!(await this.storage.rooms.getRoom(roomId))) throw Errors.notFound("Room not found");
    const membership = await this.storage.rooms.membership(roomId, requester.userId);
    if (membership?.membership !== "join" || !(await this.#canManage(requester.userId, roomId))) {
      throw Errors.forbidden("You may not change whether this room is published");
    }
    await this.storage.rooms.setRoomPublic(roomId, visibility === "public");
  }

  /** Room admins (power to change m.room.canonical_alias) may remove anyone's alias, as in Synapse. */
  async #canManage(userId: string, roomId: string): Promise<boolean> {
    const user = await this.storage.accounts.getUser(userId);
    if (user?.isAdmin) return true;
    const version = getRoomVersion((await this.storage.rooms.getRoom(roomId))?.roomVersion ?? "");
    if (!version) return false;
    const state = await this.storage.rooms.currentState(roomId);
    const levels = PowerLevels.fromState(stateLookup(state), version);
    return levels.userLevel(userId) >= levels.requiredLevel("m.room.canonical_alias", true);
  }

  /** `GET /rooms/{roomId}/aliases`: for members, and for anyone when the room is world-readable. */
  async list(requester: Requester, roomId: string): Promise<string[]> {
    const membership = await this.storage.rooms.membership(roomId, requester.userId);
    if (membership?.membership !== "join") {
      const hv = await this.storage.rooms.currentStateEvent(roomId, "m.room.history_visibility", "");
      if (!hv || pduOf(hv).content.history_visibility !== "world_readable") {
        throw Errors.forbidden("You are not in this room");
      }
    }
    return this.storage.rooms.aliasesOf(roomId);
  }
}
