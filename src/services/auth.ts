/**
 * Access tokens: random, shown to the client once, stored only as a SHA-256
 * hash. Lookups are cached in memory; logout drops the cached entry.
 */
import { hash, randomBytes, timingSafeEqual } from "node:crypto";
import type { DeviceStore } from "../storage/interfaces.js";

export interface Requester {
  userId: string;
  deviceId: string;
  isGuest: boolean;
  tokenHash: string;
}

const CACHE_LIMIT = 50_000;

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
}

export class AuthService {
  readonly #cache = new Map<string, Cached>();

  constructor(private readonly devices: DeviceStore) {}

  /**
   * The owner of a token already in the cache, without waiting on anything; undefined when
   * it is not cached (call `authenticate`). Most requests take this path.
   */
  cachedOwner(token: string): Requester | undefined {
    const hex = hashToken(token);
    const cached = this.#cache.get(hex);
    if (!cached) return undefined;
    const digest = Buffer.from(hex, "hex");
    return cached.digest.length === digest.length && timingSafeEqual(cached.digest, digest) ? cached.owner : undefined;
  }

  /** Resolves a token to its owner, or undefined when it is unknown or revoked. */
  async authenticate(token: string): Promise<Requester | undefined> {
    // Hex output then decoding is cheaper than asking for a Buffer (Node 20).
    const hex = hashToken(token);
    const digest = Buffer.from(hex, "hex");
    let cached = this.#cache.get(hex);
    if (!cached) {
      const owner = await this.devices.findToken(hex);
      if (!owner) return undefined;
      if (this.#cache.size >= CACHE_LIMIT) this.#cache.delete(this.#cache.keys().next().value!);
      cached = { owner, digest: Buffer.from(owner.tokenHash, "hex") };
      this.#cache.set(hex, cached);
    }
    // The map lookup is by hash; this keeps the final comparison constant-time too.
    if (cached.digest.length !== digest.length || !timingSafeEqual(cached.digest, digest)) return undefined;
    return cached.owner;
  }

  /** Called with the hashes a logout or device deletion removed from storage. */
  forget(hashes: Iterable<string>): void {
    for (const h of hashes) this.#cache.delete(h);
  }
}
