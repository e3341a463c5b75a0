/**
 * A server's key response (`GET /_matrix/key/v2/server`, and each entry a notary returns): what
 * makes one valid, and the keys it gives. Pure functions.
 */
import type { KeyObject } from "node:crypto";
import { verifyJsonSignature, verifyKeyFromBase64 } from "../../events/signing.js";
import { isRecord } from "../../events/types.js";
import type { StoredServerKey } from "../../storage/federation.js";

/** Room versions 5 and later: a key is never trusted for more than 7 days past its fetch. */
export const MAX_KEY_VALIDITY_MS = 7 * 24 * 3_600_000;

/** The part of a response the origin signed: its own signatures only. */
export function originPart(json: Record<string, unknown>, serverName: string): Record<string, unknown> {
  const signatures = isRecord(json.signatures) ? json.signatures : {};
  return { ...json, signatures: { [serverName]: signatures[serverName] } };
}

function publicKey(base64: unknown): KeyObject | undefined {
  if (typeof base64 !== "string") return undefined;
  try {
    return verifyKeyFromBase64(base64);
  } catch {
    return undefined;
  }
}

/**
 * The keys of `serverName`'s response, or a reason it is not a valid one: it must name the
 * server, carry `valid_until_ts`, and be signed by at least one of its `verify_keys`, every such
 * signature valid. Keys are stored valid until the lesser of `valid_until_ts` and 7 days ahead.
 */
export function keysFromResponse(json: unknown, serverName: string, now: number): StoredServerKey[] | string {
  if (!isRecord(json)) return "not a JSON object";
  if (json.server_name !== serverName) return `it is for ${JSON.stringify(json.server_name)}, not ${serverName}`;
  if (typeof json.valid_until_ts !== "number" || !Number.isSafeInteger(json.valid_until_ts)) return "no valid_until_ts";
  if (!isRecord(json.verify_keys)) return "no verify_keys";
  const own = isRecord(json.signatures) && isRecord(json.signatures[serverName]) ? json.signatures[serverName] : {};
  let signedBy = 0;
  const verifyKeys = new Map<string, string>();
  for (const [keyId, entry] of Object.entries(json.verify_keys)) {
    const key = isRecord(entry) ? publicKey(entry.key) : undefined;
    if (!key || !keyId.startsWith("ed25519:")) continue;
    verifyKeys.set(keyId, (entry as { key: string }).key);
    if (own[keyId] === undefined) continue;
    if (!verifyJsonSignature(json, serverName, keyId, key)) return `the signature by ${keyId} is not valid`;
    signedBy++;
  }
  if (signedBy === 0) return "it is not signed by any of its verify_keys";
  const responseJson = JSON.stringify(originPart(json, serverName));
  const validUntilTs = Math.min(json.valid_until_ts, now + MAX_KEY_VALIDITY_MS);
  const keys: StoredServerKey[] = [...verifyKeys].map(([keyId, verifyKey]) => ({
    serverName,
    keyId,
    verifyKey: verifyKey.replace(/=+$/, ""),
    validUntilTs,
    expiredTs: null,
    fetchedTs: now,
    responseJson,
  }));
  if (isRecord(json.old_verify_keys)) {
    for (const [keyId, entry] of Object.entries(json.old_verify_keys)) {
      if (!isRecord(entry) || !publicKey(entry.key) || typeof entry.expired_ts !== "number" || verifyKeys.has(keyId)) continue;
      keys.push({ serverName, keyId, verifyKey: (entry.key as string).replace(/=+$/, ""), validUntilTs, expiredTs: entry.expired_ts, fetchedTs: now, responseJson });
    }
  }
  return keys;
}

/** Until when a stored key may verify signatures: an old key only for what it signed before it expired. */
export function usableUntil(key: Pick<StoredServerKey, "validUntilTs" | "expiredTs">): number {
  return key.expiredTs ?? key.validUntilTs;
}
