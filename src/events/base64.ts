/**
 * Unpadded Base64 and URL-safe unpadded Base64, per the Matrix specification appendix
 * "Unpadded Base64" (https://spec.matrix.org/latest/appendices/#unpadded-base64).
 *
 * Encoders never emit `=`. Decoders accept input with or without padding, as the spec
 * asks, but are otherwise strict: a character outside the alphabet, or a length that
 * cannot come from any byte string, throws a {@link Base64Error}.
 */

export class Base64Error extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Base64Error";
  }
}

const STANDARD = /^[A-Za-z0-9+/]*$/;
const URL_SAFE = /^[A-Za-z0-9_-]*$/;

/** Standard alphabet (`+`, `/`), no padding. */
export function encodeBase64(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64").replace(/=+$/, "");
}

/** URL-safe alphabet (`-`, `_`), no padding. */
export function encodeBase64Url(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64url");
}

/** Decodes standard Base64, padded or not. */
export function decodeBase64(text: string): Buffer {
  return decode(text, STANDARD, "base64");
}

/** Decodes URL-safe Base64, padded or not. */
export function decodeBase64Url(text: string): Buffer {
  return decode(text, URL_SAFE, "base64url");
}

function decode(text: string, alphabet: RegExp, encoding: "base64" | "base64url"): Buffer {
  const body = stripPadding(text);
  if (!alphabet.test(body)) {
    throw new Base64Error(`not ${encoding === "base64" ? "standard" : "URL-safe"} base64: unexpected character`);
  }
  if (body.length % 4 === 1) throw new Base64Error("not base64: impossible length");
  return Buffer.from(body, encoding);
}

function stripPadding(text: string): string {
  const m = /=*$/.exec(text);
  const pad = m ? m[0].length : 0;
  if (pad === 0) return text;
  if (pad > 2 || text.length % 4 !== 0) throw new Base64Error("not base64: bad padding");
  return text.slice(0, text.length - pad);
}
