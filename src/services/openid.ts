/**
 * OpenID tokens (spec: "OpenID" in the Client-Server API). A user hands one
 * to a third party, which asks `/_matrix/federation/v1/openid/userinfo` who
 * it belongs to. The LiveKit JWT service depends on this for every call.
 */
import { randomBytes } from "node:crypto";
import type { Config } from "../config/config.js";
import { Errors } from "../errors.js";
import type { Storage } from "../storage/interfaces.js";
import { hashToken, type Requester } from "./auth.js";
import type { Clock } from "./clock.js";

export const OPENID_TOKEN_LIFETIME_S = 3600;

export interface OpenIdToken {
  access_token: string;
  token_type: "Bearer";
  matrix_server_name: string;
  expires_in: number;
}

export class OpenIdService {
  constructor(
    private readonly config: Config,
    private readonly storage: Storage,
    private readonly clock: Clock,
  ) {}

  async requestToken(requester: Requester, userId: string): Promise<OpenIdToken> {
    if (requester.userId !== userId) throw Errors.forbidden("Cannot request OpenID tokens for other users");
    const token = randomBytes(32).toString("base64url");
    const now = this.clock.now();
    await this.storage.openIdTokens.create(hashToken(token), userId, now + OPENID_TOKEN_LIFETIME_S * 1000, now);
    return {
      access_token: token,
      token_type: "Bearer",
      matrix_server_name: this.config.serverName,
      expires_in: OPENID_TOKEN_LIFETIME_S,
    };
  }

  /** Who owns the token; 401 `M_UNKNOWN_TOKEN` when it is unknown or expired. */
  async userInfo(token: string): Promise<{ sub: string }> {
    const userId = await this.storage.openIdTokens.findUser(hashToken(token), this.clock.now());
    if (!userId) throw Errors.unknownTokenPlain();
    return { sub: userId };
  }
}
