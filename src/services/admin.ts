/**
 * Synapse-compatible admin operations: shared-secret registration (what
 * `register_new_matrix_user` speaks) and registration tokens.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { Config } from "../config/config.js";
import { Errors, MatrixError } from "../errors.js";
import type { RegistrationToken, Storage } from "../storage/interfaces.js";
import type { AccountService, LoginResult } from "./accounts.js";
import type { Requester } from "./auth.js";
import type { Clock } from "./clock.js";

const NONCE_LIFETIME_MS = 60_000;
const TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-";

export interface SharedSecretRegistration {
  nonce: string;
  username: string;
  password: string;
  admin: boolean;
  displayname?: string;
  /** Synapse's user type ("bot", "support"); only checked as part of the MAC, not stored. */
  userType?: string;
  mac: string;
}

export interface TokenView {
  token: string;
  uses_allowed: number | null;
  pending: number;
  completed: number;
  expiry_time: number | null;
}

const view = (t: RegistrationToken): TokenView => ({
  token: t.token,
  uses_allowed: t.usesAllowed,
  pending: t.pending,
  completed: t.completed,
  expiry_time: t.expiryTime,
});

export class AdminService {
  constructor(
    private readonly config: Config,
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly accounts: AccountService,
  ) {}

  #requireSharedSecret() {
    const secret = this.config.registration.sharedSecret;
    if (!secret) throw new MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled");
    return secret;
  }

  /** A nonce for one registration; kept in the database, so any process on it accepts it. */
  async newNonce(): Promise<string> {
    this.#requireSharedSecret();
    const now = this.clock.now();
    const nonce = randomBytes(32).toString("hex");
    await this.storage.registrationNonces.create(nonce, now, now - NONCE_LIFETIME_MS);
    return nonce;
  }

  async registerWithSharedSecret(req: SharedSecretRegistration): Promise<LoginResult> {
    const secret = this.#requireSharedSecret();
    // Spent before the MAC is checked, whatever the outcome, so a nonce cannot be used to probe
    // the secret; the store spends it atomically, so of concurrent uses exactly one gets past.
    if (!(await this.storage.registrationNonces.consume(req.nonce, this.clock.now() - NONCE_LIFETIME_MS))) {
      throw new MatrixError(400, "M_UNKNOWN", "unrecognised nonce");
    }
    const hmac = createHmac("sha1", secret.reveal()).update(
      `${req.nonce}\x00${req.username}\x00${req.password}\x00${req.admin ? "admin" : "notadmin"}`,
    );
    // As in Synapse, a user type, when given, is signed too.
    if (req.userType) hmac.update(`\x00${req.userType}`);
    const expected = hmac.digest();
    const given = Buffer.from(req.mac, "hex");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw Errors.forbidden("HMAC incorrect");
    }
    return this.accounts.createUser(req.username, req.password, {
      admin: req.admin,
      displayname: req.displayname,
      login: true,
    });
  }

  async #requireAdmin(requester: Requester): Promise<void> {
    const user = await this.storage.accounts.getUser(requester.userId);
    if (!user?.isAdmin) throw Errors.forbidden("You are not a server admin");
  }

  async createRegistrationToken(
    requester: Requester,
    req: { token?: string; uses_allowed?: number | null; expiry_time?: number | null; length?: number },
  ): Promise<TokenView> {
    await this.#requireAdmin(requester);
    if (req.expiry_time != null && req.expiry_time < this.clock.now()) {
      throw Errors.invalidParam("expiry_time must not be in the past");
    }
    const token =
      req.token ?? [...randomBytes(req.length ?? 16)].map((b) => TOKEN_CHARS[b % TOKEN_CHARS.length]).join("");
    const record: RegistrationToken = {
      token,
      usesAllowed: req.uses_allowed ?? null,
      pending: 0,
      completed: 0,
      expiryTime: req.expiry_time ?? null,
    };
    if (!(await this.storage.registrationTokens.create(record))) {
      throw new MatrixError(400, "M_INVALID_PARAM", `Token already exists: ${token}`);
    }
    return view(record);
  }

  async listRegistrationTokens(requester: Requester): Promise<TokenView[]> {
    await this.#requireAdmin(requester);
    return (await this.storage.registrationTokens.list()).map(view);
  }

  async getRegistrationToken(requester: Requester, token: string): Promise<TokenView> {
    await this.#requireAdmin(requester);
    const t = await this.storage.registrationTokens.get(token);
    if (!t) throw Errors.notFound(`No such registration token: ${token}`);
    return view(t);
  }

  async deleteRegistrationToken(requester: Requester, token: string): Promise<void> {
    await this.#requireAdmin(requester);
    if (!(await this.storage.registrationTokens.delete(token))) throw Errors.notFound(`No such registration token: ${token}`);
  }
}
