/**
 * Canonical JSON, as defined in the Matrix specification appendix "Canonical JSON"
 * (https://spec.matrix.org/latest/appendices/#canonical-json):
 *
 * - object keys sorted by Unicode code point;
 * - no insignificant whitespace;
 * - strings UTF-8, with only the escapes the grammar requires (`\"`, `\\`, `\b`, `\f`,
 *   `\n`, `\r`, `\t` and `\u00XX` for the other ASCII control characters);
 * - numbers are integers in `[-(2**53)+1, (2**53)-1]`, without exponent or fraction,
 *   and `-0` is written as `0`.
 *
 * Anything that is not JSON (floats, NaN, Infinity, out-of-range integers, `undefined`
 * in an array or at the top level, functions, symbols, class instances, lone UTF-16
 * surrogates) throws a {@link CanonicalJsonError}. An object property whose value is
 * `undefined` is omitted, as `JSON.stringify` does, so that a value stored with
 * `JSON.stringify` hashes the same after it is read back.
 */

/** Largest integer canonical JSON allows: 2**53 - 1. */
export const CANONICAL_JSON_MAX_INT = Number.MAX_SAFE_INTEGER;
/** Smallest integer canonical JSON allows: -(2**53) + 1. */
export const CANONICAL_JSON_MIN_INT = Number.MIN_SAFE_INTEGER;

/** The value can't be written as canonical JSON. `path` points at the offending value. */
export class CanonicalJsonError extends Error {
  constructor(
    /** What is wrong, without where. */
    readonly reason: string,
    readonly path: string,
  ) {
    super(path === "" ? reason : `${reason} (at ${path})`);
    this.name = "CanonicalJsonError";
  }
}

/**
 * Rethrows a failure found inside the member `segment` (a key or an index) with the path from
 * here. Paths are put together only when something fails, as the error unwinds: every event is
 * serialised several times, and building each member's path as it went made most of the
 * writer's garbage.
 */
function within(err: unknown, segment: string | number): never {
  if (!(err instanceof CanonicalJsonError)) throw err;
  const head = typeof segment === "number" ? `[${segment}]` : segment;
  const rest = err.path === "" || err.path.startsWith("[") ? err.path : `.${err.path}`;
  throw new CanonicalJsonError(err.reason, head + rest);
}

/** Matches a lone (unpaired) UTF-16 surrogate; in `u` mode a valid pair is one code point. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/**
 * Compares two strings by Unicode code point (which is also UTF-8 byte order).
 * JavaScript's default comparison works on UTF-16 code units, which sorts
 * U+E000..U+FFFF after astral characters; this fixes up that one difference.
 */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return fixUp(x) - fixUp(y);
  }
  return a.length - b.length;
}

/** Moves surrogates (astral code points) above the rest of the BMP. */
function fixUp(unit: number): number {
  if (unit >= 0xe000) return unit - 0x800;
  if (unit >= 0xd800) return unit + 0x2000;
  return unit;
}

/** Serialises `value` as canonical JSON. Throws {@link CanonicalJsonError}. */
export function canonicalJson(value: unknown): string {
  if (value === undefined) throw new CanonicalJsonError("undefined is not a JSON value", "");
  return write(value, "");
}

/** Canonical JSON as UTF-8 bytes, the form that is hashed and signed. */
export function canonicalJsonBytes(value: unknown): Buffer {
  return Buffer.from(canonicalJson(value), "utf8");
}

/**
 * Appends `value` to `out`. One string grows through the whole value, rather than each array
 * and object joining its members into a string of its own that its parent then copies: every
 * event is serialised four times (hashes, signature, event ID, size limit).
 */
function write(value: unknown, out: string): string {
  switch (typeof value) {
    case "string":
      return out + writeString(value);
    case "number":
      return out + writeNumber(value);
    case "boolean":
      return out + (value ? "true" : "false");
    case "bigint":
      if (value > BigInt(CANONICAL_JSON_MAX_INT) || value < BigInt(CANONICAL_JSON_MIN_INT)) {
        throw new CanonicalJsonError(`integer ${value} is outside [-(2**53)+1, 2**53-1]`, "");
      }
      return out + value.toString();
    case "object":
      if (value === null) return out + "null";
      if (Array.isArray(value)) return writeArray(value, out);
      return writeObject(value, out);
    default:
      throw new CanonicalJsonError(`${typeof value} is not a JSON value`, "");
  }
}

function writeString(s: string): string {
  if (LONE_SURROGATE.test(s)) {
    throw new CanonicalJsonError("string contains a lone UTF-16 surrogate, which is not valid UTF-8", "");
  }
  // JSON.stringify emits exactly the escapes of the canonical grammar for well-formed
  // strings: the short forms for \b \t \n \f \r \" \\, lowercase \u00XX for the other
  // control characters, and every other code point literally.
  return JSON.stringify(s);
}

function writeNumber(n: number): string {
  if (!Number.isFinite(n)) throw new CanonicalJsonError(`${n} is not a JSON number`, "");
  if (!Number.isInteger(n)) throw new CanonicalJsonError(`${n} is not an integer; canonical JSON has no floats`, "");
  if (n > CANONICAL_JSON_MAX_INT || n < CANONICAL_JSON_MIN_INT) {
    throw new CanonicalJsonError(`integer ${n} is outside [-(2**53)+1, 2**53-1]`, "");
  }
  // String(-0) is "0"; safe integers never print with an exponent.
  return String(n);
}

function writeArray(items: readonly unknown[], out: string): string {
  out += "[";
  for (let i = 0; i < items.length; i++) {
    if (i > 0) out += ",";
    const item = items[i];
    try {
      if (item === undefined) throw new CanonicalJsonError("undefined is not a JSON value", "");
      out = write(item, out);
    } catch (err) {
      within(err, i);
    }
  }
  return out + "]";
}

/** A code unit from U+D800 up, where UTF-16 order and code point order can differ. */
const HIGH_UNIT = /[\uD800-\uFFFF]/;

function writeObject(obj: object, out: string): string {
  const proto = Object.getPrototypeOf(obj) as unknown;
  if (proto !== Object.prototype && proto !== null) {
    const name = (obj.constructor as { name?: string } | undefined)?.name ?? "object";
    throw new CanonicalJsonError(`${name} is not a plain JSON object`, "");
  }
  const record = obj as Record<string, unknown>;
  const keys = Object.keys(record);
  // The built-in order (UTF-16 code units) is code point order unless a key has a unit from
  // U+D800 up; the comparator, a call per comparison, is kept for those.
  if (keys.some((k) => HIGH_UNIT.test(k))) keys.sort(compareCodePoints);
  else keys.sort();
  out += "{";
  let first = true;
  for (const key of keys) {
    const value = record[key];
    if (value === undefined) continue;
    try {
      out += first ? writeString(key) : "," + writeString(key);
      out = write(value, out + ":");
    } catch (err) {
      within(err, key);
    }
    first = false;
  }
  return out + "}";
}
