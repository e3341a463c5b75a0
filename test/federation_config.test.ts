/**
 * The federation keys of the config file, with Synapse's names and meanings: defaults, paths,
 * merged address ranges, and refusals that name the key and line.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { parseConfig } from "../src/config/load.js";
import { AddressPolicy } from "../src/services/outbound/address_policy.js";
import { refusedProblems } from "./helpers/config.js";

// A config folder with a CA file beside it: CA files are read when the config loads.
const DIR = mkdtempSync(path.join(tmpdir(), "switchboard-fedconfig-"));
const FILE = path.join(DIR, "switchboard.yaml");
const PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
mkdirSync(path.join(DIR, "ca"));
writeFileSync(path.join(DIR, "ca", "private.pem"), PEM);
writeFileSync(path.join(DIR, "ca", "not-a-cert.pem"), "hello\n");
const at = (text: string) => parseConfig(`server_name: example.org\n${text}`, FILE).config.federation;
const refused = (text: string) => refusedProblems(`server_name: example.org\n${text}`, FILE).join("\n");

describe("federation config", () => {
  test("defaults: certificates verified, no extra CAs, every server, matrix.org as notary, keys valid a day", () => {
    const f = at("");
    assert.equal(f.verifyCertificates, true);
    assert.deepEqual(f.customCas, []);
    assert.equal(f.domainWhitelist, undefined);
    assert.deepEqual(f.ipRangeBlacklist, []);
    assert.deepEqual(f.oldSigningKeys, []);
    assert.equal(f.keyValidityMs, 86_400_000);
    assert.deepEqual(f.trustedKeyServers, [{ serverName: "matrix.org", verifyKeys: undefined }]);
  });

  test("Synapse's keys resolve: CA paths beside the config, both blacklists merged, old keys and notaries", () => {
    const f = at(
      [
        "federation_verify_certificates: false",
        "federation_custom_ca_list: [ca/private.pem]",
        "federation_domain_whitelist: [matrix.org, example.com]",
        "federation_ip_range_blacklist: [100.100.0.0/16]",
        "ip_range_blacklist: [8.8.8.0/24]",
        "ip_range_whitelist: [10.1.0.0/16]",
        "old_signing_keys:",
        '  "ed25519:id": { key: "VGhpcyBpcyBub3QgYSByZWFsIGtleSBidXQgMzIgYnk", expired_ts: 123456789000 }',
        "key_refresh_interval: 2h",
        "trusted_key_servers:",
        "  - server_name: notary.example",
        '    verify_keys: { "ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw" }',
        "",
      ].join("\n"),
    );
    assert.equal(f.verifyCertificates, false);
    assert.deepEqual(f.customCas, [{ file: path.join(DIR, "ca", "private.pem"), pem: PEM }]);
    assert.deepEqual(f.domainWhitelist, ["matrix.org", "example.com"]);
    assert.deepEqual(f.ipRangeBlacklist, ["8.8.8.0/24", "100.100.0.0/16"]);
    assert.deepEqual(f.ipRangeWhitelist, ["10.1.0.0/16"]);
    assert.deepEqual(f.oldSigningKeys, [{ keyId: "ed25519:id", publicKey: "VGhpcyBpcyBub3QgYSByZWFsIGtleSBidXQgMzIgYnk", expiredTs: 123456789000 }]);
    assert.equal(f.keyValidityMs, 7_200_000);
    assert.deepEqual(f.trustedKeyServers, [{ serverName: "notary.example", verifyKeys: { "ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw" } }]);
  });

  test("the resulting policy: private ranges always refused, configured ranges added, the whitelist re-allows", () => {
    const f = at("federation_ip_range_blacklist: [100.100.0.0/16]\nip_range_whitelist: [10.1.0.0/16]\n");
    const policy = new AddressPolicy({ deny: f.ipRangeBlacklist, allow: f.ipRangeWhitelist });
    for (const blocked of ["127.0.0.1", "10.0.0.1", "192.168.0.1", "172.16.0.1", "169.254.169.254", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "100.100.1.1"]) {
      assert.equal(policy.check(blocked).allowed, false, blocked);
    }
    assert.equal(policy.check("10.1.2.3").allowed, true);
    assert.equal(policy.check("1.1.1.1").allowed, true);
  });

  test("bad values are refused, naming the key", () => {
    assert.match(refused("federation_ip_range_blacklist: [not-a-range]\n"), /federation_ip_range_blacklist.*not an address range/);
    assert.match(refused("federation_domain_whitelist: [\"not a name\"]\n"), /federation_domain_whitelist.*not a server name/);
    assert.match(refused("trusted_key_servers: [{server_name: example.org}]\n"), /trusted_key_servers.*this server itself/);
    assert.match(refused("trusted_key_servers: [{server_name: \"bad name\"}]\n"), /trusted_key_servers.*not a server name/);
    assert.match(refused('old_signing_keys: { "ed25519:x": { key: "short", expired_ts: 1 } }\n'), /old_signing_keys/);
    assert.match(refused('old_signing_keys: { "rsa:x": { key: "VGhpcyBpcyBub3QgYSByZWFsIGtleSBidXQgMzIgYnk", expired_ts: 1 } }\n'), /old_signing_keys/);
    assert.match(refused("federation_verify_certificates: maybe\n"), /federation_verify_certificates/);
    assert.match(refused("trusted_key_servers: [{server_name: a.example, verify_keys: {x: y}}]\n"), /trusted_key_servers/);
  });

  test("a CA file that is missing or holds no certificate is refused when the config loads, with its line", () => {
    assert.match(refused("federation_custom_ca_list:\n  - ca/private.pem\n  - ca/missing.pem\n"), /line 4: `federation_custom_ca_list`: cannot read .*missing\.pem: ENOENT/);
    assert.match(refused("federation_custom_ca_list: [ca/not-a-cert.pem]\n"), /line 2: `federation_custom_ca_list`: .*not-a-cert\.pem holds no PEM certificate/);
  });

  test("listeners accept the `keys` resource", () => {
    const config = parseConfig("server_name: example.org\nlisteners: [{port: 8448, resources: [{names: [keys]}]}]\n", FILE).config;
    assert.ok(config.listeners[0]!.resources.has("keys"));
  });
});
