/** Registration, passwords and profiles. */
import type { Config } from "../config/config.js";
import { Errors, MatrixError } from "../errors.js";
import type { Storage } from "../storage/interfaces.js";
import type { Requester } from "./auth.js";
import type { Clock } from "./clock.js";
import { generatedLocalpart, localpartOf, userIdFor, validateLocalpart } from "./identifiers.js";
import { hashPassword } from "./passwords.js";
import type { RateLimiter } from "./ratelimiter.js";
import type { SessionService } from "./sessions.js";
import type { AuthDict, UiaService } from "./uia.js";

export const MAX_PASSWORD_LENGTH = 512;
const MAX_DISPLAYNAME_LENGTH = 256;
const MAX_AVATAR_URL_LENGTH = 1000;

export interface RegisterRequest {
  kind: "user" | "guest";
  username?: string;
  password?: string;
  deviceId?: string;
  initialDeviceDisplayName?: string;
  inhibitLogin: boolean;
  auth?: AuthDict;
  ip: string;
}

export interface LoginResult {
  user_id: string;
  home_server: string;
  access_token?: string;
  device_id?: string;
}

export class AccountService {
  readonly #profileListeners: ((userId: string) => Promise<void>)[] = [];

  constructor(
    private readonly config: Config,
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly uia: UiaService,
    private readonly sessions: SessionService,
    private readonly registrationLimiter: RateLimiter,
  ) {}

  registrationFlows(): { stages: string[] }[] {
    return [{ stages: [this.config.registration.requiresToken ? "m.login.registration_token" : "m.login.dummy"] }];
  }

  async register(req: RegisterRequest): Promise<LoginResult> {
    const reg = this.config.registration;
    if (req.kind === "guest") {
      if (!reg.allowGuests) throw Errors.forbidden("Guest access is disabled");
    } else if (!reg.enabled) {
      throw Errors.forbidden("Registration has been disabled");
    }
    this.registrationLimiter.ratelimit(req.ip, false);

    if (req.kind === "guest") {
      return this.#createAccount(
        { localpart: undefined, passwordHash: null, isGuest: true, isAdmin: false },
        { ...req, deviceId: undefined },
      );
    }

    let localpart: string | undefined;
    if (req.username !== undefined) {
      localpart = req.username.toLowerCase();
      validateLocalpart(localpart, this.config.serverName);
      // Checked before UIA so that nobody completes the stages only to hear that the name is taken.
      if (await this.storage.accounts.getUser(userIdFor(localpart, this.config.serverName))) throw Errors.userInUse();
    }
    if (req.password !== undefined && req.password.length > MAX_PASSWORD_LENGTH) {
      throw Errors.invalidParam("Invalid password");
    }

