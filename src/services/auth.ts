/**
 * Access tokens: random, shown to the client once, stored only as a SHA-256
 * hash. Lookups are cached in memory. A revocation (logout, device deletion, password
 * change) is published through the Notifier, which every process's cache follows.
 */
import { hash, randomBytes, timingSafeEqual } from "node:crypto";
import type { DeviceStore } from "../storage/interfaces.js";
import type { Clock } from "./clock.js";
import type { Notifier } from "./sync/notifier.js";
import { trimOldest } from "./bounded_map.js";

export interface Requester {
  userId: string;
  deviceId: string;
  isGuest: boolean;
  tokenHash: string;
}

const CACHE_LIMIT = 50_000;
/**
 * How long a cached lookup is trusted before the token is looked up again. Revocations reach
 * this cache through the Notifier; this bound is the backstop for one that never arrives (a
 * process that missed a notification, say, while its connection to the others was down), so a
 * revoked token works nowhere for longer than this.
 */
export const CACHE_TRUST_MS = 5 * 60_000;

export function hashToken(token: string): string {
  return hash("sha256", token, "hex");
}

export function newAccessToken(): { token: string; hash: string } {
  const token = `sbt_${randomBytes(32).toString("base64url")}`;
  return { token, hash: hashToken(token) };
}

interface Cached {
  owner: Requester;
  /** `owner.tokenHash` as bytes, decoded once rather than per request. */
  digest: Buffer;
  /** After this, the entry is not used: the token is looked up again. */
  trustedUntil: number;
}

export class AuthService {
  readonly #cache = new Map<string, Cached>();
  /** Counts revocations, so a lookup that overlapped one does not cache what it read. */
  #revocations = 0;

  constructor(
    private readonly devices: DeviceStore,
    revocations: Pick<Notifier, "onTokensRevoked">,
    private readonly clock: Clock,
  ) {
    revocations.onTokensRevoked((hashes) => {
      this.#revocations++;
      for (const h of hashes) this.#cache.delete(h);
    });
  }

  /**
   * The owner of a token already in the cache, without waiting on anything; undefined when
   * it is not cached (call `authenticate`). Most requests take this path.
   */
  cachedOwner(token: string): Requester | undefined {
    const hex = hashToken(token);
    const cached = this.#cache.get(hex);
    if (!cached || cached.trustedUntil <= this.clock.now()) return undefined;
    const digest = Buffer.from(hex, "hex");
    return cached.digest.length === digest.length && timingSafeEqual(cached.digest, digest) ? cached.owner : undefined;
  }

  /** Resolves a token to its owner, or undefined when it is unknown or revoked. */
  async authenticate(token: string): Promise<Requester | undefined> {
    // Hex output then decoding is cheaper than asking for a Buffer (Node 20).
    const hex = hashToken(token);
    const digest = Buffer.from(hex, "hex");
    let cached = this.#cache.get(hex);
    if (!cached || cached.trustedUntil <= this.clock.now()) {
      this.#cache.delete(hex);
      const seen = this.#revocations;
      const owner = await this.devices.findToken(hex);
      if (!owner) return undefined;
      cached = { owner, digest: Buffer.from(owner.tokenHash, "hex"), trustedUntil: this.clock.now() + CACHE_TRUST_MS };
      // A revocation published while the lookup ran may be of this token, read just before its
      // deletion committed: answer this request, but leave it to the next one to look again.
      if (seen === this.#revocations) {
        this.#cache.set(hex, cached);
        trimOldest(this.#cache, CACHE_LIMIT);
      }
    }
    // The map lookup is by hash; this keeps the final comparison constant-time too.
    if (cached.digest.length !== digest.length || !timingSafeEqual(cached.digest, digest)) return undefined;
    return cached.owner;
  }
}
