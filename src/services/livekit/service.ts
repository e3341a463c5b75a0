/**
 * The bundled LiveKit authorisation service. It answers lk-jwt-service's
 * contract (OpenID token in, LiveKit JWT out) and MSC4195's in-homeserver
 * form, creates LiveKit rooms for full-access users, and runs delegated
 * leaves. Routes hand it raw bodies; every decision is made here.
 */
import type { Logger } from "pino";
import type { Config, LiveKitConfig } from "../../config/config.js";
import { Errors, MatrixError } from "../../errors.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import type { Clock } from "../clock.js";
import type { DelayedEventService } from "../delayed_events/service.js";
import type { OpenIdService } from "../openid.js";
import { LeaveDelegations, type JobSignal } from "./delegation.js";
import { SharedDelegations, type DelegatedLeave } from "./shared_delegations.js";
import { CsApiLocator, localLeaveActions, remoteLeaveActions, type LeaveActions } from "./leave_actions.js";
import { legacyIdentity, LEGACY_SLOT_ID, livekitIdentity, livekitRoomAlias } from "./naming.js";
import { OpenIdVerifier, unauthorised } from "./openid_verifier.js";
import { Outbound, type OutboundOptions } from "./outbound.js";
import { parseDelegate, parseGetToken, parseLegacy } from "./requests.js";
import { ServerDiscovery } from "./server_discovery.js";
import { SfuApi } from "./sfu.js";

export interface LiveKitServiceDeps {
  config: Config;
  storage: Storage;
  clock: Clock;
  openId: OpenIdService;
  delayedEvents: DelayedEventService;
  logger: Pick<Logger, "warn" | "error" | "info">;
  /** Trusted CAs and name resolution for calls to other homeservers (tests point these at local servers). */
  outbound?: OutboundOptions;
}

export interface SfuAccess {
  url: string;
  jwt: string;
}

/** The MSC4195 request bodies, after the route's schema check. */
export interface ClientTokenRequest {
  url?: string;
  server_name?: string;
  room_id: string;
  slot_id: string;
  member?: { id: string; claimed_device_id?: string };
  /** MSC4195's newest text sends the member ID on its own. */
  member_id?: string;
}
export interface ClientDelegateRequest extends ClientTokenRequest {
  delay_id: string;
}

const SIGNALS: Record<string, JobSignal> = {
  joined: "joined",
  left_intentionally: "left_intentionally",
  left_aborted: "left_aborted",
};

const stripSlash = (u: string) => u.replace(/\/+$/, "");

export class LiveKitService {
  readonly settings: LiveKitConfig;
  readonly sfu: SfuApi;
  readonly delegations: LeaveDelegations;
  readonly #serverName: string;
  readonly #outbound: Outbound;
  readonly #verifier: OpenIdVerifier;
  readonly #csApi: CsApiLocator;
  readonly #shared: SharedDelegations;

  constructor(private readonly deps: LiveKitServiceDeps) {
    const { config, clock, logger } = deps;
    if (!config.livekit) throw new Error("LiveKitService needs the `livekit` config");
    this.settings = config.livekit;
    this.#serverName = config.serverName;
    this.sfu = new SfuApi(this.settings);
    this.#outbound = new Outbound(deps.outbound);
    const discovery = new ServerDiscovery(this.#outbound, clock);
    this.#verifier = new OpenIdVerifier(config.serverName, deps.openId, this.#outbound, discovery, clock, logger);
    this.#csApi = new CsApiLocator(this.#outbound, this.settings.csApiUrlOverrides, clock);
    this.delegations = new LeaveDelegations({
      probe: this.sfu,
      sanityIntervalMs: this.settings.sanityCheckIntervalMs,
      clock,
      logger,
      onFinished: (room, identity) => this.#shared.finished(room, identity),
    });
    this.#shared = new SharedDelegations(
      deps.storage.cluster,
      this.delegations,
      async (job) => this.#delegate(job, await this.#leaveActions(job.serverName, job.userId, job.delayId)),
      logger,
    );
    // What an operator needs to see at start; the secret is a Secret and would print as "[secret]" anyway.
    logger.info(
      { sfu: this.settings.url, service_url: this.settings.serviceUrl, full_access: this.settings.fullAccessHomeservers },
      "LiveKit authorisation service enabled",
    );
  }

