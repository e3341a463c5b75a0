/**
 * This server as the resident server of a room another server's user joins, leaves, knocks on or
 * is invited into: `make_join`/`send_join` (v2), `make_leave`/`send_leave` (v2),
 * `make_knock`/`send_knock` (v1), and the invite
 * another server sends one of our users (`invite` v2).
 */
import { Errors, MatrixError } from "../../../errors.js";
import {
  AuthError,
  authEventTypes,
  checkEventAuth,
  eventIdFor,
  getRoomVersion,
  isRecord,
  membershipOf,
  PowerLevels,
  serverNameOf,
  signEvent,
  type Pdu,
  type RoomVersion,
} from "../../../events/index.js";
import { stateKeyOf } from "../../../storage/rooms.js";
import { stateLookup } from "../../rooms/state_lookup.js";
import { serversInRoom, withoutUnsigned } from "./event_source.js";
import { knockRoomState } from "./knock.js";
import type { FederatedRoomDeps } from "./types.js";

type Membership = "join" | "leave" | "knock";

export class ResidentServer {
  constructor(private readonly deps: FederatedRoomDeps) {}

  #signer() {
    const key = this.deps.signingKey();
    return { serverName: this.deps.serverName, keyId: key.keyId, privateKey: key.privateKey };
  }

  /** `make_join`/`make_leave`: an unsigned template of the member event, built on the room's current extremities. */
  async makeMembership(origin: string, roomId: string, userId: string, membership: Membership, supported?: readonly string[]) {
    if (serverNameOf(userId) !== origin) throw Errors.forbidden(`${origin} cannot ask for a ${membership} of ${userId}`);
    const room = await this.deps.storage.rooms.getRoom(roomId);
    if (!room || !(await serversInRoom(this.deps.storage, roomId)).has(this.deps.serverName)) {
      throw new MatrixError(404, "M_NOT_FOUND", "This server is not in that room");
    }
    const version = getRoomVersion(room.roomVersion)!;
    if (membership !== "leave" && supported !== undefined && !supported.includes(version.id)) {
      throw new MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", `The room's version ${version.id} is not among the versions you support`, {
        room_version: version.id,
      });
    }
    const content: Record<string, unknown> = { membership };
    const { state, head } = await this.deps.storage.transaction(async (tx) => {
      const stored = (await tx.roomDag.lockRoomDag(roomId))!;
      const h = await this.deps.persister.readHead(tx, roomId, stored);
      return { state: await tx.rooms.currentState(roomId), head: h };
    });
    const lookup = stateLookup(state);
    if (membership === "join") await this.#authoriseRestricted(roomId, userId, lookup, version, content);
    const authKeys = authEventTypes("m.room.member", userId, userId, content, version);
    const prev = [...head.extremities].sort((a, b) => b.depth - a.depth).slice(0, 10);
    const event: Pdu = {
      room_id: roomId,
      sender: userId,
      state_key: userId,
      type: "m.room.member",
      content,
      auth_events: authKeys.map(([t, k]) => state.get(stateKeyOf(t, k))?.eventId).filter((id): id is string => id !== undefined),
      prev_events: prev.map((e) => e.eventId),
      depth: Math.max(0, ...prev.map((e) => e.depth)) + 1,
      origin_server_ts: this.deps.clock.now(),
      hashes: { sha256: "" },
      signatures: {},
    };
    try {
      checkEventAuth(event, lookup, version, { verifyServerSignature: () => true });
    } catch (err) {
      if (err instanceof AuthError) throw Errors.forbidden(`${userId} cannot ${membership}: ${err.message}`);
      throw err;
    }
    const { hashes: _h, signatures: _s, ...template } = event;
    return { event: template, room_version: version.id };
  }

  /**
   * A restricted room (join rule `restricted`/`knock_restricted`): a user not invited needs a
   * local member who may invite to vouch (`join_authorised_via_users_server`), as Synapse does
   * when the joiner is in one of the allowed rooms here.
   */
  async #authoriseRestricted(roomId: string, userId: string, lookup: ReturnType<typeof stateLookup>, version: RoomVersion, content: Record<string, unknown>) {
    const rule = lookup("m.room.join_rules", "")?.content.join_rule;
    if (rule !== "restricted" && rule !== "knock_restricted") return;
    const current = membershipOf(lookup("m.room.member", userId));
    if (current === "invite" || current === "join") return;
    const allow = lookup("m.room.join_rules", "")?.content.allow;
    const allowed = Array.isArray(allow) ? allow.filter(isRecord).map((a) => a.room_id).filter((id): id is string => typeof id === "string") : [];
    let member = false;
    for (const other of allowed) if ((await this.deps.storage.rooms.membership(other, userId))?.membership === "join") member = true;
    if (!member) throw Errors.forbidden(`${userId} is not in any room the join rules allow`);
    const levels = PowerLevels.fromState(lookup, version);
    for (const m of await this.deps.storage.rooms.membersOf(roomId, "join")) {
      if (serverNameOf(m.userId) === this.deps.serverName && levels.userLevel(m.userId) >= levels.invite) {
        content.join_authorised_via_users_server = m.userId;
        return;
      }
    }
    throw new MatrixError(400, "M_UNABLE_TO_AUTHORISE_JOIN", "No user here can authorise the join");
  }

  /** `send_join`/`send_leave`: checks and stores the signed member event, then hands it to the room's other servers. */
  async sendMembership(origin: string, roomId: string, eventId: string, raw: unknown, membership: Membership) {
    const room = await this.deps.storage.rooms.getRoom(roomId);
    if (!room) throw new MatrixError(404, "M_NOT_FOUND", "This server is not in that room");
    const version = getRoomVersion(room.roomVersion)!;
    // A restricted join we authorise reaches us with the joiner's signature only (spec: send_join,
    // "join_authorised_via_users_server"): ours is added below, once the rest has checked.
    const checked = await this.deps.checkPdu(raw, version, membership === "join" ? { toBeSignedBy: this.deps.serverName } : {});
    if (!checked.ok) throw new MatrixError(400, "M_BAD_JSON", `The event is not valid: ${checked.reason}`);
    let { pdu } = checked;
    if (checked.eventId !== eventId) throw new MatrixError(400, "M_BAD_JSON", `The event's ID is ${checked.eventId}, not ${eventId}`);
    if (pdu.room_id !== roomId || pdu.type !== "m.room.member" || pdu.state_key !== pdu.sender || membershipOf(pdu) !== membership) {
      throw new MatrixError(400, "M_BAD_JSON", `Not a ${membership} of its sender in this room`);
    }
    if (serverNameOf(pdu.sender) !== origin) throw Errors.forbidden(`${origin} cannot send a ${membership} for ${pdu.sender}`);
    const via = pdu.content.join_authorised_via_users_server;
    const vouched = typeof via === "string" && serverNameOf(via) === this.deps.serverName;
    if (vouched) pdu = signEvent(pdu, version, this.#signer());
    const outcome = (await this.deps.remote.persist(roomId, version, [{ eventId, pdu }])).get(eventId)!;
    if (outcome.status === "rejected" || outcome.status === "soft_failed") {
      throw Errors.forbidden(`The ${membership} was not accepted: ${outcome.status === "rejected" ? outcome.reason : "soft-failed"}`);
    }
    const others = [...(await serversInRoom(this.deps.storage, roomId))].filter((s) => s !== origin && s !== this.deps.serverName);
    if (others.length > 0) await this.deps.sendPdu(pdu, eventId, others);
    if (membership === "leave") return {};
    // The knocker's server is not in the room: it gets only what identifies the room.
    if (membership === "knock") return { knock_room_state: await knockRoomState(this.deps.storage, roomId) };
    const state = await this.deps.source.state(origin, roomId, eventId);
    return {
      origin: this.deps.serverName,
      state: state.pdus,
      auth_chain: [...(await this.deps.source.authChain([...state.pdus.map((p) => eventIdFor(p, version)), eventId])).values()],
      ...(vouched ? { event: withoutUnsigned(pdu) } : {}),
      members_omitted: false,
      servers_in_room: [...(await serversInRoom(this.deps.storage, roomId))],
    };
  }

  /** `invite` v2: another server invites one of our users. We sign it, and keep it for the user's /sync if we are not in the room. */
  async receiveInvite(origin: string, roomId: string, eventId: string, body: { event: unknown; room_version: string; invite_room_state?: unknown }) {
    const version = getRoomVersion(body.room_version);
    if (!version) {
      throw new MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", `Room version ${body.room_version} is not supported here`, { room_version: body.room_version });
    }
    const checked = await this.deps.checkPdu(body.event, version);
    if (!checked.ok) throw new MatrixError(400, "M_BAD_JSON", `The event is not valid: ${checked.reason}`);
    const { pdu } = checked;
    if (checked.eventId !== eventId || pdu.room_id !== roomId) throw new MatrixError(400, "M_BAD_JSON", "The event does not match the request");
    if (pdu.type !== "m.room.member" || membershipOf(pdu) !== "invite" || typeof pdu.state_key !== "string") {
      throw new MatrixError(400, "M_BAD_JSON", "Not an invite");
    }
    if (serverNameOf(pdu.sender) !== origin) throw Errors.forbidden(`${origin} cannot invite on behalf of ${pdu.sender}`);
    if (serverNameOf(pdu.state_key) !== this.deps.serverName || !(await this.deps.storage.accounts.getUser(pdu.state_key))) {
      throw new MatrixError(404, "M_NOT_FOUND", `No user ${pdu.state_key} here`);
    }
    const signed = signEvent(withoutUnsigned(pdu), version, this.#signer());
    const inRoom = (await serversInRoom(this.deps.storage, roomId)).has(this.deps.serverName);
    if (!inRoom) {
      const stripped = Array.isArray(body.invite_room_state) ? body.invite_room_state.filter(isRecord).slice(0, 50) : [];
      const creator = stripped.find((e) => e.type === "m.room.create");
      await this.deps.remote.persistOutOfBand(
        { roomId, roomVersion: version.id, creator: typeof creator?.sender === "string" ? creator.sender : pdu.sender },
        version,
        { eventId, pdu: { ...signed, unsigned: { invite_room_state: stripped } } },
      );
    }
    return { event: signed };
  }
}
