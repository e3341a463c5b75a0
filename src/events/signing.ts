/**
 * Signing JSON and events with ed25519.
 *
 * - "Signing Details" and "Checking for a Signature" in the spec appendices
 *   (content/appendices.md in matrix-org/matrix-spec);
 * - "Adding hashes and signatures to outgoing events" and "Validating hashes and
 *   signatures on received events" in the server-server spec.
 */
import { createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from "node:crypto";
import { Base64Error, decodeBase64, encodeBase64 } from "./base64.js";
import { canonicalJsonBytes } from "./canonical_json.js";
import { contentHash, eventIdOfCovered } from "./hashes.js";
import { redact } from "./redaction.js";
import type { RoomVersion } from "./room_versions.js";
import { isRecord, type Pdu } from "./types.js";

/** PKCS#8 DER header of an ed25519 private key; the 32-byte seed follows it. */
const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
/** SPKI DER header of an ed25519 public key; the 32 raw key bytes follow it. */
const SPKI_ED25519_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

export type Signatures = Record<string, Record<string, string>>;

/** Who signs: the server name and key ID (`ed25519:<version>`) that go into `signatures`. */
export interface Signer {
  serverName: string;
  keyId: string;
  privateKey: KeyObject;
}

/** An ed25519 private key from its 32-byte seed, given in (unpadded or padded) standard Base64. */
export function signingKeyFromSeed(seedBase64: string): KeyObject {
  const seed = decodeBase64(seedBase64);
  if (seed.length !== 32) throw new Base64Error(`an ed25519 seed is 32 bytes, got ${seed.length}`);
  return createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: "der", type: "pkcs8" });
}

/** The 32-byte seed of an ed25519 private key, as unpadded Base64 (the inverse of {@link signingKeyFromSeed}). */
export function seedFromSigningKey(privateKey: KeyObject): string {
  const der = privateKey.export({ format: "der", type: "pkcs8" });
  return encodeBase64(der.subarray(der.length - 32));
}

/** An ed25519 public key from its 32 raw bytes in Base64, as published in `verify_keys`. */
export function verifyKeyFromBase64(publicKeyBase64: string): KeyObject {
  return verifyKeyFromBytes(decodeBase64(publicKeyBase64));
}

/** An ed25519 public key from its 32 raw bytes. */
export function verifyKeyFromBytes(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new Base64Error(`an ed25519 public key is 32 bytes, got ${raw.length}`);
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw]), format: "der", type: "spki" });
}

/** The raw public key, unpadded Base64, for `/_matrix/key/v2/server`'s `verify_keys`. Accepts a private or public key. */
export function publicKeyBase64(key: KeyObject): string {
  const pub = key.type === "private" ? createPublicKey(key) : key;
  const der = pub.export({ format: "der", type: "spki" });
  return encodeBase64(der.subarray(der.length - 32));
}

/** Removes `signatures` and `unsigned`: the part of an object a signature covers. */
function signedPart(obj: object): Record<string, unknown> {
  const { signatures: _s, unsigned: _u, ...rest } = obj as Record<string, unknown>;
  return rest;
}

/**
 * A copy of `obj` with this server's signature added under `signatures[serverName][keyId]`.
 * Existing signatures and `unsigned` are kept; neither is covered by the signature.
 */
export function signJson<T extends object>(obj: T, serverName: string, keyId: string, privateKey: KeyObject): T {
  const source = obj as Record<string, unknown>;
  const signature = encodeBase64(sign(null, canonicalJsonBytes(signedPart(source)), privateKey));
  return { ...source, signatures: withSignature(source, serverName, keyId, signature) } as T;
}

/** `source`'s signatures with one more (or one replaced). */
function withSignature(source: { signatures?: unknown }, serverName: string, keyId: string, signature: string): Signatures {
  const existing = isRecord(source.signatures) ? (source.signatures as Signatures) : {};
  return { ...existing, [serverName]: { ...(existing[serverName] ?? {}), [keyId]: signature } };
}

/**
 * True when `obj.signatures[serverName][keyId]` is a valid signature by `publicKey` over
 * the canonical JSON of `obj` without `signatures` and `unsigned`. False when the
 * signature is missing, not Base64, or wrong; never throws for bad input.
 */
