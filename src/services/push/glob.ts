/**
 * Glob matching for push rules (spec appendix "Glob-style matching": `*` is any run of characters,
 * `?` exactly one). Patterns are compiled once into literal segments split at `*` and matched by
 * leftmost-first search, not by RegExp: a backtracking `.*a.*a.*a.*b` over a 64 KiB body is
 * exponential-ish in V8, while this is O(body × pattern) at worst, whatever a user's rule says.
 * Synapse avoids the same cliff with Rust's linear-time regex engine.
 *
 * Callers pass haystacks already lower-cased (and patterns are lower-cased here): the spec leaves
 * "case-insensitive" to the server, and this is what Synapse does too.
 */
import { trimOldest } from "../bounded_map.js";

/** `?` in a segment; any other unit is one code point (1 or 2 UTF-16 units) to match literally. */
const ANY = null;
type Unit = string | typeof ANY;

interface Segment {
  units: Unit[];
  /** The segment's text when it has no `?`, so `indexOf`/`startsWith` can do the work. */
  plain: string | undefined;
}

export interface Glob {
  /** Runs between `*`s, in order; a pattern without `*` has exactly one (maybe empty). */
  segments: Segment[];
  hasStar: boolean;
  leadingStar: boolean;
  trailingStar: boolean;
}

const MAX_CACHED = 4096;
const cache = new Map<string, Glob>();

/** The compiled glob, from a bounded cache: rulesets are rebuilt per recipient, patterns repeat. */
export function compileGlob(pattern: string): Glob {
  let glob = cache.get(pattern);
  if (glob) return glob;
  const parts = pattern.toLowerCase().split(/\*+/);
  const hasStar = parts.length > 1;
  glob = {
    // `**` and edge stars leave empty parts, which carry no constraint.
    segments: (hasStar ? parts.filter((p) => p !== "") : parts).map(segment),
    hasStar,
    leadingStar: hasStar && parts[0] === "",
    trailingStar: hasStar && parts[parts.length - 1] === "",
  };
  cache.set(pattern, glob);
  trimOldest(cache, MAX_CACHED);
  return glob;
}

function segment(text: string): Segment {
  const units = Array.from(text, (ch): Unit => (ch === "?" ? ANY : ch));
  return { units, plain: units.includes(ANY) ? undefined : text };
}

/** Whether the glob matches the whole of `hay` (lower-cased). */
export function matchWhole(glob: Glob, hay: string): boolean {
  const segs = glob.segments;
  if (!glob.hasStar) return matchAt(segs[0]!, hay, 0) === hay.length;
  let pos = 0;
  let first = 0;
  let last = segs.length;
  let limit = hay.length;
  if (!glob.leadingStar) {
    pos = matchAt(segs[0]!, hay, 0);
    if (pos < 0) return false;
    first = 1;
  }
  if (!glob.trailingStar) {
    // A star precedes the last segment, so it is anchored at the end; every other one floats.
    last -= 1;
    limit = suffixStart(segs[last]!, hay);
    if (limit < 0) return false;
  }
  for (let k = first; k < last; k++) {
    // Leftmost placement leaves the most room for what follows, so it is the only one to try.
    const end = findFrom(segs[k]!, hay, pos);
    if (end < 0 || end > limit) return false;
    pos = end;
  }
  return pos <= limit;
}

/**
 * Whether the glob matches a substring of `hay` (lower-cased) that starts and ends at a word
 * boundary (spec: `content.body` and content rules). Word characters are `[A-Za-z0-9_]`, as the
 * spec and matrix-js-sdk have it; Synapse's regex `\w` is Unicode-aware, so a boundary next to a
 * non-ASCII letter (`"jo"` in `"joé"`) matches here and not there. As in Synapse, a pattern that
 * starts (ends) with a non-word character needs nothing before (after) it.
 */
