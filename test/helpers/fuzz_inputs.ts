/**
 * What the fuzz test (test/fuzz.test.ts) sends: a seeded PRNG, so that a failing run can be
 * repeated from its printed seed, and generators of hostile bodies, path parameters, headers
 * and query strings. Valid-shaped values come from the route's own body schema where it has
 * one, so that mutations get past the first check and reach the handler.
 */

/** mulberry32: small, fast, and the same sequence for the same seed on every platform. */
export class Rng {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(max: number): number {
    return Math.floor(this.next() * max);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
}

/** Valid values for path parameters, by parameter name, from the data the test created. */
export type KnownIds = Record<string, string>;

/** Strings that have broken parsers, storage or logging somewhere. */
const NASTY_STRINGS = [
  "",
  " ",
  "\u0000",
  "a\u0000b",
  "\ud800",
  "x\udfffy",
  "\ud83d\ude00",
  "é",
  "\u202e",
  "\uffff",
  "../../etc/passwd",
  "%00",
  "%",
  "\\",
  '"',
  "'; DROP TABLE users; --",
  "@alice:localhost",
  "!room:localhost",
  "$event",
  "#alias:localhost",
  "+group:localhost",
  "@:",
  "!:",
  "@alice",
  "m.room.message",
  "ed25519:a",
  "localhost",
  "mxc://localhost/abc",
  "http://[::1]/",
  "NaN",
  "-1",
  "1e400",
  "true",
  "null",
  "{}",
  "[]",
];

const NUMBERS = [0, -0, 1, -1, 0.5, 2 ** 31, -(2 ** 31), 2 ** 53, 2 ** 53 + 2, -(2 ** 63), 1e21, 1e300, -1e300, Number.MAX_VALUE];

/** Keys Matrix bodies use, so that random objects sometimes hit real fields. */
const KEYS = [
  "type", "content", "body", "msgtype", "user_id", "room_id", "event_id", "state_key", "reason", "displayname",
  "avatar_url", "name", "topic", "preset", "visibility", "invite", "initial_state", "room_version", "auth",
  "session", "password", "identifier", "user", "device_id", "device_keys", "one_time_keys", "fallback_keys",
  "timeout", "typing", "filter", "rooms", "lists", "ranges", "m.fully_read", "m.read", "actions", "conditions",
  "pattern", "enabled", "pushkey", "kind", "app_id", "data", "lang", "messages", "algorithm", "auth_data",
  "sessions", "version", "etag", "delay", "openid_token", "member", "slot_id", "server_name", "signatures",
  "origin", "pdus", "edus", "keys", "token", "uses_allowed", "expiry_time", "length", "nonce", "mac", "admin",
  "username", "limit", "since", "from", "to", "dir", "access_token", "room_alias_name", "creation_content",
  "power_level_content_override", "is_direct", "master_key", "self_signing_key", "user_signing_key", "claimed_user_id",
];

export function nastyString(rng: Rng): string {
  switch (rng.int(6)) {
    case 0:
      return "a".repeat(rng.pick([255, 256, 1000, 1001, 20_000]));
    case 1:
      return rng.pick(KEYS);
    default:
      return rng.pick(NASTY_STRINGS);
  }
}

/** A random JSON value: scalars, odd strings, and containers a few levels deep. */
export function randomValue(rng: Rng, depth = 0): unknown {
  const kind = rng.int(depth > 2 ? 5 : 8);
  switch (kind) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick(NUMBERS);
    case 3:
    case 4:
      return nastyString(rng);
    case 5:
      return Array.from({ length: rng.int(4) }, () => randomValue(rng, depth + 1));
    default: {
      const obj: Record<string, unknown> = {};
      for (let i = rng.int(4); i > 0; i--) obj[rng.chance(0.8) ? rng.pick(KEYS) : nastyString(rng)] = randomValue(rng, depth + 1);
      return obj;
    }
  }
}

interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  anyOf?: Schema[];
  const?: unknown;
  enum?: unknown[];
  minLength?: number;
  additionalProperties?: Schema | boolean;
}

/** A value that fits `schema` (roughly: enough to pass validation often), for mutating afterwards. */
export function fromSchema(rng: Rng, schema: Schema | undefined, ids: KnownIds, depth = 0): unknown {
  if (!schema || depth > 4) return randomValue(rng, depth);
  if (schema.const !== undefined) return schema.const;
  if (schema.enum) return rng.pick(schema.enum);
  if (schema.anyOf?.length) return fromSchema(rng, rng.pick(schema.anyOf), ids, depth + 1);
  const type = Array.isArray(schema.type) ? rng.pick(schema.type) : schema.type;
  switch (type) {
    case "object": {
      const obj: Record<string, unknown> = {};
      for (const [key, sub] of Object.entries(schema.properties ?? {})) {
        if (schema.required?.includes(key) || rng.chance(0.5)) obj[key] = fromSchema(rng, sub, ids, depth + 1);
      }
      return obj;
    }
    case "array":
      return Array.from({ length: rng.int(3) }, () => fromSchema(rng, schema.items, ids, depth + 1));
    case "string":
      // Mostly plausible, sometimes hostile (NUL, lone surrogates, the wrong sigil) in an otherwise valid body.
      if (rng.chance(0.2)) return nastyString(rng);
      return rng.chance(0.5) ? rng.pick(Object.values(ids)) : "x".repeat(Math.max(1, schema.minLength ?? 1));
    case "integer":
    case "number":
      return rng.int(100);
    case "boolean":
      return rng.chance(0.5);
    case "null":
      return null;
    default:
      return randomValue(rng, depth);
  }
}

