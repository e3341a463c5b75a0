/**
 * Our users in rooms resident on other servers: joining through `make_join`/`send_join`,
 * leaving a room we are not in (rejecting an invite) through `make_leave`/`send_leave`, and
 * inviting another server's user (`invite` v2) before the invite enters the room.
 */
import { Errors, MatrixError } from "../../../errors.js";
import {
  AuthError,
  authEventTypes,
  buildEvent,
  checkEventAuth,
  getRoomVersion,
  hashSignAndIdentify,
  isRecord,
  ROOM_VERSIONS,
  serverNameOf,
  type Pdu,
  type RoomVersion,
} from "../../../events/index.js";
import { stateKeyOf } from "../../../storage/rooms.js";
import { toStrippedState } from "../../rooms/client_format.js";
import { stateLookup } from "../../rooms/state_lookup.js";
import type { RemoteEvent } from "../../rooms/remote_persister.js";
import { FederationError } from "../client.js";
import { withoutUnsigned } from "./event_source.js";
import { strippedFrom } from "./knock.js";
import { checkAll, type FederatedRoomDeps } from "./types.js";
import { checkAgainstAuthEvents } from "./auth_events.js";

const enc = encodeURIComponent;
/** Stripped state an invitee's server gets to show the invite (the spec's recommended set). */
const INVITE_STATE = ["m.room.create", "m.room.name", "m.room.avatar", "m.room.topic", "m.room.join_rules", "m.room.canonical_alias", "m.room.encryption"];

export class RemoteMembership {
  constructor(private readonly deps: FederatedRoomDeps) {}

