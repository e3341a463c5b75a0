/**
 * Objects keyed by what a client or another server chose (user IDs, device IDs, key IDs).
 * A plain `{}` has a prototype: a key named `__proto__` reads Object.prototype instead of
 * nothing, so `(out[key] ??= {})[other] = value` would write onto every object of the process.
 * These have none, and serialise as JSON like any object.
 */
export function dict<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}
