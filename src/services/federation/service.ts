/**
 * Federation, assembled: discovery, the connection policy, the signed client, this server's and
 * other servers' keys, and the check on incoming requests. The Server-Server areas built on it
 * (queries, the MSC4195 relay) take what they need from here.
 */
import type { Logger } from "pino";
import type { Config } from "../../config/config.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Clock } from "../clock.js";
import { AddressPolicy } from "../outbound/address_policy.js";
import type { SigningKey } from "../signing_key.js";
import { FederationClient } from "./client.js";
import { ServerDiscovery } from "./discovery.js";
import { KeyRing } from "./key_ring.js";
import { DirectoryQueries } from "./directory.js";
import { PduChecker } from "./pdu_checks.js";
import { InboundEdus, type LocalEduSinks } from "./inbound_edus.js";
import { ProfileQueries } from "./profiles.js";
import { RequestAuthenticator } from "./request_auth.js";
import { OutgoingEdus } from "./sender/outgoing_edus.js";
import { FederationSender } from "./sender/sender.js";
import { TransactionReceiver } from "./transactions.js";
import { FederationTransport, type Dialer } from "./transport.js";

export interface FederationDeps {
  config: Config;
  storage: Storage;
  clock: Clock;
  signingKey: () => SigningKey;
  logger: Pick<Logger, "info" | "warn">;
  /** Name resolution; tests map made-up server names to local servers. */
  dialer?: Dialer;
  /** Where received EDUs land (typing, syncs to wake); without it they are ignored. */
  local?: LocalEduSinks;
}

export class FederationService {
  readonly serverName: string;
  readonly policy: AddressPolicy;
  readonly discovery: ServerDiscovery;
  readonly client: FederationClient;
  readonly keys: KeyRing;
  /** The checks on every PDU another server sends (format, signatures, hashes). */
  readonly pduChecker: PduChecker;
  readonly auth: RequestAuthenticator;
  readonly profiles: ProfileQueries;
  /** Room aliases: ours for other servers, and theirs for our clients. */
  readonly directory: DirectoryQueries;
  /** Outgoing transactions: the durable per-destination queue and its delivery. */
  readonly sender: FederationSender;
  /** EDUs from local activity (typing, receipts, to-device, device lists), queued on `sender`. */
  readonly outgoingEdus: OutgoingEdus;
  /** Incoming transactions. */
  readonly transactions: TransactionReceiver;
  readonly #whitelist: Set<string> | undefined;

  constructor(deps: FederationDeps) {
    const { config, clock, logger } = deps;
    const settings = config.federation;
    this.serverName = config.serverName;
    this.#whitelist = settings.domainWhitelist && new Set(settings.domainWhitelist);
    this.policy = new AddressPolicy({ deny: settings.ipRangeBlacklist, allow: settings.ipRangeWhitelist });
    const ca = settings.customCas.map((c) => c.pem);
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
    this.pduChecker = new PduChecker(this.keys, logger);
    this.sender = new FederationSender({ serverName: config.serverName, storage: deps.storage, clock, client: this.client, isAllowed, logger });
    this.outgoingEdus = new OutgoingEdus(config.serverName, deps.storage, clock, this.sender, logger);
    // Any authenticated request from a server shows it is up: what waits for it goes now.
    this.auth = new RequestAuthenticator(config.serverName, this.keys, isAllowed, clock, (origin) => this.sender.serverIsUp(origin));
    this.profiles = new ProfileQueries(config.serverName, deps.storage.accounts, this.client);
    this.directory = new DirectoryQueries(config.serverName, deps.storage.rooms, this.client);
    const edus = new InboundEdus(config.serverName, deps.storage, clock, deps.local, logger);
    this.transactions = new TransactionReceiver(deps.storage, clock, edus, logger);
  }

  /** `federation_domain_whitelist`: unset allows every server. */
  isAllowed(serverName: string): boolean {
    return this.#whitelist === undefined || this.#whitelist.has(serverName);
  }
}
