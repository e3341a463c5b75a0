/**
 * LiveKit access tokens (HS256 JWTs), signed with node:crypto and a key made once. The SDK's
 * `AccessToken.toJwt` goes through jose, which imports the secret and walks WebCrypto on every
 * call: about five times the cost of signing here, on a path (`get_token`) that signs one token
 * per request. The bytes are the SDK's: the same header, the claims its `claimsToJwtPayload`
 * makes, then `iss`, `exp`, `nbf` and `sub` in the order jose writes them.
 */
import { createHmac, createSecretKey, type KeyObject } from "node:crypto";
import type { ClaimGrants } from "livekit-server-sdk";

/** base64url('{"alg":"HS256"}'), the protected header jose writes for the SDK. */
const HEADER = Buffer.from(JSON.stringify({ alg: "HS256" })).toString("base64url");

export class LiveKitTokenSigner {
  readonly #key: KeyObject;

  /**
   * @param toPayload the SDK's `claimsToJwtPayload`, so the claims keep LiveKit's shape.
   */
  constructor(
    private readonly apiKey: string,
    secret: string,
    private readonly toPayload: (grants: ClaimGrants) => Record<string, unknown>,
  ) {
    // The SDK signs with the secret's UTF-8 bytes as the HMAC key.
    this.#key = createSecretKey(Buffer.from(secret, "utf8"));
  }

  /** A token for `identity` with `grants`, valid from now for `ttlSeconds` (wall-clock time, as the SFU checks it). */
  sign(grants: ClaimGrants, identity: string, ttlSeconds: number): string {
    const now = Math.floor(Date.now() / 1000);
    const payload = { ...this.toPayload(grants), iss: this.apiKey, exp: now + ttlSeconds, nbf: now, sub: identity };
    const signed = `${HEADER}.${Buffer.from(JSON.stringify(payload)).toString("base64url")}`;
    return `${signed}.${createHmac("sha256", this.#key).update(signed).digest("base64url")}`;
  }
}
