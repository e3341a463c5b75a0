/** Builds every domain service once, from config, storage and a clock. */
import type { Config } from "../config/config.js";
import type { Storage } from "../storage/interfaces.js";
import { AccountService } from "./accounts.js";
import { AdminService } from "./admin.js";
import { AuthService } from "./auth.js";
import type { Clock } from "./clock.js";
import { OpenIdService } from "./openid.js";
import { RateLimiter } from "./ratelimiter.js";
import { RtcService } from "./rtc.js";
import { SessionService } from "./sessions.js";
import { TurnService } from "./turn.js";
import { UiaService } from "./uia.js";
import { AliasService } from "./rooms/aliases.js";
import { EventPersister } from "./rooms/persister.js";
import { RoomReadService } from "./rooms/reads.js";
import { RoomService } from "./rooms/room_service.js";
import type { SigningKey } from "./signing_key.js";
import { ClusterNotifier, InProcessNotifier, type Notifier } from "./sync/notifier.js";
import { AccountDataService } from "./account_data.js";
import { PushRuleService } from "./push/rules_service.js";
import { ReceiptService } from "./receipts.js";
import { FilterService } from "./sync/filter_service.js";
import { SyncService } from "./sync/sync_service.js";
import { SlidingSyncService } from "./sliding_sync/service.js";
import { TypingService } from "./sync/typing.js";
import { DelayedEventService } from "./delayed_events/service.js";
import { LiveKitService } from "./livekit/service.js";
import { FederationService } from "./federation/service.js";
import { FederatedRooms } from "./federation/rooms/index.js";
import { RtcRelay } from "./federation/rtc_relay.js";
import { FederatedTokens } from "./livekit/federated_token.js";
import type { OutboundOptions } from "./livekit/outbound.js";
import type { Logger } from "pino";
import { CrossSigningService } from "./e2ee/cross_signing.js";
import { FederatedKeys } from "./e2ee/federated_keys.js";
import { DeviceKeyService } from "./e2ee/keys.js";
import { KeyBackupService } from "./e2ee/key_backup.js";
import { ToDeviceService } from "./e2ee/to_device.js";
import { MediaService } from "./media/repository.js";
import { UrlPreviewService } from "./media/url_preview.js";
import { PushActionService } from "./push/actions.js";
import { PusherService } from "./push/pushers.js";

export interface Services {
  config: Config;
  clock: Clock;
  auth: AuthService;
  uia: UiaService;
  sessions: SessionService;
  accounts: AccountService;
  admin: AdminService;
  openId: OpenIdService;
  turn: TurnService;
  rtc: RtcService;
  /** Per-user limit on transport discovery (`rc_rtc_transports`). */
  rtcLimiter: RateLimiter;
  notifier: Notifier;
  persister: EventPersister;
  rooms: RoomService;
  roomReads: RoomReadService;
  aliases: AliasService;
  delayedEvents: DelayedEventService;
  /** The bundled LiveKit authorisation service; undefined unless `livekit` is configured. */
  livekit?: LiveKitService;
  /** MSC4195 tokens on our SFU for other servers' users; with `livekit` only. */
  federatedTokens?: FederatedTokens;
  /** Per user, or per IP without a token (`rc_delayed_event_mgmt`). */
  delayedEventLimiter: RateLimiter;
  accountData: AccountDataService;
  filters: FilterService;
  typing: TypingService;
  receipts: ReceiptService;
  pushRules: PushRuleService;
  sync: SyncService;
  /** Simplified sliding sync (MSC4186). */
  slidingSync: SlidingSyncService;
  /** End-to-end encryption: device keys, one-time keys. */
  deviceKeys: DeviceKeyService;
  toDevice: ToDeviceService;
  /** Cross-signing keys and signatures (`/keys/device_signing/upload`, `/keys/signatures/upload`, `/keys/query`). */
  crossSigning: CrossSigningService;
  /** `/keys/query` and `/keys/claim` across servers, and the federation side of both. */
  federatedKeys: FederatedKeys;
  /** Server-side key backup (`/room_keys`). */
  keyBackup: KeyBackupService;
  /** Uploads, downloads and thumbnails; its routes are served only when `enable_media_repo`. */
  media: MediaService;
  /** Push-rule outcomes per recipient: notification counts and `/notifications`. */
  pushActions: PushActionService;
  /** HTTP pushers: `/pushers`, and delivery to push gateways. */
  pushers: PusherService;
  /** URL previews; undefined unless `url_preview_enabled` (and the media repository) is on. */
  urlPreview?: UrlPreviewService;
  /** Keys, discovery, signed requests to other servers and the check on theirs. */
  federation: FederationService;
  /** Rooms across servers: joins, invites, received events, what others may read. */
  federatedRooms: FederatedRooms;
}

export interface ServiceDeps {
  config: Config;
  storage: Storage;
  clock: Clock;
  /** Called when an event is signed, so tools that never sign need no key. */
  signingKey: () => SigningKey;
  logger: Pick<Logger, "warn" | "error" | "info">;
  notifier?: Notifier;
  /** CAs and name resolution for the LiveKit service's calls to other homeservers; for tests. */
  outbound?: OutboundOptions;
}

