/**
 * Synapse's `rc_*` rate-limit semantics: a leaky bucket per key that drains at
 * `per_second` and holds at most `burst_count` actions.
 *
 * With several processes on one database, each keeps its own buckets with its share of the
 * rate and the burst (1/N with N processes), so that together they never allow more than the
 * configured limit, and the hot path (every send is rate limited) needs no round trip to the
 * database. The cost: a client whose requests all reach one process gets 1/N of the limit
 * (docs/workers.md).
 */
import type { RateLimitConfig } from "../config/config.js";
import { Errors } from "../errors.js";
import type { Clock } from "./clock.js";

interface Bucket {
  actions: number;
  since: number;
}

export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  #lastSweep = 0;

  constructor(
    private readonly configured: RateLimitConfig,
    private readonly clock: Clock,
    /** This process's share of the limit: 1 alone, 1/N among N processes. */
    private readonly share: () => number = () => 1,
  ) {}

  /** The limit this process enforces. */
  get limit(): RateLimitConfig {
    const share = this.share();
    if (share >= 1) return this.configured;
    // Never below one action, or a small burst split N ways would refuse everything.
    return { per_second: this.configured.per_second * share, burst_count: Math.max(1, this.configured.burst_count * share) };
  }

  /**
   * Checks whether one more action is allowed for `key`, and records it when
   * `update` is set. Returns the wait in ms when it is not allowed.
   */
  check(key: string, update = true): { allowed: true } | { allowed: false; retryAfterMs: number } {
    const now = this.clock.now() / 1000;
    this.#sweep(now);
    const bucket = this.#buckets.get(key) ?? { actions: 0, since: now };
    const performed = this.#drain(bucket, now);
    const allowed = performed + 1 <= this.limit.burst_count;
    if (allowed) {
      if (update) {
        bucket.actions += 1;
        this.#buckets.set(key, bucket);
      }
      return { allowed: true };
    }
    const waitSeconds =
      this.limit.per_second > 0 ? (performed - this.limit.burst_count + 1) / this.limit.per_second : 3600;
    return { allowed: false, retryAfterMs: Math.max(1, Math.ceil(waitSeconds * 1000)) };
  }

  /** Throws 429 `M_LIMIT_EXCEEDED` when the action is not allowed. */
  ratelimit(key: string, update = true): void {
    const result = this.check(key, update);
    if (!result.allowed) throw Errors.limitExceeded(result.retryAfterMs);
  }

  /** Records an action without checking, as Synapse does after a success. */
  record(key: string): void {
    const now = this.clock.now() / 1000;
    const bucket = this.#buckets.get(key) ?? { actions: 0, since: now };
    this.#drain(bucket, now);
    bucket.actions += 1;
    this.#buckets.set(key, bucket);
  }

  /** Returns the actions still counted; an empty bucket restarts from now. */
  #drain(bucket: Bucket, now: number): number {
    const performed = bucket.actions - (now - bucket.since) * this.limit.per_second;
    if (performed > 0) return performed;
    bucket.actions = 0;
    bucket.since = now;
    return 0;
  }

  /** Drops drained buckets once a minute so the map does not grow without bound. */
  #sweep(now: number): void {
    if (now - this.#lastSweep < 60) return;
    this.#lastSweep = now;
    for (const [key, b] of this.#buckets) {
      if (b.actions - (now - b.since) * this.limit.per_second <= 0) this.#buckets.delete(key);
    }
  }
}
