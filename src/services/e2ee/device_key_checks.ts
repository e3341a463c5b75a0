/**
 * What another server says about its users' keys is checked before a client sees it: a device
 * keys object must be the device it is listed as, of the user it is listed under, and signed by
 * that device's own ed25519 key (spec: "Downloading keys": clients must check this too; a
 * server that lets forgeries through only makes them look vouched for). Cross-signing keys must
 * name their user and usage, and the self-signing key must be signed by the master key. Pure
 * functions: each returns why an object is not valid, or undefined.
 */
import { isRecord } from "../../events/types.js";
import { verifyJsonSignature, verifyKeyFromBase64 } from "../../events/signing.js";

function validKey(publicKey: unknown): publicKey is string {
  if (typeof publicKey !== "string") return false;
  try {
    verifyKeyFromBase64(publicKey);
    return true;
  } catch {
    return false;
  }
}

/** A device keys object (spec: DeviceKeys) for `deviceId` of `userId`, self-signed. */
export function deviceKeysProblem(obj: unknown, userId: string, deviceId: string): string | undefined {
  if (!isRecord(obj)) return "not an object";
  if (obj.user_id !== userId) return "user_id is not the user it is listed under";
  if (obj.device_id !== deviceId) return "device_id is not the device it is listed as";
  if (!Array.isArray(obj.algorithms) || !obj.algorithms.every((a) => typeof a === "string")) return "algorithms is not a list of strings";
  if (!isRecord(obj.keys) || !Object.values(obj.keys).every((k) => typeof k === "string")) return "keys is not an object of strings";
  const keyId = `ed25519:${deviceId}`;
  const publicKey = obj.keys[keyId];
  if (!validKey(publicKey)) return `no valid ${keyId} key`;
  if (!verifyJsonSignature(obj, userId, keyId, verifyKeyFromBase64(publicKey))) return "not signed by the device's own key";
  return undefined;
}

/** The public key of a cross-signing key object, if it has exactly one well-formed one. */
export function crossSigningPublicKey(obj: Record<string, unknown>): string | undefined {
  const entries = isRecord(obj.keys) ? Object.entries(obj.keys) : [];
  if (entries.length !== 1) return undefined;
  const [keyId, publicKey] = entries[0]!;
  return validKey(publicKey) && keyId === `ed25519:${publicKey}` ? publicKey : undefined;
}

/**
 * A cross-signing key (spec: CrossSigningKey) of `userId` with `usage`; when `masterKey` (a
 * public key) is given, it must carry the master key's signature.
 */
export function crossSigningKeyProblem(obj: unknown, userId: string, usage: "master" | "self_signing", masterKey?: string): string | undefined {
  if (!isRecord(obj)) return "not an object";
  if (obj.user_id !== userId) return "user_id is not the user it is listed under";
  if (!Array.isArray(obj.usage) || !obj.usage.includes(usage)) return `usage does not include ${usage}`;
  if (crossSigningPublicKey(obj) === undefined) return "keys does not hold exactly one ed25519 key";
  if (masterKey !== undefined && !verifyJsonSignature(obj, userId, `ed25519:${masterKey}`, verifyKeyFromBase64(masterKey))) {
    return "not signed by the master key";
  }
  return undefined;
}
