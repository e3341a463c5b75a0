/** Builds every domain service once, from config, storage and a clock. */
import type { Config } from "../config/config.js";
import type { Storage } from "../storage/interfaces.js";
import { AccountService } from "./accounts.js";
import { AdminService } from "./admin.js";
import { AuthService } from "./auth.js";
import type { Clock } from "./clock.js";
import { RateLimiter } from "./ratelimiter.js";
import { SessionService } from "./sessions.js";
import { UiaService } from "./uia.js";

export interface Services {
  config: Config;
  clock: Clock;
  auth: AuthService;
  uia: UiaService;
  sessions: SessionService;
  accounts: AccountService;
  admin: AdminService;
}

export function createServices(config: Config, storage: Storage, clock: Clock): Services {
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
  return { config, clock, auth, uia, sessions, accounts, admin };
}
