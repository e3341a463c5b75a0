import { Type } from "../../json_schema.js";
import { duration } from "../types.js";

const base64Key = Type.String({ pattern: "^[A-Za-z0-9+/]{43}=?$", allowed: "an ed25519 public key in unpadded base64 (43 characters)" });
const keyId = "^ed25519:[A-Za-z0-9_]+$";

const trustedKeyServer = Type.Object(
  {
    server_name: Type.String({ minLength: 1, description: "The notary's server name." }),
    verify_keys: Type.Optional(
      Type.Record(Type.String({ pattern: keyId }), base64Key, {
        description: "The notary's own keys (`ed25519:<version>` → base64). Without them the notary's keys are fetched from it directly.",
      }),
    ),
  },
  { additionalProperties: false, description: "A notary server." },
);

export const federationFields = {
  federation_verify_certificates: Type.Boolean({
    default: true,
    description:
      "Check the TLS certificates of other homeservers against the trusted CAs and their server names. Turn off only for tests: without it anyone on the path can impersonate any server.",
  }),
  federation_custom_ca_list: Type.Array(Type.String({ minLength: 1 }), {
    default: [],
    description:
      "PEM files (relative to the config file) of CAs trusted for federation, in addition to the system's (for a private federation or tests). " +
      "They are read when the config loads: a missing file, or one with no certificate, stops the start.",
  }),
  federation_domain_whitelist: Type.Optional(
    Type.Array(Type.String({ minLength: 1 }), {
      description:
        "When set, the only server names this server federates with: requests from other servers get 403 `M_FORBIDDEN` and none are sent to them. Unset: every server.",
      docDefault: "unset (every server)",
    }),
  ),
  federation_ip_range_blacklist: Type.Array(Type.String({ minLength: 1 }), {
    default: [],
    description:
      "Address ranges (CIDR) never connected to for federation, on top of `ip_range_blacklist` and the private, loopback, link-local and reserved ranges that are always refused (SSRF protection); `ip_range_whitelist` re-allows addresses (e.g. loopback for tests).",
  }),
  old_signing_keys: Type.Record(
    Type.String({ pattern: keyId }),
    Type.Object(
      {
        key: base64Key,
        expired_ts: Type.Integer({ minimum: 0, description: "When the key stopped being used, in milliseconds since the epoch." }),
      },
      { additionalProperties: false },
    ),
    {
      default: {},
      description:
        "Signing keys this server used before, published as `old_verify_keys` so that what they signed can still be verified: key ID → `{key: <public key, base64>, expired_ts: <ms>}`.",
    },
  ),
  key_refresh_interval: duration({
    default: "1d",
    description: "How long other servers may cache this server's signing key (`valid_until_ts` of `/_matrix/key/v2/server`).",
  }),
  trusted_key_servers: Type.Array(trustedKeyServer, {
    default: [{ server_name: "matrix.org" }],
    description:
      "Notaries asked for other servers' signing keys (`/_matrix/key/v2/query`) before asking the servers themselves. An empty list fetches every key directly.",
  }),
};