export function createServices(deps: ServiceDeps): Services {
  const { config, storage, clock, signingKey, logger } = deps;
  const notifier = deps.notifier ?? new ClusterNotifier(new InProcessNotifier(), storage.cluster, storage.streams);
  const rl = config.rateLimits;
  // Each process enforces its share of every limit (see ratelimiter.ts).
  const share = () => 1 / storage.cluster.workers().length;
  const auth = new AuthService(storage.devices, notifier, clock);
  const uia = new UiaService(storage.uiaSessions, clock);
  const sessions = new SessionService(config, storage, clock, notifier, uia, {
    address: new RateLimiter(rl.loginAddress, clock, share),
    account: new RateLimiter(rl.loginAccount, clock, share),
    failedAttempts: new RateLimiter(rl.loginFailedAttempts, clock, share),
  });
  const accounts = new AccountService(config, storage, clock, uia, sessions, new RateLimiter(rl.registration, clock, share));
  const admin = new AdminService(config, storage, clock, accounts);
  const persister = new EventPersister(config, storage, clock, signingKey, notifier);
  const accountData = new AccountDataService(storage, notifier);
  const filters = new FilterService(storage);
  const typing = new TypingService(storage, notifier, clock);
  persister.onPersisted(async ({ pdu }) => {
    if (pdu.type === "m.room.member" && pdu.state_key !== undefined) {
      await typing.membershipChanged(pdu.room_id, pdu.state_key, pdu.content.membership);
    }
  });
  const deviceKeys = new DeviceKeyService(storage, notifier, config.serverName);
  const federation = new FederationService({
    config,
    storage,
    clock,
    signingKey,
    logger,
    dialer: deps.outbound?.dialer,
    local: {
      notifier,
      setRemoteTyping: (roomId, userId, typing) => services.typing.setRemoteTyping(roomId, userId, typing),
      announceDeviceChange: (userId) => deviceKeys.announceDeviceChange(userId),
    },
  });
  const services: Services = {
    config,
    clock,
    auth,
    uia,
    sessions,
    accounts,
    admin,
    openId: new OpenIdService(config, storage, clock),
    turn: new TurnService(config, clock),
    rtc: new RtcService(config),
    rtcLimiter: new RateLimiter(rl.rtcTransports, clock, share),
    notifier,
    persister,
    rooms: new RoomService(config, storage, clock, persister, new RateLimiter(rl.message, clock, share)),
    roomReads: new RoomReadService(storage, clock),
    aliases: new AliasService(config, storage, (alias) => services.federation.directory.fetch(alias)),
    delayedEvents: new DelayedEventService(config, storage, clock, persister, logger),
    delayedEventLimiter: new RateLimiter(rl.delayedEventMgmt, clock, share),
    accountData,
    filters,
    typing,
    receipts: new ReceiptService(storage, clock, notifier, accountData),
    pushRules: new PushRuleService(storage, notifier, { msc4075CallRules: config.features.msc4075CallRules }),
    sync: new SyncService(storage, clock, notifier, typing, filters),
    slidingSync: new SlidingSyncService(storage, clock, notifier, typing, (userId) => services.pushRules.all(userId)),
    deviceKeys,
    federatedKeys: new FederatedKeys({
      serverName: config.serverName,
      storage,
      deviceKeys,
      crossSigning: () => services.crossSigning,
      client: () => services.federation.client,
      logger,
    }),
    crossSigning: new CrossSigningService(storage, deviceKeys, (requester, purpose, auth) =>
      sessions.requirePassword(requester, purpose, auth),
    ),
    keyBackup: new KeyBackupService(storage),
    toDevice: new ToDeviceService(storage, notifier, config.serverName),
    media: new MediaService(config, storage, clock, new RateLimiter(rl.mediaCreate, clock, share), logger),
    pushActions: new PushActionService(
      storage,
      clock,
      config.serverName,
      (userIds, stores) => services.pushRules.rulesets(userIds, stores === storage ? undefined : stores),
      logger,
    ),
    pushers: new PusherService(config, storage, clock, logger),
    federation,
    federatedRooms: new FederatedRooms(storage, clock, persister, federation, signingKey),
  };
  services.rooms.useRemoteRooms(services.federatedRooms);
  services.roomReads.useRemoteHistory(services.federatedRooms.history);
  // Local activity other servers hear of, as EDUs (federation/sender/outgoing_edus.ts).
  const outgoing = services.federation.outgoingEdus;
  typing.onChange((roomId, userId, isTyping) => outgoing.typing(roomId, userId, isTyping));
  services.receipts.onReceipt((receipt) => outgoing.receipt(receipt));
  services.toDevice.onRemote((sender, type, messages) => outgoing.toDevice(sender, type, messages));
  deviceKeys.onDeviceChange((userId, deviceId) => outgoing.deviceChanged(userId, deviceId));
  // In the event's transaction (local events), or before sync is woken for it (remote ones), so
  // the response that brings an event brings its counts.
  persister.inTransaction((tx, event, _version, before) => services.pushActions.stage(tx, event, before));
  persister.onPersisted((event) => services.pushActions.committed(event));
  services.pushActions.onNotified((notified) => services.pushers.notified(notified));
  services.receipts.onRead((userId) => services.pushers.read(userId));
  services.accounts.onProfileChanged((userId) =>
    services.rooms.refreshMemberProfiles(userId, (err, roomId) => logger.warn({ err, roomId, userId }, "profile: could not update a room's member event")),
  );
  if (config.media.enabled && config.media.urlPreview.enabled) {
    // Each preview may store a picture: the same per-user rate as uploads, in a bucket of its own.
    const limiter = new RateLimiter(rl.mediaCreate, clock, share);
    services.urlPreview = new UrlPreviewService(config, services.media, limiter, clock, logger);
  }
  if (config.livekit) {
    const { openId, delayedEvents } = services;
    const relay = new RtcRelay(services.federation.client, logger);
    services.livekit = new LiveKitService({
      config,
      storage,
      clock,
      openId,
      delayedEvents,
      logger,
      outbound: deps.outbound,
      relayToken: (req) => relay.getToken(req),
    });
    services.federatedTokens = new FederatedTokens(config.livekit, services.livekit.sfu, storage, logger);
  }
  return services;
}
