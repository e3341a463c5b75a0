/**
 * The server's ed25519 signing key, kept in Synapse's key-file format and
 * made at first start. The format itself lives in events/; this is the I/O.
 */
import type { KeyObject } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { formatSigningKeyFile, generateSigningKey, parseSigningKeyFile, publicKeyBase64, signingKeyFromSeed } from "../events/index.js";

export interface SigningKey {
  keyId: string;
  privateKey: KeyObject;
  /** Unpadded standard base64 of the public key, as served in key queries. */
  publicKeyBase64: string;
}

function fromFile(file: string, text: string): SigningKey {
  let keys;
  try {
    keys = parseSigningKeyFile(text);
  } catch (err) {
    throw new Error(`${file} is not a signing key file: ${(err as Error).message}`, { cause: err });
  }
  const first = keys[0];
  if (!first) throw new Error(`${file} holds no signing key`);
  const privateKey = signingKeyFromSeed(first.seed);
  return { keyId: first.keyId, privateKey, publicKeyBase64: publicKeyBase64(privateKey) };
}

export function loadOrCreateSigningKey(file: string): SigningKey {
  try {
    return fromFile(file, readFileSync(file, "utf8"));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  mkdirSync(path.dirname(file), { recursive: true });
  try {
    // "wx": when two processes start at once, one writes and the other reads what it wrote.
    writeFileSync(file, formatSigningKeyFile([generateSigningKey()]), { mode: 0o600, flag: "wx" });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  return fromFile(file, readFileSync(file, "utf8"));
}
