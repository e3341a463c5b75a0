/**
 * Federation, assembled: discovery, the connection policy, the signed client, this server's and
 * other servers' keys, and the check on incoming requests. The Server-Server areas built on it
 * (queries, the MSC4195 relay) take what they need from here.
 */
import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import type { Config } from "../../config/config.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Clock } from "../clock.js";
import { AddressPolicy } from "../outbound/address_policy.js";
import type { SigningKey } from "../signing_key.js";
import { FederationClient } from "./client.js";
import { ServerDiscovery } from "./discovery.js";
import { KeyRing } from "./key_ring.js";
import { ProfileQueries } from "./profiles.js";
import { RequestAuthenticator } from "./request_auth.js";
import { FederationTransport, type Dialer } from "./transport.js";

export interface FederationDeps {
  config: Config;
  storage: Storage;
  clock: Clock;
  signingKey: () => SigningKey;
  logger: Pick<Logger, "info" | "warn">;
  /** Name resolution; tests map made-up server names to local servers. */
  dialer?: Dialer;
}

export class FederationService {
  readonly serverName: string;
  readonly policy: AddressPolicy;
  readonly discovery: ServerDiscovery;
  readonly client: FederationClient;
  readonly keys: KeyRing;
  readonly auth: RequestAuthenticator;
  readonly profiles: ProfileQueries;
  readonly #whitelist: Set<string> | undefined;

  constructor(deps: FederationDeps) {
    const { config, clock, logger } = deps;
    const settings = config.federation;
    this.serverName = config.serverName;
    this.#whitelist = settings.domainWhitelist && new Set(settings.domainWhitelist);
    this.policy = new AddressPolicy({ deny: settings.ipRangeBlacklist, allow: settings.ipRangeWhitelist });
    const ca = settings.customCaFiles.map((file) => {
      try {
        return readFileSync(file, "utf8");
      } catch (err) {
        throw new Error(`federation_custom_ca_list: cannot read ${file}: ${(err as Error).message}`, { cause: err });
      }
    });
    if (!settings.verifyCertificates) logger.warn({}, "federation_verify_certificates is off: any server on the path can impersonate any other");
    const transport = new FederationTransport({ policy: this.policy, dialer: deps.dialer, ca, verifyCertificates: settings.verifyCertificates });
    this.discovery = new ServerDiscovery(transport, clock);
    const signer = () => {
      const key = deps.signingKey();
      return { serverName: config.serverName, keyId: key.keyId, privateKey: key.privateKey, publicKeyBase64: key.publicKeyBase64 };
    };
    const isAllowed = (name: string) => this.isAllowed(name);
    this.client = new FederationClient({ serverName: config.serverName, signer, discovery: this.discovery, transport, isAllowed, logger });
    this.keys = new KeyRing({ serverName: config.serverName, signer, settings, store: deps.storage.serverKeys, client: this.client, clock, logger });
    this.auth = new RequestAuthenticator(config.serverName, this.keys, isAllowed, clock);
    this.profiles = new ProfileQueries(config.serverName, deps.storage.accounts, this.client);
  }

  /** `federation_domain_whitelist`: unset allows every server. */
  isAllowed(serverName: string): boolean {
    return this.#whitelist === undefined || this.#whitelist.has(serverName);
  }
}