  #signer() {
    const key = this.deps.signingKey();
    return { serverName: this.deps.serverName, keyId: key.keyId, privateKey: key.privateKey };
  }

  /** Asks each server in turn; the first that answers 200 wins. The last refusal is what the client hears. */
  async #firstAnswer<T>(servers: readonly string[], ask: (server: string) => Promise<T>): Promise<{ server: string; answer: T }> {
    let last: unknown;
    for (const server of servers) {
      if (server === this.deps.serverName) continue;
      try {
        return { server, answer: await ask(server) };
      } catch (err) {
        last = err;
      }
    }
    if (last instanceof MatrixError) throw last;
    throw new MatrixError(404, "M_NOT_FOUND", `No server could be reached to join through${last instanceof Error ? ` (${last.message})` : ""}`);
  }

  async #template(server: string, roomId: string, userId: string, membership: "join" | "leave" | "knock") {
    const versions = Object.keys(ROOM_VERSIONS).map((v) => `ver=${enc(v)}`).join("&");
    const path = `/_matrix/federation/v1/make_${membership}/${enc(roomId)}/${enc(userId)}${membership !== "leave" ? `?${versions}` : ""}`;
    const res = await this.deps.client.request(server, { method: "GET", path });
    if (res.status !== 200) {
      const errcode = typeof res.json.errcode === "string" ? res.json.errcode : "M_UNKNOWN";
      const status = res.status === 403 || res.status === 404 || res.status === 400 ? res.status : 502;
      throw new MatrixError(status, errcode, `${server}: ${typeof res.json.error === "string" ? res.json.error : `make_${membership} failed`}`);
    }
    const versionId = typeof res.json.room_version === "string" ? res.json.room_version : "1";
    const version = getRoomVersion(versionId);
    if (!version) throw new MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", `Room version ${versionId} is not supported here`);
    if (!isRecord(res.json.event)) throw new MatrixError(502, "M_UNKNOWN", `${server} sent no event template`);
    return { version, template: res.json.event };
  }

  /** Fills in and signs a template from another server: our user's event, our signature. */
  #sign(template: Record<string, unknown>, version: RoomVersion, content: Record<string, unknown>): RemoteEvent {
    const { signatures: _s, hashes: _h, unsigned: _u, ...rest } = template;
    const draft = { ...rest, content: { ...(isRecord(rest.content) ? rest.content : {}), ...content }, origin_server_ts: this.deps.clock.now() } as unknown as Pdu;
    return hashSignAndIdentify(draft, version, this.#signer());
  }

  /** Joins `userId` to a room resident elsewhere; answers the room ID once our join is stored. */
  async join(userId: string, roomId: string, servers: readonly string[], content: Record<string, unknown>): Promise<string> {
    const { server, answer } = await this.#firstAnswer(servers, async (s) => {
      const t = await this.#template(s, roomId, userId, "join");
      const join = this.#sign(t.template, t.version, { ...content, membership: "join" });
      if (join.pdu.sender !== userId || join.pdu.state_key !== userId || join.pdu.room_id !== roomId) {
        throw new MatrixError(502, "M_UNKNOWN", `${s} sent a template for another user or room`);
      }
      const res = await this.deps.client.request(s, {
        method: "PUT",
        path: `/_matrix/federation/v2/send_join/${enc(roomId)}/${enc(join.eventId)}`,
        query: { omit_members: "false" },
        body: join.pdu as unknown as Record<string, unknown>,
        maxBytes: 256 * 1024 * 1024,
      });
      if (res.status !== 200) throw new MatrixError(res.status === 403 ? 403 : 502, String(res.json.errcode ?? "M_UNKNOWN"), `${s}: ${String(res.json.error ?? "send_join failed")}`);
      return { ...t, join, response: res.json };
    });
    const { version, response } = answer;
    let join = answer.join;
    // A restricted join comes back signed by the server that vouched for it too.
    if (isRecord(response.event)) {
      const vouched = await this.deps.checkPdu(response.event, version);
      if (vouched.ok && vouched.eventId === join.eventId) join = { eventId: join.eventId, pdu: vouched.pdu };
    }
    const state = await checkAll(this.deps.checkPdu, Array.isArray(response.state) ? response.state : [], version);
    const authChain = await checkAll(this.deps.checkPdu, Array.isArray(response.auth_chain) ? response.auth_chain : [], version);
    const events = [...authChain, ...state];
    // Room version 12 leaves the create event out of auth_events: the room ID names it.
    const roomCreate = events.find((e) => e.pdu.type === "m.room.create" && e.pdu.state_key === "")?.pdu;
    const accepted = checkAgainstAuthEvents(events, { version, create: roomCreate }).passed;
    const create = state.find((e) => e.pdu.type === "m.room.create" && e.pdu.state_key === "");
    if (!create || !accepted.has(create.eventId)) throw new MatrixError(502, "M_UNKNOWN", `${server} sent a room state without a valid create event`);
    const outcome = await this.deps.remote.persistJoinedRoom(
      { roomId, roomVersion: version.id, creator: create.pdu.sender },
      version,
      state.filter((e) => accepted.has(e.eventId)),
      authChain.filter((e) => accepted.has(e.eventId)),
      join,
    );
    if (outcome.status !== "accepted" && outcome.status !== "duplicate") {
      throw Errors.forbidden(`The join was not accepted here: ${outcome.status === "rejected" ? outcome.reason : outcome.status}`);
    }
    return roomId;
  }

  /** Leaves a room we are not in (an invite from another server): through the servers that know it. */
  async leaveUnjoined(userId: string, roomId: string, servers: readonly string[]): Promise<void> {
    const { answer } = await this.#firstAnswer(servers, async (s) => {
      const t = await this.#template(s, roomId, userId, "leave");
      const leave = this.#sign(t.template, t.version, { membership: "leave" });
      const res = await this.deps.client.request(s, {
        method: "PUT",
        path: `/_matrix/federation/v2/send_leave/${enc(roomId)}/${enc(leave.eventId)}`,
        body: leave.pdu as unknown as Record<string, unknown>,
      });
      if (res.status !== 200) throw new MatrixError(res.status === 403 ? 403 : 502, String(res.json.errcode ?? "M_UNKNOWN"), `${s}: ${String(res.json.error ?? "send_leave failed")}`);
      return { ...t, leave };
    });
    const room = (await this.deps.storage.rooms.getRoom(roomId))!;
    await this.deps.remote.persistOutOfBand(room, answer.version, answer.leave);
  }

  /**
   * Knocks on a room resident elsewhere (`make_knock`/`send_knock`). The knock is kept out of
   * band, with the room's stripped state the resident server answered, for the user's /sync.
   */
  async knock(userId: string, roomId: string, servers: readonly string[], content: Record<string, unknown>): Promise<string> {
    const { answer } = await this.#firstAnswer(servers, async (s) => {
      const t = await this.#template(s, roomId, userId, "knock");
      const knock = this.#sign(t.template, t.version, { ...content, membership: "knock" });
      if (knock.pdu.sender !== userId || knock.pdu.state_key !== userId || knock.pdu.room_id !== roomId) {
        throw new MatrixError(502, "M_UNKNOWN", `${s} sent a template for another user or room`);
      }
      const res = await this.deps.client.request(s, {
        method: "PUT",
        path: `/_matrix/federation/v1/send_knock/${enc(roomId)}/${enc(knock.eventId)}`,
        body: knock.pdu as unknown as Record<string, unknown>,
      });
      if (res.status !== 200) throw new MatrixError(res.status === 403 ? 403 : 502, String(res.json.errcode ?? "M_UNKNOWN"), `${s}: ${String(res.json.error ?? "send_knock failed")}`);
      return { ...t, knock, stripped: strippedFrom(res.json.knock_room_state) };
    });
    const { version, knock, stripped } = answer;
    const creator = stripped.find((e) => e.type === "m.room.create")?.sender ?? userId;
    await this.deps.remote.persistOutOfBand(
      { roomId, roomVersion: version.id, creator },
      version,
      { eventId: knock.eventId, pdu: { ...knock.pdu, unsigned: { knock_room_state: stripped } } },
    );
    return roomId;
  }

  /**
   * Invites another server's user: the event is built on the room's current state, signed by
   * the invitee's server too, then stored like one from federation (it may land beside a
   * concurrent event) and sent to the room's servers.
   */
  async invite(inviter: string, roomId: string, target: string, content: Record<string, unknown>): Promise<string> {
    const server = serverNameOf(target)!;
    const room = await this.deps.storage.rooms.getRoom(roomId);
    if (!room) throw new MatrixError(404, "M_NOT_FOUND", "Unknown room");
    const version = getRoomVersion(room.roomVersion)!;
    const { state, head } = await this.deps.storage.transaction(async (tx) => {
      const stored = (await tx.roomDag.lockRoomDag(roomId))!;
      return { state: await tx.rooms.currentState(roomId), head: await this.deps.persister.readHead(tx, roomId, stored) };
    });
    const body = { ...content, membership: "invite" };
    const authKeys = authEventTypes("m.room.member", target, inviter, body, version);
    const prev = [...head.extremities].sort((a, b) => b.depth - a.depth).slice(0, 10);
    const built = buildEvent(
      {
        version,
        roomId,
        sender: inviter,
        type: "m.room.member",
        stateKey: target,
        content: body,
        prevEvents: prev.map((e) => e.eventId),
        authEvents: authKeys.map(([t, k]) => state.get(stateKeyOf(t, k))?.eventId).filter((id): id is string => id !== undefined),
        depth: Math.max(0, ...prev.map((e) => e.depth)) + 1,
        originServerTs: this.deps.clock.now(),
      },
      this.#signer(),
    );
    try {
      checkEventAuth(built.pdu, stateLookup(state), version);
    } catch (err) {
      if (err instanceof AuthError) throw Errors.forbidden(err.message);
      throw err;
    }
    const stripped = INVITE_STATE.flatMap((type) => {
      const e = state.get(stateKeyOf(type, ""));
      return e ? [toStrippedState(e)] : [];
    });
    let answer;
    try {
      answer = await this.deps.client.request(server, {
        method: "PUT",
        path: `/_matrix/federation/v2/invite/${enc(roomId)}/${enc(built.eventId)}`,
        body: { event: built.pdu, room_version: version.id, invite_room_state: stripped },
      });
    } catch (err) {
      if (err instanceof FederationError && err.kind === "forbidden_destination") throw Errors.forbidden(`${server} is not a server this one federates with`);
      if (err instanceof FederationError) throw new MatrixError(502, "M_UNKNOWN", `Could not reach ${server} to invite ${target}: ${err.message}`);
      throw err;
    }
    if (answer.status !== 200) throw new MatrixError(answer.status === 404 ? 404 : 403, String(answer.json.errcode ?? "M_FORBIDDEN"), `${server}: ${String(answer.json.error ?? "invite refused")}`);
    const returned = await this.deps.checkPdu(isRecord(answer.json.event) ? answer.json.event : built.pdu, version);
    const pdu = returned.ok && returned.eventId === built.eventId ? returned.pdu : built.pdu;
    const outcome = (await this.deps.remote.persist(roomId, version, [{ eventId: built.eventId, pdu: withoutUnsigned(pdu) }], "local")).get(built.eventId);
    if (outcome?.status === "rejected") throw Errors.forbidden(outcome.reason);
    return built.eventId;
  }
}

