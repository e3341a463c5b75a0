/**
 * MSC4195's homeserver flow: a client asks its own homeserver, with its access token, for a
 * LiveKit token (`rtc/livekit/get_token`) and hands its delayed leave over
 * (`rtc/livekit/delegate_delayed_leave`). Errors are the MSC's: 403 `M_FORBIDDEN` for a room the
 * user is not joined to, 400 `M_INVALID_PARAM` for a foreign SFU, a delayed event that is not
 * the user's scheduled leave in that room, or a delay shorter than the server allows.
 */
import type { Logger } from "pino";
import type { LiveKitConfig } from "../../config/config.js";
import { Errors } from "../../errors.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import type { RelayedTokenRequest } from "../federation/rtc_relay.js";
import type { DelayedEventService } from "../delayed_events/service.js";
import { localLeaveActions } from "./leave_actions.js";
import { livekitIdentity, livekitRoomAlias } from "./naming.js";
import type { SfuApi } from "./sfu.js";
import type { DelegatedLeave } from "./shared_delegations.js";
import type { LeaveActions } from "./leave_actions.js";

/** The MSC4195 request bodies, after the route's schema check. */
export interface ClientTokenRequest {
  url?: string;
  server_name?: string;
  room_id: string;
  slot_id: string;
  /** What matrix-js-sdk and lk-jwt-service sent until autumn 2026. */
  member?: { id: string; claimed_device_id?: string };
  /** MSC4195's newest text sends the member ID on its own. */
  member_id?: string;
}
export interface ClientDelegateRequest extends ClientTokenRequest {
  delay_id: string;
}

export interface ClientFlowDeps {
  settings: LiveKitConfig;
  serverName: string;
  sfu: SfuApi;
  storage: Storage;
  delayedEvents: DelayedEventService;
  logger: Pick<Logger, "info" | "warn">;
  /** Whether this server's own users get rooms created and may delegate. */
  fullAccess: () => boolean;
  delegate: (job: DelegatedLeave, actions: LeaveActions) => Promise<void>;
  /** Asks another homeserver for a token on its SFU (federation's `RtcRelay`); without it, 400. */
  relay?: TokenRelay;
}

/** A token for another homeserver's SFU, asked of that server on the user's behalf. */
export type TokenRelay = (req: RelayedTokenRequest) => Promise<{ jwt: string }>;

const stripSlash = (u: string) => u.replace(/\/+$/, "");

export class ClientFlow {
  constructor(private readonly deps: ClientFlowDeps) {}

  /** The LiveKit room and participant identity the request names, once it is allowed. */
  async #check(requester: Requester, req: ClientTokenRequest): Promise<{ room: string; identity: string }> {
    const memberId = req.member?.id ?? req.member_id;
    if (memberId === undefined) throw Errors.missingParam("Missing parameter: member_id");
    const membership = await this.deps.storage.rooms.membership(req.room_id, requester.userId);
    if (membership?.membership !== "join") throw Errors.forbidden("You are not joined to this room");
    if (req.server_name !== undefined && req.server_name !== this.deps.serverName) {
      throw Errors.invalidParam("Tokens for another homeserver's SFU are not available here");
    }
    if (req.url !== undefined && stripSlash(req.url) !== stripSlash(this.deps.settings.url)) {
      throw Errors.invalidParam("`url` is not one of this homeserver's LiveKit SFUs");
    }
    // The identity follows the membership event: its device (the requester's unless claimed) and member ID.
    const deviceId = req.member?.claimed_device_id ?? requester.deviceId;
    return { room: livekitRoomAlias(req.room_id, req.slot_id), identity: livekitIdentity(requester.userId, deviceId, memberId) };
  }

  async getToken(requester: Requester, req: ClientTokenRequest): Promise<{ jwt: string }> {
    if (req.server_name !== undefined && req.server_name !== this.deps.serverName && this.deps.relay) return this.#relayed(requester, req);
    const { room, identity } = await this.#check(requester, req);
    // The requester is always one of ours here, so it may publish (MSC4195: local users only).
    // Tokens cannot create rooms, so the room must exist before the client connects: the
    // answer waits for both, made side by side.
    const [jwt] = await Promise.all([
      this.deps.sfu.mintToken(room, identity, { canPublish: true, canUpdateOwnMetadata: this.deps.settings.canUpdateOwnMetadata }),
      this.deps.fullAccess() ? this.deps.sfu.ensureRoom(room) : undefined,
    ]);
    this.deps.logger.info({ user: requester.userId, lk_room: room, lk_identity: identity }, "issued a LiveKit token (MSC4195)");
    return { jwt };
  }

  async delegate(requester: Requester, req: ClientDelegateRequest): Promise<Record<string, never>> {
    const { room, identity } = await this.#check(requester, req);
    if (!this.deps.fullAccess()) throw Errors.forbidden("Delegated leaves are only for users of full-access homeservers");
    // The delay comes from the event itself: the client scheduled it with us.
    const record = await this.deps.storage.delayedEvents.get(req.delay_id);
    if (!record || record.userId !== requester.userId || record.roomId !== req.room_id || record.status !== "scheduled") {
      throw Errors.invalidParam("`delay_id` is not a scheduled delayed event of yours in this room");
    }
    const min = this.deps.settings.delegationMinDelayMs;
    if (record.delayMs < min) {
      throw Errors.invalidParam(`The delayed leave's delay (${record.delayMs} ms) is shorter than this server accepts for delegation (${min} ms)`);
    }
    const { userId } = requester;
    const actions = localLeaveActions(this.deps.delayedEvents, userId, req.delay_id, this.deps.logger);
    await this.deps.delegate({ userId, room, identity, delayId: req.delay_id, delayTimeoutMs: record.delayMs, serverName: this.deps.serverName }, actions);
    return {};
  }

  // ── A remote SFU (MSC4195 over federation): its homeserver issues the token ──

  async #relayed(requester: Requester, req: ClientTokenRequest): Promise<{ jwt: string }> {
    const memberId = req.member?.id ?? req.member_id;
    if (memberId === undefined) throw Errors.missingParam("Missing parameter: member_id");
    const membership = await this.deps.storage.rooms.membership(req.room_id, requester.userId);
    if (membership?.membership !== "join") throw Errors.forbidden("You are not joined to this room");
    const deviceId = req.member?.claimed_device_id ?? requester.deviceId;
    return this.deps.relay!({ serverName: req.server_name!, userId: requester.userId, deviceId, url: req.url, roomId: req.room_id, slotId: req.slot_id, memberId });
  }
}
