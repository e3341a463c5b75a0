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
import type { Clock } from "../clock.js";
import type { DelayedEventService } from "../delayed_events/service.js";
import type { OpenIdService } from "../openid.js";
import { LeaveDelegations, type JobSignal } from "./delegation.js";
import { ClientFlow, type TokenRelay } from "./client_flow.js";
import { SharedDelegations, type DelegatedLeave } from "./shared_delegations.js";
import { CsApiLocator, localLeaveActions, remoteLeaveActions, type LeaveActions } from "./leave_actions.js";
import { legacyIdentity, LEGACY_SLOT_ID, livekitIdentity, livekitRoomAlias } from "./naming.js";
import { OpenIdVerifier, unauthorised } from "./openid_verifier.js";
import { Outbound, type OutboundOptions } from "./outbound.js";
import { parseDelegate, parseGetToken, parseLegacy } from "./requests.js";
import { ServerDiscovery } from "../federation/discovery.js";
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
  /** Tokens for other homeservers' SFUs, asked of them over federation (MSC4195). */
  relayToken?: TokenRelay;
}

export interface SfuAccess {
  url: string;
  jwt: string;
}

const SIGNALS: Record<string, JobSignal> = {
  joined: "joined",
  left_intentionally: "left_intentionally",
  left_aborted: "left_aborted",
};

export class LiveKitService {
  readonly settings: LiveKitConfig;
  readonly sfu: SfuApi;
  readonly delegations: LeaveDelegations;
  /** MSC4195's homeserver flow (`rtc/livekit/…` on the Client-Server API). */
  readonly client: ClientFlow;
  readonly #serverName: string;
  readonly #outbound: Outbound;
  readonly #verifier: OpenIdVerifier;
  readonly #csApi: CsApiLocator;
  readonly #shared: SharedDelegations;
  /** Set at stop: a take-over still in flight then starts nothing (the next process adopts it). */
  #stopped = false;

  constructor(private readonly deps: LiveKitServiceDeps) {
    const { config, clock, logger } = deps;
    if (!config.livekit) throw new Error("LiveKitService needs the `livekit` config");
    this.settings = config.livekit;
    this.#serverName = config.serverName;
    this.sfu = new SfuApi(this.settings, clock);
    this.#outbound = new Outbound(deps.outbound);
    const discovery = new ServerDiscovery(this.#outbound, clock);
    this.#verifier = new OpenIdVerifier(config.serverName, deps.openId, this.#outbound, discovery, clock, logger);
    this.#csApi = new CsApiLocator(this.#outbound, this.settings.csApiUrlOverrides, clock);
    this.delegations = new LeaveDelegations({
      probe: this.sfu,
      sanityIntervalMs: this.settings.sanityCheckIntervalMs,
      clock,
      logger,
      onFinished: (job) => this.#shared.finished(job),
    });
    this.#shared = new SharedDelegations({
      cluster: deps.storage.cluster,
      local: this.delegations,
      store: deps.storage.livekitDelegations,
      clock,
      adopt: async (job) => this.#delegate(job, await this.#leaveActions(job.serverName, job.userId, job.delayId)),
      logger,
    });
    this.client = new ClientFlow({
      settings: this.settings,
      serverName: config.serverName,
      sfu: this.sfu,
      storage: deps.storage,
      delayedEvents: deps.delayedEvents,
      logger,
      fullAccess: () => this.isFullAccess(config.serverName),
      delegate: (job, actions) => this.#delegate(job, actions),
      relay: deps.relayToken,
    });
    // Delegations whose process is gone (this server was restarted) go on here.
    void this.#shared.resume();
    // What an operator needs to see at start; the secret is a Secret and would print as "[secret]" anyway.
    logger.info(
      { sfu: this.settings.url, service_url: this.settings.serviceUrl, full_access: this.settings.fullAccessHomeservers },
      "LiveKit authorisation service enabled",
    );
  }

  stop(): void {
    this.#stopped = true;
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
    // lk-jwt-service's grants: anyone it lets in may publish and update their own metadata.
    const jwt = await this.sfu.mintToken(room, identity, { canPublish: true, canUpdateOwnMetadata: true });
    if (full) {
      // Resolved before the room is made, so a request that fails leaves no room behind.
      const actions = delegate ? await this.#leaveActions(serverName, userId, delay.delay_id) : undefined;
      await this.sfu.ensureRoom(room);
      if (actions) await this.#delegate({ userId, room, identity, delayId: delay.delay_id, delayTimeoutMs: delay.delay_timeout, serverName }, actions);
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
    await this.#delegate({ userId, room, identity, delayId: req.delay_id, delayTimeoutMs: req.delay_timeout, serverName: token.matrix_server_name }, actions);
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

  /** Starts the job here; resolves once it is written down, so an answered delegation survives a restart. */
  async #delegate(job: DelegatedLeave, actions: LeaveActions): Promise<void> {
    const { room, identity, delayId, delayTimeoutMs, userId } = job;
    // Written down first, so that a job that ends at once is not left behind in the table.
    await this.#shared.started(job);
    if (this.#stopped) return;
    this.delegations.add({ room, identity, delayId, delayTimeoutMs, actions, userId });
    this.deps.logger.info({ user: userId, lk_room: room, delay_ms: delayTimeoutMs }, "took over a delayed leave");
  }
}
