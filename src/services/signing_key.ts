/**
 * The server's ed25519 signing key, kept in Synapse's key-file format and
 * made at first start. The format itself lives in events/; this is the I/O.
 */
import type { KeyObject } from "node:crypto";
import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
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
  // Written whole under a name of our own, then linked into place: when several processes start
  // at once (worker_processes), exactly one link succeeds, and nobody can read a half-written file.
  const temp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  const fd = openSync(temp, "wx", 0o600);
  try {
    writeFileSync(fd, formatSigningKeyFile([generateSigningKey()]));
    // On disk before it has its real name, so a crash cannot leave an empty key behind.
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(temp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  } finally {
    unlinkSync(temp);
  }
  return fromFile(file, readFileSync(file, "utf8"));
}
