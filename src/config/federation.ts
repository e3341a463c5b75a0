/**
 * Resolves the federation keys: CA files relative to the config, address ranges that must parse
 * as CIDR, server names in the whitelist and notaries, and the old signing keys.
 */
import { readFileSync } from "node:fs";
import { isValidServerName } from "../events/ids.js";
import { verifyKeyFromBase64 } from "../events/signing.js";
import type { FederationConfig } from "./config.js";
import type { Problems } from "./errors.js";
import { isCidr } from "./media.js";
import type { RawConfig } from "./schema.js";
import { parseDuration } from "./types.js";

const KEY_ID = /^ed25519:[A-Za-z0-9_]+$/;

function isPublicKey(base64: string): boolean {
  try {
    verifyKeyFromBase64(base64);
    return true;
  } catch {
    return false;
  }
}

export function resolveFederation(raw: RawConfig, fromBase: (p: string) => string, problems: Problems): FederationConfig {
  raw.federation_ip_range_blacklist.forEach((range, i) => {
    if (!isCidr(range)) {
      problems.add(["federation_ip_range_blacklist", i], `\`federation_ip_range_blacklist\` entry ${JSON.stringify(range)} is not an address range: expected CIDR such as 10.0.0.0/8 or fd00::/8`);
    }
  });
  raw.federation_domain_whitelist?.forEach((name, i) => {
    if (!isValidServerName(name)) problems.add(["federation_domain_whitelist", i], `\`federation_domain_whitelist\` entry ${JSON.stringify(name)} is not a server name`);
  });
  for (const [keyId, old] of Object.entries(raw.old_signing_keys)) {
    if (!KEY_ID.test(keyId)) problems.add(["old_signing_keys", keyId], `\`old_signing_keys\` key ${JSON.stringify(keyId)} is not an ed25519 key ID (ed25519:<version>)`);
    if (!isPublicKey(old.key)) problems.add(["old_signing_keys", keyId, "key"], `\`old_signing_keys.${keyId}.key\` is not an ed25519 public key`);
  }
  raw.trusted_key_servers.forEach((notary, i) => {
    for (const keyId of Object.keys(notary.verify_keys ?? {})) {
      if (!KEY_ID.test(keyId)) problems.add(["trusted_key_servers", i, "verify_keys", keyId], `\`trusted_key_servers\` key ${JSON.stringify(keyId)} is not an ed25519 key ID (ed25519:<version>)`);
      else if (!isPublicKey(notary.verify_keys![keyId]!)) problems.add(["trusted_key_servers", i, "verify_keys", keyId], `\`trusted_key_servers\` key ${keyId} is not an ed25519 public key`);
    }
    if (!isValidServerName(notary.server_name)) {
      problems.add(["trusted_key_servers", i, "server_name"], `\`trusted_key_servers\` entry ${JSON.stringify(notary.server_name)} is not a server name`);
    }
    if (notary.server_name === raw.server_name) problems.add(["trusted_key_servers", i, "server_name"], "`trusted_key_servers` cannot name this server itself");
  });
  return {
    verifyCertificates: raw.federation_verify_certificates,
    customCas: raw.federation_custom_ca_list.flatMap((path, i) => {
      // Read now, so a missing or wrong file stops the start (and `check-config`) with its line.
      const file = fromBase(path);
      let pem: string;
      try {
        pem = readFileSync(file, "utf8");
      } catch (err) {
        problems.add(["federation_custom_ca_list", i], `\`federation_custom_ca_list\`: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
        return [];
      }
      if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
        problems.add(["federation_custom_ca_list", i], `\`federation_custom_ca_list\`: ${file} holds no PEM certificate`);
        return [];
      }
      return [{ file, pem }];
    }),
    domainWhitelist: raw.federation_domain_whitelist,
    // Synapse's `federation_ip_range_blacklist` and `ip_range_blacklist` both apply to federation.
    ipRangeBlacklist: [...raw.ip_range_blacklist, ...raw.federation_ip_range_blacklist],
    ipRangeWhitelist: raw.ip_range_whitelist,
    oldSigningKeys: Object.entries(raw.old_signing_keys).map(([keyId, k]) => ({ keyId, publicKey: k.key.replace(/=+$/, ""), expiredTs: k.expired_ts })),
    keyValidityMs: parseDuration(raw.key_refresh_interval),
    trustedKeyServers: raw.trusted_key_servers.map((n) => ({ serverName: n.server_name, verifyKeys: n.verify_keys })),
  };
}