  stop(): void {
    this.delegations.stop();
  }

  /** Full access: rooms are created for these users, and they may hand over their leave. */
  isFullAccess(serverName: string): boolean {
    const list = this.settings.fullAccessHomeservers;
    return (list.length === 1 && list[0] === "*") || list.includes(serverName);
  }

  // ── lk-jwt-service's contract ────────────────────────────────────────────

  /** `POST /get_token`: hashed identity per MatrixRTC member. */
  async getToken(body: string | undefined): Promise<SfuAccess> {
    const req = parseGetToken(body);
    const token = req.openid_token;
    const userId = await this.#verifier.verify(token.access_token, token.matrix_server_name);
    if (req.member.claimed_user_id !== userId) throw unauthorised("`member.claimed_user_id` is not the token's user");
    const room = livekitRoomAlias(req.room_id, req.slot_id);
    const identity = livekitIdentity(userId, req.member.claimed_device_id, req.member.id);
    return this.#issue(userId, token.matrix_server_name, room, identity, req);
  }

  /** `POST /sfu/get`: the older form, one identity per device and a fixed slot. */
  async sfuGet(body: string | undefined): Promise<SfuAccess> {
    const req = parseLegacy(body);
    const token = req.openid_token;
    const userId = await this.#verifier.verify(token.access_token, token.matrix_server_name);
    const room = livekitRoomAlias(req.room, LEGACY_SLOT_ID);
    return this.#issue(userId, token.matrix_server_name, room, legacyIdentity(userId, req.device_id), req);
  }

