/** The validated, resolved configuration that the rest of the server sees. */
import type { ListenerResource } from "./sections/server.js";
import type { Secret } from "./types.js";

export interface RateLimitConfig {
  per_second: number;
  burst_count: number;
}

export interface ListenerConfig {
  port: number;
  bindAddresses: string[];
  xForwarded: boolean;
  resources: Set<ListenerResource>;
}

/** SQLite's page cache when `database.args.cache_size_mib` does not say. */
export const DEFAULT_SQLITE_CACHE_MIB = 4;

export type DatabaseConfig =
  | { kind: "sqlite"; path: string; synchronous: "normal" | "full"; /** The page cache's size, in MiB. */ cacheMib: number }
  | {
      kind: "postgres";
      /** A `postgres://` URL (`args.dsn`); the keys below override its parts. */
      dsn?: Secret;
      user?: string;
      password?: Secret;
      host?: string;
      port?: number;
      database?: string;
      sslmode?: string;
      /** A PEM file of CAs to trust for TLS (libpq's `sslrootcert`). */
      sslrootcert?: string;
      /** The connection pool's bounds (Synapse's `cp_min`, `cp_max`). */
      poolMin: number;
      poolMax: number;
    };

export interface RtcTransport {
  type: string;
  [key: string]: unknown;
}

/** The bundled LiveKit authorisation service (`livekit`); absent when not configured. */
export interface LiveKitConfig {
  /** The SFU's WebSocket URL, handed to clients with each token. */
  url: string;
  apiKey: string;
  apiSecret: Secret;
  /** Server names whose users get rooms created and may delegate their leave; "*" alone means all. */
  fullAccessHomeservers: string[];
  /** Path prefix of the lk-jwt-service endpoints, without a trailing slash. */
  path: string;
  /** `public_baseurl` (without its trailing slash) + `path`: the advertised `livekit_service_url`. */
  serviceUrl: string;
  /** 0 turns the periodic "is the participant still there" check off. */
  sanityCheckIntervalMs: number;
  csApiUrlOverrides: Record<string, string>;
  /** Whether MSC4195 homeserver-flow tokens carry `canUpdateOwnMetadata`. */
  canUpdateOwnMetadata: boolean;
  /** The shortest delayed leave a client may delegate (MSC4195 lets servers refuse shorter ones). */
  delegationMinDelayMs: number;
}

export interface ThumbnailSize {
  width: number;
  height: number;
  method: "crop" | "scale";
}

/** The media repository; `enabled` false leaves every media endpoint unserved. */
export interface MediaConfig {
  enabled: boolean;
  storePath: string;
  maxUploadBytes: number;
  maxImagePixels: number;
  dynamicThumbnails: boolean;
  thumbnailSizes: ThumbnailSize[];
  maxPendingUploads: number;
  unusedExpirationMs: number;
  urlPreview: {
    enabled: boolean;
    /** CIDR ranges refused in addition to the private ones that always are. */
    ipRangeBlacklist: string[];
    ipRangeWhitelist: string[];
    /** Host names (`*.` prefix for subdomains) never previewed. */
    urlBlacklist: string[];
    maxBytes: number;
  };
}

/** Federation with other homeservers (`federation_*`, `old_signing_keys`, `trusted_key_servers`). */
export interface FederationConfig {
  verifyCertificates: boolean;
  /** Extra trusted CAs: each file's absolute path and its PEM text, read when the config loads. */
  customCas: { file: string; pem: string }[];
  /** Undefined: every server. */
  domainWhitelist?: string[];
  /** CIDR ranges refused on top of the built-in private ones (`ip_range_blacklist` + `federation_ip_range_blacklist`). */
  ipRangeBlacklist: string[];
  ipRangeWhitelist: string[];
  oldSigningKeys: { keyId: string; publicKey: string; expiredTs: number }[];
  /** `valid_until_ts` of our key response is this far ahead. */
  keyValidityMs: number;
  trustedKeyServers: { serverName: string; verifyKeys?: Record<string, string> }[];
}

export interface Config {
  /** Absolute path of the file this came from, or undefined for an in-memory config. */
  configPath?: string;
  serverName: string;
  /** Always ends with "/". */
  publicBaseUrl: string;
  listeners: ListenerConfig[];
  serveServerWellKnown: boolean;
  extraWellKnownClientContent: Record<string, unknown>;
  maxRequestBodyBytes: number;
  /** `default_room_version`: the version `createRoom` uses when the client names none. */
  defaultRoomVersion: string;
  logLevel: string;
  database: DatabaseConfig;
  /** Processes `switchboard` starts to serve this config (1 with SQLite). */
  workerProcesses: number;
  signingKeyPath: string;
  registration: {
    enabled: boolean;
    requiresToken: boolean;
    sharedSecret?: Secret;
    allowGuests: boolean;
  };
  rateLimits: {
    message: RateLimitConfig;
    loginAddress: RateLimitConfig;
    loginAccount: RateLimitConfig;
    loginFailedAttempts: RateLimitConfig;
    registration: RateLimitConfig;
    delayedEventMgmt: RateLimitConfig;
    rtcTransports: RateLimitConfig;
    mediaCreate: RateLimitConfig;
  };
  delayedEvents: { enabled: boolean; maxDelayMs: number; maxPerUser: number };
  features: { msc4143: boolean; msc4354: boolean; msc4075CallRules: boolean };
  matrixRtc: { transports: RtcTransport[]; advertiseInWellKnown: boolean };
  livekit?: LiveKitConfig;
  media: MediaConfig;
  /** Connections to destinations users choose (push gateways): CIDR ranges on top of the built-in ones. */
  outbound: { ipRangeBlacklist: string[]; ipRangeWhitelist: string[] };
  push: { enabled: boolean; includeContent: boolean };
  federation: FederationConfig;
  turn: {
    uris: string[];
    sharedSecret?: Secret;
    username?: string;
    password?: Secret;
    lifetimeMs: number;
    allowGuests: boolean;
  };
}