export function verifyJsonSignature(obj: object, serverName: string, keyId: string, publicKey: KeyObject): boolean {
  const source = obj as Record<string, unknown>;
  const byServer = isRecord(source.signatures) ? source.signatures[serverName] : undefined;
  const encoded = isRecord(byServer) ? byServer[keyId] : undefined;
  if (typeof encoded !== "string") return false;
  try {
    const signature = decodeBase64(encoded);
    if (signature.length !== 64) return false;
    return verify(null, canonicalJsonBytes(signedPart(source)), publicKey, signature);
  } catch {
    return false;
  }
}

/**
 * Hashes and signs an event: sets `hashes.sha256` to the content hash, then signs the
 * redacted event and copies the signature into the full event. Returns a new PDU.
 */
export function hashAndSignEvent(pdu: Pdu, version: RoomVersion, signer: Signer): Pdu {
  return signEvent(withContentHash(pdu), version, signer);
}

/**
 * As {@link hashAndSignEvent}, and the event's ID as well. The signature and the reference hash
 * cover the same bytes, the redacted event without `signatures` and `unsigned`, so those are
 * redacted and serialised once for both.
 */
export function hashSignAndIdentify(pdu: Pdu, version: RoomVersion, signer: Signer): { pdu: Pdu; eventId: string } {
  const { signed, covered } = signCovered(withContentHash(pdu), version, signer);
  return { pdu: signed, eventId: eventIdOfCovered(covered) };
}

/** Signs an event whose `hashes` are already set: the signature covers its redacted form. */
export function signEvent(pdu: Pdu, version: RoomVersion, signer: Signer): Pdu {
  return signCovered(pdu, version, signer).signed;
}

function withContentHash(pdu: Pdu): Pdu {
  return { ...pdu, hashes: { sha256: contentHash(pdu) } };
}

/** The event with this server's signature added, and the bytes it covers. */
function signCovered(pdu: Pdu, version: RoomVersion, signer: Signer): { signed: Pdu; covered: Buffer } {
  const covered = canonicalJsonBytes(signedPart(redact(pdu, version)));
  const signature = encodeBase64(sign(null, covered, signer.privateKey));
  return { signed: { ...pdu, signatures: withSignature(pdu, signer.serverName, signer.keyId, signature) }, covered };
}

/** Checks a server's signature on an event (over its redacted form, so it also holds for a redacted copy). */
export function verifyEventSignature(
  pdu: Pdu,
  version: RoomVersion,
  serverName: string,
  keyId: string,
  publicKey: KeyObject,
): boolean {
  return verifyJsonSignature(redact(pdu, version), serverName, keyId, publicKey);
}

/** A fresh key: a random 32-byte seed and a Synapse-style key ID `ed25519:a_XXXX`. */
export function generateSigningKey(): { keyId: string; seed: string } {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const version = Array.from(randomBytes(4), (b) => alphabet[b % alphabet.length]).join("");
  return { keyId: `ed25519:a_${version}`, seed: encodeBase64(randomBytes(32)) };
}

/**
 * Synapse's signing key file: one key per line, `<algorithm> <version> <unpadded base64 seed>`,
 * e.g. `ed25519 a_AbCd YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1`.
 */
export function formatSigningKeyFile(keys: readonly { keyId: string; seed: string }[]): string {
  return keys
    .map(({ keyId, seed }) => {
      const [alg, version] = splitKeyId(keyId);
      return `${alg} ${version} ${seed.replace(/=+$/, "")}\n`;
    })
    .join("");
}

/** Parses a Synapse signing key file. Blank lines are skipped; a malformed line throws. */
export function parseSigningKeyFile(text: string): { keyId: string; seed: string }[] {
  const keys: { keyId: string; seed: string }[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const trimmed = line.trim();
    if (trimmed === "") return;
    const parts = trimmed.split(/\s+/);
    const [alg, version, seed] = parts;
    if (parts.length !== 3 || alg !== "ed25519" || !version || !seed) {
      throw new Error(`signing key file line ${i + 1}: expected "ed25519 <version> <base64 seed>"`);
    }
    if (!/^[A-Za-z0-9_]+$/.test(version)) throw new Error(`signing key file line ${i + 1}: bad key version`);
    const bytes = decodeBase64(seed);
    if (bytes.length !== 32) throw new Error(`signing key file line ${i + 1}: the seed is not 32 bytes`);
    keys.push({ keyId: `${alg}:${version}`, seed: encodeBase64(bytes) });
  });
  return keys;
}

function splitKeyId(keyId: string): [string, string] {
  const colon = keyId.indexOf(":");
  if (colon <= 0 || colon === keyId.length - 1) throw new Error(`bad key ID: ${keyId}`);
  return [keyId.slice(0, colon), keyId.slice(colon + 1)];
}