  async #issue(
    userId: string,
    serverName: string,
    room: string,
    identity: string,
    delay: { delay_id: string; delay_timeout: number },
  ): Promise<SfuAccess> {
    const full = this.isFullAccess(serverName);
    const delegate = delay.delay_id !== "";
    if (delegate && !full) {
      throw new MatrixError(400, "M_BAD_JSON", "Only users of full-access homeservers may hand over their delayed leave");
    }
    const jwt = await this.sfu.mintToken(room, identity);
    if (full) {
      // Resolved before the room is made, so a request that fails leaves no room behind.
      const actions = delegate ? await this.#leaveActions(serverName, userId, delay.delay_id) : undefined;
      await this.sfu.ensureRoom(room);
      if (actions) this.#delegate({ userId, room, identity, delayId: delay.delay_id, delayTimeoutMs: delay.delay_timeout, serverName }, actions);
    }
    this.deps.logger.info({ user: userId, access: full ? "full" : "restricted", lk_room: room, lk_identity: identity }, "issued a LiveKit token");
    return { url: this.settings.url, jwt };
  }

  /** `POST /delegate_delayed_leave`: the client is connected already; no token, no room. */
  async delegateDelayedLeave(body: string | undefined): Promise<Record<string, never>> {
    const req = parseDelegate(body);
    const token = req.openid_token;
    const userId = await this.#verifier.verify(token.access_token, token.matrix_server_name);
    if (req.member.claimed_user_id !== userId) throw unauthorised("`member.claimed_user_id` is not the token's user");
    if (!this.isFullAccess(token.matrix_server_name)) {
      throw Errors.forbidden("Only users of full-access homeservers may hand over their delayed leave");
    }
    const room = livekitRoomAlias(req.room_id, req.slot_id);
    const identity = livekitIdentity(userId, req.member.claimed_device_id, req.member.id);
    const actions = await this.#leaveActions(token.matrix_server_name, userId, req.delay_id);
    this.#delegate({ userId, room, identity, delayId: req.delay_id, delayTimeoutMs: req.delay_timeout, serverName: token.matrix_server_name }, actions);
    return {};
  }

  /** `POST /sfu_webhook`: LiveKit's participant events, signed with our API secret. */
  async webhook(body: string | undefined, authorization: string | undefined): Promise<void> {
    let event;
    try {
      event = await this.sfu.receiveWebhook(body ?? "", authorization);
    } catch (err) {
      this.deps.logger.warn({ err: (err as Error).message }, "ignored a LiveKit webhook that failed verification");
      return;
    }
    if (event) this.#shared.participantEvent(event.room, event.identity, SIGNALS[event.kind]!);
  }

  async #leaveActions(serverName: string, userId: string, delayId: string): Promise<LeaveActions> {
    if (serverName === this.#serverName) return localLeaveActions(this.deps.delayedEvents, userId, delayId, this.deps.logger);
    const base = await this.#csApi.resolve(serverName);
    if (!base) throw new MatrixError(400, "M_BAD_JSON", `Unable to find the Client-Server API of ${serverName}`);
    return remoteLeaveActions(this.#outbound, base, delayId, this.deps.clock);
  }

  #delegate(job: DelegatedLeave, actions: LeaveActions): void {
    const { room, identity, delayId, delayTimeoutMs, userId } = job;
    this.delegations.add({ room, identity, delayId, delayTimeoutMs, actions, userId });
    this.#shared.started(job);
    this.deps.logger.info({ user: userId, lk_room: room, delay_ms: delayTimeoutMs }, "took over a delayed leave");
  }

  // ── MSC4195, in the homeserver (`io.element.msc4195`) ─────────────────────

  /** The member ID and the device the LiveKit identity is made from. */
  #memberOf(requester: Requester, req: ClientTokenRequest): { memberId: string; deviceId: string } {
    const memberId = req.member?.id ?? req.member_id;
    if (memberId === undefined) throw Errors.missingParam("Missing parameter: member");
    return { memberId, deviceId: req.member?.claimed_device_id ?? requester.deviceId };
  }

  async #checkClientRequest(requester: Requester, req: ClientTokenRequest): Promise<void> {
    const membership = await this.deps.storage.rooms.membership(req.room_id, requester.userId);
    // 401 M_UNAUTHORIZED, as the io.element.msc4195 draft answers (and lk-jwt-service's check
    // failures do); the MSC's newest text says 403, and clients treat both as "no token".
    if (membership?.membership !== "join") {
      throw new MatrixError(401, "M_UNAUTHORIZED", "You are not joined to this room");
    }
    if (req.server_name !== undefined && req.server_name !== this.#serverName) {
      throw Errors.invalidParam("Tokens for another homeserver's SFU are not available here (no federation yet)");
    }
    if (req.url !== undefined && stripSlash(req.url) !== stripSlash(this.settings.url)) {
      throw Errors.invalidParam("`url` is not this homeserver's LiveKit SFU");
    }
  }

  async clientGetToken(requester: Requester, req: ClientTokenRequest): Promise<SfuAccess> {
    const { memberId, deviceId } = this.#memberOf(requester, req);
    await this.#checkClientRequest(requester, req);
    const room = livekitRoomAlias(req.room_id, req.slot_id);
    const identity = livekitIdentity(requester.userId, deviceId, memberId);
    const jwt = await this.sfu.mintToken(room, identity);
    if (this.isFullAccess(this.#serverName)) await this.sfu.ensureRoom(room);
    this.deps.logger.info({ user: requester.userId, lk_room: room, lk_identity: identity }, "issued a LiveKit token (MSC4195)");
    return { jwt, url: this.settings.url };
  }

  async clientDelegate(requester: Requester, req: ClientDelegateRequest): Promise<Record<string, never>> {
    const { memberId, deviceId } = this.#memberOf(requester, req);
    await this.#checkClientRequest(requester, req);
    if (!this.isFullAccess(this.#serverName)) {
      throw Errors.forbidden("Delegated leaves are only for users of full-access homeservers");
    }
    // The delay comes from the event itself: the client scheduled it with us.
    const record = await this.deps.delayedEvents.get(requester, req.delay_id);
    if (record.status !== "scheduled") throw Errors.notFound("The delayed event is no longer scheduled");
    const room = livekitRoomAlias(req.room_id, req.slot_id);
    const identity = livekitIdentity(requester.userId, deviceId, memberId);
    const actions = localLeaveActions(this.deps.delayedEvents, requester.userId, req.delay_id, this.deps.logger);
    this.#delegate(
      { userId: requester.userId, room, identity, delayId: req.delay_id, delayTimeoutMs: record.delayMs, serverName: this.#serverName },
      actions,
    );
    return {};
  }
}
