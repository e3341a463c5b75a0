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
import { InProcessNotifier, type Notifier } from "./sync/notifier.js";

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
}

export function createServices(
  config: Config,
  storage: Storage,
  clock: Clock,
  signingKey: () => SigningKey,
  notifier: Notifier = new InProcessNotifier(),
): Services {
  const rl = config.rateLimits;
  const auth = new AuthService(storage.devices);
  const uia = new UiaService(clock);
  const sessions = new SessionService(config, storage, clock, auth, uia, {
    address: new RateLimiter(rl.loginAddress, clock),
    account: new RateLimiter(rl.loginAccount, clock),
    failedAttempts: new RateLimiter(rl.loginFailedAttempts, clock),
  });
  const accounts = new AccountService(config, storage, clock, uia, sessions, new RateLimiter(rl.registration, clock));
  const admin = new AdminService(config, storage, clock, accounts);
  const persister = new EventPersister(config, storage, clock, signingKey, notifier);
  return {
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
    rtcLimiter: new RateLimiter(rl.rtcTransports, clock),
    notifier,
    persister,
    rooms: new RoomService(config, storage, clock, persister, new RateLimiter(rl.message, clock)),
    roomReads: new RoomReadService(storage, clock),
    aliases: new AliasService(config, storage),
  };
}
