/**
 * Access tokens: random, shown to the client once, stored only as a SHA-256
 * hash. Lookups are cached in memory; logout drops the cached entry.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { DeviceStore } from "../storage/interfaces.js";

export interface Requester {
  userId: string;
  deviceId: string;
  isGuest: boolean;
  tokenHash: string;
}

const CACHE_LIMIT = 50_000;

export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

export function newAccessToken(): { token: string; hash: string } {
  const token = `sbt_${randomBytes(32).toString("base64url")}`;
  return { token, hash: hashToken(token) };
}

export class AuthService {
  readonly #cache = new Map<string, Requester>();

  constructor(private readonly devices: DeviceStore) {}

  /** Resolves a token to its owner, or undefined when it is unknown or revoked. */
  async authenticate(token: string): Promise<Requester | undefined> {
    const hash = hashToken(token);
    let owner = this.#cache.get(hash);
    if (!owner) {
      owner = await this.devices.findToken(hash);
      if (!owner) return undefined;
      if (this.#cache.size >= CACHE_LIMIT) this.#cache.delete(this.#cache.keys().next().value!);
      this.#cache.set(hash, owner);
    }
    // The map lookup is by hash; this keeps the final comparison constant-time too.
    const a = Buffer.from(owner.tokenHash, "hex");
    const b = Buffer.from(hash, "hex");
    if (a.length !== b.length || !timingSafeEqual(a, b)) return undefined;
    return owner;
  }

  /** Called with the hashes a logout or device deletion removed from storage. */
  forget(hashes: Iterable<string>): void {
    for (const h of hashes) this.#cache.delete(h);
  }
}
