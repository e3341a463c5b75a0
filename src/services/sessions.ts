/** Logins, logouts and devices: everything that makes or ends an access token. */
import type { Config } from "../config/config.js";
import { Errors } from "../errors.js";
import type { DeviceRecord, NewSession, Storage } from "../storage/interfaces.js";
import { newAccessToken, type Requester } from "./auth.js";
import type { Clock } from "./clock.js";
import { localpartOf, newDeviceId, userIdFor } from "./identifiers.js";
import { hashPassword, verifyPassword } from "./passwords.js";
import type { RateLimiter } from "./ratelimiter.js";
import type { Notifier } from "./sync/notifier.js";
import type { AuthDict, UiaService } from "./uia.js";

export interface LoginRequest {
  type: string;
  identifier?: { type?: unknown; user?: unknown };
  user?: string;
  password?: string;
  deviceId?: string;
  initialDeviceDisplayName?: string;
  ip: string;
}

export interface LoginLimiters {
  address: RateLimiter;
  account: RateLimiter;
  failedAttempts: RateLimiter;
}

export interface DeviceView {
  device_id: string;
  display_name?: string;
  last_seen_ip?: string;
  last_seen_ts?: number;
  user_id?: string;
}

function deviceView(d: DeviceRecord): DeviceView {
  const out: DeviceView = { device_id: d.deviceId };
  if (d.displayName !== null) out.display_name = d.displayName;
  if (d.lastSeenIp !== null) out.last_seen_ip = d.lastSeenIp;
  if (d.lastSeenTs !== null) out.last_seen_ts = d.lastSeenTs;
  return out;
}

let dummyHash: Promise<string> | undefined;
const timingDummyHash = () => (dummyHash ??= hashPassword("switchboard timing equaliser"));

const PASSWORD_FLOWS = [{ stages: ["m.login.password"] }];

export class SessionService {
  constructor(
    private readonly config: Config,
    private readonly storage: Storage,
    private readonly clock: Clock,
    /** Where revoked tokens are announced, so every process's token cache drops them. */
    private readonly revocations: Pick<Notifier, "revokeTokens">,
    private readonly uia: UiaService,
    private readonly limiters: LoginLimiters,
  ) {}

  /** A fresh token and device record, ready for storage to write in the caller's transaction. */
  prepareSession(deviceId: string | undefined, displayName: string | undefined, ip: string | null) {
    const { token, hash } = newAccessToken();
    const record: NewSession = { deviceId: deviceId ?? newDeviceId(), displayName: displayName ?? null, tokenHash: hash, ip };
    return { token, record };
  }

  async login(req: LoginRequest) {
    this.limiters.address.ratelimit(req.ip);
    if (req.type !== "m.login.password") throw Errors.unknown(`Unknown login type ${req.type}`);
    let user: string | undefined;
    if (req.identifier !== undefined) {
      if (req.identifier.type !== "m.id.user") throw Errors.unknown("Unknown login identifier type");
      if (typeof req.identifier.user !== "string") throw Errors.missingParam("User identifier is missing 'user' key");
      user = req.identifier.user;
    } else {
      user = req.user;
    }
    if (user === undefined) throw Errors.missingParam("Missing 'identifier' or 'user'");
    if (typeof req.password !== "string") throw Errors.missingParam("Missing 'password'");

    const userId = await this.#checkPassword(user, req.password);
    this.limiters.account.ratelimit(userId);
    const session = this.prepareSession(req.deviceId, req.initialDeviceDisplayName, req.ip);
    await this.storage.devices.createSession(userId, session.record, this.clock.now());
    return {
      user_id: userId,
      access_token: session.token,
      device_id: session.record.deviceId,
      home_server: this.config.serverName,
      well_known: { "m.homeserver": { base_url: this.config.publicBaseUrl } },
    };
  }

  /** Verifies a password for a user, counting failures against `rc_login.failed_attempts`. */
  async #checkPassword(user: string, password: string): Promise<string> {
    const invalid = () => Errors.forbidden("Invalid username or password");
    const localpart = localpartOf(user, this.config.serverName);
    if (localpart === undefined) throw invalid();
    const userId = userIdFor(localpart, this.config.serverName);
    this.limiters.failedAttempts.ratelimit(userId, false);
    const record = await this.storage.accounts.getUser(userId);
    // Unknown users cost a hash too, so response time does not reveal which accounts exist.
    const hash = record?.passwordHash ?? (await timingDummyHash());
    const ok = (await verifyPassword(password, hash)) && record?.passwordHash != null;
    if (!ok) {
      this.limiters.failedAttempts.record(userId);
      throw invalid();
    }
    return userId;
  }

  /** UIA with the account password, for operations that need the user to prove it is them. */
  async requirePassword(requester: Requester, purpose: string, auth?: AuthDict): Promise<void> {
    await this.uia.check(purpose, auth, PASSWORD_FLOWS, {
      "m.login.password": async (dict) => {
        const identifier = dict.identifier as { type?: unknown; user?: unknown } | undefined;
        const user = identifier?.type === "m.id.user" ? identifier.user : dict.user;
        const password = dict.password;
        if (typeof user !== "string" || typeof password !== "string") throw Errors.forbidden("Invalid username or password");
        const userId = await this.#checkPassword(user, password);
        if (userId !== requester.userId) throw Errors.forbidden("You can only authenticate as yourself");
      },
    });
  }

  async logout(requester: Requester): Promise<void> {
    const deleted = await this.storage.devices.deleteDevices(requester.userId, [requester.deviceId]);
    await this.revocations.revokeTokens([...deleted, requester.tokenHash]);
  }

  async logoutAll(requester: Requester): Promise<void> {
    await this.revocations.revokeTokens(await this.storage.devices.deleteAllDevices(requester.userId));
  }

  /** Revokes every other token of the user: other devices, and other tokens of this device. */
  async logoutOtherDevices(requester: Requester): Promise<void> {
    const keep = { deviceId: requester.deviceId, tokenHash: requester.tokenHash };
    await this.revocations.revokeTokens(await this.storage.devices.deleteAllDevices(requester.userId, keep));
  }

  async listDevices(requester: Requester): Promise<DeviceView[]> {
    return (await this.storage.devices.listDevices(requester.userId)).map(deviceView);
  }

  async getDevice(requester: Requester, deviceId: string): Promise<DeviceView> {
    const device = await this.storage.devices.getDevice(requester.userId, deviceId);
    if (!device) throw Errors.notFound("Device not found");
    return deviceView(device);
  }

  async renameDevice(requester: Requester, deviceId: string, name: string | null): Promise<void> {
    if (!(await this.storage.devices.setDeviceDisplayName(requester.userId, deviceId, name))) {
      throw Errors.notFound("Device not found");
    }
  }

  async deleteDevices(requester: Requester, deviceIds: string[], auth?: AuthDict): Promise<void> {
    await this.requirePassword(requester, `delete_devices:${[...deviceIds].sort().join(",")}`, auth);
    await this.revocations.revokeTokens(await this.storage.devices.deleteDevices(requester.userId, deviceIds));
  }

  async deleteDevice(requester: Requester, deviceId: string, auth?: AuthDict): Promise<void> {
    if (!(await this.storage.devices.getDevice(requester.userId, deviceId))) throw Errors.notFound("Device not found");
    await this.deleteDevices(requester, [deviceId], auth);
  }
}
