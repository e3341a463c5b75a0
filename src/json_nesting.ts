/**
 * A limit on how deeply a request's JSON may nest, checked on the text before it is parsed.
 * Much of what handles a body afterwards recurses (schema validation, canonical JSON for
 * signing, size accounting), and a body of 10,000 nested arrays would exhaust the stack there.
 * Matrix content never needs more than a handful of levels; 100 leaves room for any real use.
 */
export const MAX_JSON_NESTING = 100;

const OPEN_OBJECT = 0x7b; // {
const OPEN_ARRAY = 0x5b; // [
const CLOSE_OBJECT = 0x7d; // }
const CLOSE_ARRAY = 0x5d; // ]
const QUOTE = 0x22; // "
const BACKSLASH = 0x5c; // \

/** Whether brackets outside strings nest deeper than `max` anywhere in `text`. One pass, no recursion. */
export function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) {
      inString = true;
    } else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      if (++depth > max) return true;
    } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
      depth--;
    }
  }
  return false;
}