/** Replaces one value somewhere in `value` with a hostile one; returns the result. */
function mutate(rng: Rng, value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== "object" || depth > 4 || rng.chance(0.25)) {
    return rng.pick([() => randomValue(rng), () => nastyString(rng), () => rng.pick(NUMBERS), () => [value], () => ({ value })])();
  }
  if (Array.isArray(value)) {
    if (value.length === 0) return [randomValue(rng)];
    const copy = [...value];
    const i = rng.int(copy.length);
    copy[i] = mutate(rng, copy[i], depth + 1);
    return copy;
  }
  const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) };
  const keys = Object.keys(copy);
  if (keys.length === 0 || rng.chance(0.2)) copy[rng.chance(0.5) ? rng.pick(KEYS) : nastyString(rng)] = randomValue(rng);
  else {
    const key = rng.pick(keys);
    if (rng.chance(0.15)) delete copy[key];
    else copy[key] = mutate(rng, copy[key], depth + 1);
  }
  return copy;
}

function nested(depth: number, open: string, close: string, inner = "1"): string {
  return open.repeat(depth) + inner + close.repeat(depth);
}

/** Raw texts no JSON parser should accept, or that stress one. */
const RAW_BODIES = [
  "{",
  '{"a":',
  "nul",
  "{'a': 1}",
  "[1,]",
  '{"a":1}}',
  '{"a":1} trailing',
  "\ufeff{}",
  "\u0000",
  '{"a":"\\ud800"}',
  '{"a":"\\u0000"}',
  '{"\\u0000":1}',
  '{"a":"\\udfff\\ud800"}',
  '{"type":"\\ud800","content":{}}',
  '{"a":1e400}',
  '{"a":-1e400}',
  '{"a":123456789012345678901234567890}',
  '{"a":1,"a":2}',
  '{"__proto__":{"polluted":true}}',
  '{"constructor":{"prototype":{"polluted":true}}}',
  "42",
  '"string"',
  "true",
  "null",
  "[]",
  "[{}]",
  "{}",
  nested(99, "[", "]"),
  nested(100, "[", "]"),
  nested(101, "[", "]"),
  nested(5000, "[", "]"),
  nested(20_000, '{"a":', "}"),
  '"' + "\\\\".repeat(5000) + '"',
];

export interface BodyCase {
  /** The raw text sent, or undefined for no body. */
  text: string | undefined;
  contentType: string | undefined;
  label: string;
}

const CONTENT_TYPES = [
  "application/json",
  "application/json; charset=utf-8",
  "text/plain",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "application/octet-stream",
  "image/png",
  "application/json; charset=latin1",
  "",
];

export function bodyCase(rng: Rng, schema: Schema | undefined, ids: KnownIds, bodyLimit: number): BodyCase {
  const contentType = rng.chance(0.7) ? "application/json" : rng.chance(0.15) ? undefined : rng.pick(CONTENT_TYPES);
  const r = rng.int(10);
  if (r === 0) return { text: undefined, contentType, label: "no body" };
  if (r <= 2) return { text: rng.pick(RAW_BODIES), contentType, label: "raw" };
  if (r === 3) {
    // Long strings: some under the body limit, some over it (413).
    const n = rng.pick([1000, 65_000, bodyLimit - 100, bodyLimit + 1000]);
    return { text: JSON.stringify({ [rng.pick(KEYS)]: "z".repeat(Math.max(0, n)) }), contentType, label: "long" };
  }
  const valid = fromSchema(rng, schema, ids);
  const body = r === 4 ? valid : mutate(rng, r === 5 ? randomValue(rng) : valid);
  return { text: JSON.stringify(body) ?? "null", contentType, label: r === 4 ? "schema-shaped" : "mutated" };
}

/** A path parameter as sent on the wire (already percent-encoded, or deliberately not). */
export function pathParam(rng: Rng, name: string, ids: KnownIds): string {
  const known = ids[name];
  const r = rng.int(10);
  if (known !== undefined && r < 4) return encodeURIComponent(known);
  return rng.pick([
    () => "",
    () => "a".repeat(rng.pick([1000, 1001, 5000])),
    () => "%00",
    () => "a%00b",
    () => "%E0%A4%A",
    () => "%",
    () => "%zz",
    () => "%C0%AF",
    () => "%ED%A0%80", // UTF-8 of the lone surrogate U+D800
    () => "..",
    () => "%2E%2E",
    () => "%2F",
    () => "é",
    () => encodeURIComponent("\ud83d\ude00ü"),
    () => encodeURIComponent(rng.pick(["@", "!", "$", "#", "+", "~"]) + (known ?? "x").slice(1)),
    () => encodeURIComponent(rng.pick(Object.values(ids))),
    () => encodeURIComponent(nastyString(rng).replace(/[\ud800-\udfff]/g, "")),
  ])();
}

const QUERY_KEYS = ["access_token", "limit", "from", "to", "dir", "since", "timeout", "filter", "full_state", "set_presence", "width", "height", "method", "allow_remote", "ts", "user_id", "server_name", "via", "v", "minimum_valid_until_ts"];

/** A query string (with its `?`), often empty. */
export function queryString(rng: Rng): string {
  if (rng.chance(0.6)) return "";
  const parts: string[] = [];
  for (let i = 1 + rng.int(3); i > 0; i--) {
    const value = rng.pick(["", "-1", "0", "1e400", "99999999999999999999", "abc", "%00", "%E0%A4%A", "%7B%7D", "%5B%5D", encodeURIComponent("{\"a\":1}"), "a".repeat(5000)]);
    parts.push(`${rng.pick(QUERY_KEYS)}=${value}`);
  }
  return `?${parts.join("&")}`;
}