export function matchWords(glob: Glob, hay: string): boolean {
  const segs = glob.segments;
  if (!glob.hasStar) {
    const seg = segs[0]!;
    if (seg.plain !== undefined) return containsWord(hay, seg.plain);
    for (let q = 0; q <= hay.length; q++) {
      if (insidePair(hay, q) || !startOk(hay, q)) continue;
      const end = matchAt(seg, hay, q);
      if (end >= 0 && endOk(hay, end)) return true;
    }
    return false;
  }
  let pos = 0;
  let first = 0;
  if (!glob.leadingStar) {
    // The earliest valid start ends its segment earliest, leaving the most room: try only it.
    pos = -1;
    for (let q = 0; q <= hay.length && pos < 0; q++) {
      if (!insidePair(hay, q) && startOk(hay, q)) pos = matchAt(segs[0]!, hay, q);
    }
    if (pos < 0) return false;
    first = 1;
  }
  const last = glob.trailingStar ? segs.length : segs.length - 1;
  for (let k = first; k < last; k++) {
    pos = findFrom(segs[k]!, hay, pos);
    if (pos < 0) return false;
  }
  // A trailing star runs to the end of the value, which is always a boundary.
  if (glob.trailingStar) return true;
  const tail = segs[last]!;
  for (let q = pos; q <= hay.length; q++) {
    if (insidePair(hay, q)) continue;
    const end = matchAt(tail, hay, q);
    if (end >= 0 && endOk(hay, end)) return true;
  }
  return false;
}

/** Whether `word` (lower-cased, no wildcards) occurs in `hay` at word boundaries. */
export function containsWord(hay: string, word: string): boolean {
  if (word === "") return true; // as the regex form would: an empty match at position 0
  for (let q = hay.indexOf(word); q >= 0; q = hay.indexOf(word, q + 1)) {
    if (startOk(hay, q) && endOk(hay, q + word.length)) return true;
  }
  return false;
}

/** End of `seg` matched at `pos`, or -1. */
function matchAt(seg: Segment, hay: string, pos: number): number {
  if (seg.plain !== undefined) return hay.startsWith(seg.plain, pos) ? pos + seg.plain.length : -1;
  let p = pos;
  for (const unit of seg.units) {
    if (unit === ANY) {
      if (p >= hay.length) return -1;
      p += pairAt(hay, p) ? 2 : 1;
    } else {
      if (!hay.startsWith(unit, p)) return -1;
      p += unit.length;
    }
  }
  return p;
}

/** End of the leftmost match of `seg` starting at or after `from`, or -1. */
function findFrom(seg: Segment, hay: string, from: number): number {
  if (seg.plain !== undefined) {
    const q = hay.indexOf(seg.plain, from);
    return q < 0 ? -1 : q + seg.plain.length;
  }
  for (let q = from; q <= hay.length; q++) {
    if (insidePair(hay, q)) continue;
    const end = matchAt(seg, hay, q);
    if (end >= 0) return end;
  }
  return -1;
}

/** Where `seg` must start to end exactly at the end of `hay`, or -1 if it does not. */
function suffixStart(seg: Segment, hay: string): number {
  let q = hay.length;
  for (let i = seg.units.length - 1; i >= 0 && q >= 0; i--) {
    const unit = seg.units[i]!;
    q -= unit === ANY ? (q >= 2 && pairAt(hay, q - 2) ? 2 : 1) : unit.length;
  }
  return q >= 0 && matchAt(seg, hay, q) === hay.length ? q : -1;
}

// `?` is one character: a surrogate pair is one, and no match starts between its halves.
function pairAt(hay: string, i: number): boolean {
  const c = hay.charCodeAt(i);
  const d = hay.charCodeAt(i + 1);
  return c >= 0xd800 && c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff;
}

function insidePair(hay: string, i: number): boolean {
  return i > 0 && pairAt(hay, i - 1);
}

function isWordChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || c === 0x5f;
}

// Out-of-range `charCodeAt` is NaN, which is not a word character: the ends of the value count.
function startOk(hay: string, q: number): boolean {
  return !isWordChar(hay.charCodeAt(q - 1)) || !isWordChar(hay.charCodeAt(q));
}

function endOk(hay: string, e: number): boolean {
  return !isWordChar(hay.charCodeAt(e)) || !isWordChar(hay.charCodeAt(e - 1));
}
