/**
 * Who an OpenID token belongs to. Our own users' tokens are looked up in
 * process: no round trip through a proxy, DNS or TLS, which is where
 * lk-jwt-service most often fails in the field. Other servers are asked at
 * `/_matrix/federation/v1/openid/userinfo`, found by server discovery, over
 * verified TLS, and must vouch only for their own users.
 */
import { createHash } from "node:crypto";
import type { Logger } from "pino";
import { MatrixError } from "../../errors.js";
import { isValidServerName, isValidUserId, serverNameOf } from "../../events/ids.js";
import type { Clock } from "../clock.js";
import type { OpenIdService } from "../openid.js";
import { jsonObject, type Outbound } from "./outbound.js";
import type { ServerDiscovery } from "../federation/discovery.js";

/** Long enough to absorb a client's retries, short enough that a revoked token stops working soon. */
const ANSWER_CACHE_MS = 60_000;
const ANSWER_CACHE_LIMIT = 10_000;

export function unauthorised(why: string): MatrixError {
  return new MatrixError(401, "M_UNAUTHORIZED", `The request could not be authorised: ${why}`);
}

export class OpenIdVerifier {
  readonly #answers = new Map<string, { sub: string; until: number }>();

  constructor(
    private readonly serverName: string,
    private readonly openId: OpenIdService,
    private readonly outbound: Outbound,
    private readonly discovery: ServerDiscovery,
    private readonly clock: Clock,
    private readonly logger: Pick<Logger, "warn" | "info">,
  ) {}

  /** The token's user ID; 401 `M_UNAUTHORIZED` when it cannot be confirmed. */
  async verify(accessToken: string, matrixServerName: string): Promise<string> {
    if (matrixServerName === this.serverName) {
      try {
        return (await this.openId.userInfo(accessToken)).sub;
      } catch {
        throw unauthorised("the OpenID token is unknown or expired");
      }
    }
    if (!isValidServerName(matrixServerName)) throw unauthorised("`matrix_server_name` is not a server name");
    // The cache key holds a hash, so no token sits in memory longer than the request needs it.
    const key = `${matrixServerName}\n${createHash("sha256").update(accessToken).digest("base64")}`;
    const hit = this.#answers.get(key);
    if (hit && hit.until > this.clock.now()) return hit.sub;

    const sub = await this.#askRemote(accessToken, matrixServerName);
    if (this.#answers.size >= ANSWER_CACHE_LIMIT) this.#answers.clear();
    this.#answers.set(key, { sub, until: this.clock.now() + ANSWER_CACHE_MS });
    return sub;
  }

  async #askRemote(accessToken: string, serverName: string): Promise<string> {
    const targets = await this.discovery.resolve(serverName);
    const path = `/_matrix/federation/v1/openid/userinfo?access_token=${encodeURIComponent(accessToken)}`;
    let lastError: unknown;
    for (const t of targets) {
      let res;
      try {
        res = await this.outbound.request({
          method: "GET",
          scheme: "https",
          host: t.tlsName,
          connectHost: t.connectHost,
          port: t.port,
          hostHeader: t.hostHeader,
          path,
        });
      } catch (err) {
        // Unreachable or untrusted: try the next place discovery gave.
        lastError = err;
        continue;
      }
      if (res.status !== 200) {
        this.logger.info({ server: serverName, status: res.status }, "remote homeserver refused an OpenID token");
        throw unauthorised(`${serverName} did not accept the OpenID token`);
      }
      const sub = jsonObject(res.body)?.sub;
      if (typeof sub !== "string" || !isValidUserId(sub)) {
        this.logger.warn({ server: serverName }, "remote homeserver's OpenID userinfo answer has no valid `sub`");
        throw unauthorised(`${serverName} gave no valid user ID for the OpenID token`);
      }
      // A server may only vouch for its own users.
      if (serverNameOf(sub) !== serverName) {
        this.logger.warn({ server: serverName, sub_server: serverNameOf(sub) }, "OpenID userinfo named a user of another server");
        throw unauthorised(`${serverName} answered for a user of another server`);
      }
      return sub;
    }
    this.logger.warn(
      { server: serverName, targets: targets.map((t) => `${t.connectHost}:${t.port}`), err: String(lastError) },
      "could not reach a remote homeserver to check an OpenID token",
    );
    throw unauthorised(`could not reach ${serverName} to check the OpenID token`);
  }
}
