/**
 * The server's ed25519 signing key, in Synapse's key-file format
 * (`ed25519 <key_id> <unpadded base64 seed>`), made at first start.
 */
import { createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface SigningKey {
  keyId: string;
  privateKey: KeyObject;
  /** Unpadded standard base64 of the public key, as served in key queries. */
  publicKeyBase64: string;
}

const unpadded = (b64: string) => b64.replace(/=+$/, "");

function fromSeed(seed: Buffer): KeyObject {
  // PKCS#8 wrapping of a raw ed25519 seed (RFC 8410).
  const prefix = Buffer.from("302e020100300506032b657004220420", "hex");
  return createPrivateKey({ key: Buffer.concat([prefix, seed]), format: "der", type: "pkcs8" });
}

function describe(keyId: string, privateKey: KeyObject): SigningKey {
  const jwk = privateKey.export({ format: "jwk" });
  return { keyId, privateKey, publicKeyBase64: unpadded(Buffer.from(jwk.x!, "base64url").toString("base64")) };
}

export function loadOrCreateSigningKey(file: string): SigningKey {
  if (existsSync(file)) {
    const line = readFileSync(file, "utf8").split("\n").find((l) => l.trim() !== "");
    const [alg, version, seed] = line?.trim().split(/\s+/) ?? [];
    if (alg !== "ed25519" || !version || !seed) {
      throw new Error(`${file} is not a signing key file: expected a line "ed25519 <key_id> <base64 seed>"`);
    }
    const raw = Buffer.from(seed, "base64");
    if (raw.length !== 32) throw new Error(`${file}: the ed25519 seed must be 32 bytes`);
    return describe(`ed25519:${version}`, fromSeed(raw));
  }
  const { privateKey } = generateKeyPairSync("ed25519");
  const seed = Buffer.from(privateKey.export({ format: "jwk" }).d!, "base64url");
  const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const version = "a_" + [...randomBytes(4)].map((b) => chars[b % chars.length]).join("");
  mkdirSync(path.dirname(file), { recursive: true });
  try {
    // "wx": when two processes start at once, one writes and the other reads what it wrote.
    writeFileSync(file, `ed25519 ${version} ${unpadded(seed.toString("base64"))}\n`, { mode: 0o600, flag: "wx" });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return loadOrCreateSigningKey(file);
    throw err;
  }
  return describe(`ed25519:${version}`, privateKey);
}