    let tokenUsed: string | undefined;
    await this.uia.check("register", req.auth, this.registrationFlows(), {
      "m.login.dummy": async () => {},
      "m.login.registration_token": async (auth) => {
        const token = typeof auth.token === "string" ? auth.token : undefined;
        if (!token || !(await this.#tokenValid(token))) {
          throw new MatrixError(401, "M_UNAUTHORIZED", "Invalid registration token");
        }
        tokenUsed = token;
      },
    });
    if (req.password === undefined) throw Errors.missingParam("Missing password");
    if (tokenUsed !== undefined && !(await this.storage.registrationTokens.consume(tokenUsed, this.clock.now()))) {
      throw new MatrixError(401, "M_UNAUTHORIZED", "Invalid registration token");
    }
    return this.#createAccount(
      { localpart, passwordHash: await hashPassword(req.password), isGuest: false, isAdmin: false },
      req,
    );
  }

  /** Creates a user directly, as the CLI and the shared-secret admin API do. */
  async createUser(
    localpart: string,
    password: string,
    opts: { admin: boolean; displayname?: string; login: boolean },
  ): Promise<LoginResult> {
    localpart = localpart.toLowerCase();
    validateLocalpart(localpart, this.config.serverName);
    if (password.length > MAX_PASSWORD_LENGTH) throw Errors.invalidParam("Invalid password");
    return this.#createAccount(
      { localpart, passwordHash: await hashPassword(password), isGuest: false, isAdmin: opts.admin, displayname: opts.displayname },
      { inhibitLogin: !opts.login },
    );
  }

  async #createAccount(
    user: { localpart: string | undefined; passwordHash: string | null; isGuest: boolean; isAdmin: boolean; displayname?: string },
    login: { inhibitLogin: boolean; deviceId?: string; initialDeviceDisplayName?: string; ip?: string },
  ): Promise<LoginResult> {
    const now = this.clock.now();
    for (let attempt = 0; attempt < 5; attempt++) {
      const localpart = user.localpart ?? generatedLocalpart();
      const userId = userIdFor(localpart, this.config.serverName);
      const session = login.inhibitLogin
        ? null
        : this.sessions.prepareSession(login.deviceId, login.initialDeviceDisplayName, login.ip ?? null);
      const created = await this.storage.accounts.createUser(
        {
          userId,
          passwordHash: user.passwordHash,
          isGuest: user.isGuest,
          isAdmin: user.isAdmin,
          displayname: user.displayname ?? localpart,
        },
        session && session.record,
        now,
      );
      if (!created) {
        if (user.localpart !== undefined) throw Errors.userInUse();
        continue;
      }
      if (login.ip) this.registrationLimiter.record(login.ip);
      if (!session) return { user_id: userId, home_server: this.config.serverName };
      return {
        user_id: userId,
        home_server: this.config.serverName,
        access_token: session.token,
        device_id: session.record.deviceId,
      };
    }
    throw Errors.unknown("Could not allocate a user ID", 500);
  }

  async isAvailable(username: string): Promise<void> {
    const localpart = username.toLowerCase();
    validateLocalpart(localpart, this.config.serverName);
    if (await this.storage.accounts.getUser(userIdFor(localpart, this.config.serverName))) throw Errors.userInUse();
  }

  async #tokenValid(token: string): Promise<boolean> {
    const t = await this.storage.registrationTokens.get(token);
    if (!t) return false;
    if (t.expiryTime !== null && t.expiryTime <= this.clock.now()) return false;
    return t.usesAllowed === null || t.completed + t.pending < t.usesAllowed;
  }

  async registrationTokenValid(token: string): Promise<boolean> {
    if (!this.config.registration.requiresToken) throw Errors.forbidden("Registration tokens are not required here");
    return this.#tokenValid(token);
  }

  async changePassword(requester: Requester, newPassword: string, logoutDevices: boolean, auth?: AuthDict): Promise<void> {
    if (requester.isGuest) throw Errors.guestForbidden();
    await this.sessions.requirePassword(requester, "change_password", auth);
    if (newPassword.length > MAX_PASSWORD_LENGTH) throw Errors.invalidParam("Invalid password");
    await this.storage.accounts.setPasswordHash(requester.userId, await hashPassword(newPassword));
    if (logoutDevices) await this.sessions.logoutOtherDevices(requester);
  }

  async getProfile(userId: string): Promise<{ displayname?: string; avatar_url?: string }> {
    const profile = await this.storage.accounts.getProfile(userId);
    if (!profile) throw Errors.notFound("Profile was not found");
    const out: { displayname?: string; avatar_url?: string } = {};
    if (profile.displayname !== null) out.displayname = profile.displayname;
    if (profile.avatar_url !== null) out.avatar_url = profile.avatar_url;
    return out;
  }

  async setProfileField(requester: Requester, userId: string, field: "displayname" | "avatar_url", value: string | null) {
    if (localpartOf(userId, this.config.serverName) === undefined || requester.userId !== userId) {
      throw Errors.forbidden("You cannot set another user's profile");
    }
    const max = field === "displayname" ? MAX_DISPLAYNAME_LENGTH : MAX_AVATAR_URL_LENGTH;
    if (value !== null && value.length > max) {
      throw new MatrixError(400, "M_TOO_LARGE", `${field} may not be longer than ${max} characters`);
    }
    await this.storage.accounts.setProfileField(userId, field, value);
    for (const listener of this.#profileListeners) await listener(userId);
  }

  /**
   * Runs `listener` after each profile change, before the change is acknowledged: the rooms'
   * member events carry the profile, and clients read it from there.
   */
  onProfileChanged(listener: (userId: string) => Promise<void>): void {
    this.#profileListeners.push(listener);
  }
}
