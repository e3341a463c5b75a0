/**
 * Requests to other homeservers: found by server discovery, sent over verified TLS to vetted
 * addresses (`FederationTransport`), and signed with this server's key (`X-Matrix`). Callers get
 * the status and the JSON answer; what a status means is theirs to decide.
 */
import type { Logger } from "pino";
import type { Signer } from "../../events/signing.js";
import type { ServerDiscovery } from "./discovery.js";
import { TransportError, type FederationTransport } from "./transport.js";
import { authorizationHeader } from "./x_matrix.js";

export type FederationErrorKind =
  /** `federation_domain_whitelist` excludes the destination, or it is this server. */
  | "forbidden_destination"
  /** No place discovery found could be reached (refused addresses included). */
  | "unreachable"
  /** An answer that is not a JSON object. */
  | "bad_response";

export class FederationError extends Error {
  constructor(
    readonly kind: FederationErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "FederationError";
  }
}

export interface FederationRequest {
  method: "GET" | "POST" | "PUT";
  /** The path, each parameter already percent-encoded. */
  path: string;
  query?: Record<string, string>;
  body?: Record<string, unknown>;
  /** Key queries need no signature; everything else is signed. Default true. */
  signed?: boolean;
  maxBytes?: number;
  /** Per attempt, instead of the transport's default (a client's `timeout`, say); caps the deadline too. */
  timeoutMs?: number;
}

export interface FederationAnswer {
  status: number;
  json: Record<string, unknown>;
}

export interface FederationClientDeps {
  serverName: string;
  signer: () => Signer;
  discovery: ServerDiscovery;
  transport: FederationTransport;
  /** `federation_domain_whitelist`. */
  isAllowed: (serverName: string) => boolean;
  logger: Pick<Logger, "info" | "warn">;
}

export class FederationClient {
  constructor(private readonly deps: FederationClientDeps) {}

  async request(destination: string, req: FederationRequest): Promise<FederationAnswer> {
    if (destination === this.deps.serverName) throw new FederationError("forbidden_destination", "a server does not send federation requests to itself");
    if (!this.deps.isAllowed(destination)) throw new FederationError("forbidden_destination", `${destination} is not in federation_domain_whitelist`);
    let targets;
    try {
      targets = await this.deps.discovery.resolve(destination);
    } catch (err) {
      throw new FederationError("unreachable", `${destination} is not a server name`, { cause: err });
    }
    const query = req.query && Object.keys(req.query).length ? `?${new URLSearchParams(req.query).toString()}` : "";
    const uri = req.path + query;
    const body = req.body === undefined ? undefined : JSON.stringify(req.body);
    const headers: Record<string, string> = { accept: "application/json" };
    if (req.signed !== false) headers.authorization = authorizationHeader(this.deps.signer(), req.method, uri, destination, req.body);
    let lastError: unknown;
    for (const target of targets) {
      let res;
      try {
        res = await this.deps.transport.request({ method: req.method, target, path: uri, headers, body, maxBytes: req.maxBytes, timeoutMs: req.timeoutMs });
      } catch (err) {
        // Unreachable, refused or untrusted: try the next place discovery gave.
        lastError = err;
        continue;
      }
      let json: unknown;
      try {
        json = JSON.parse(res.body);
      } catch {
        json = undefined;
      }
      if (!json || typeof json !== "object" || Array.isArray(json)) {
        throw new FederationError("bad_response", `${destination} answered ${req.method} ${req.path} with ${res.status} and no JSON object`);
      }
      return { status: res.status, json: json as Record<string, unknown> };
    }
    const why = lastError instanceof TransportError ? `${lastError.kind}: ${lastError.message}` : String(lastError);
    this.deps.logger.info({ destination, path: req.path, targets: targets.map((t) => `${t.connectHost}:${t.port}`), err: why }, "could not reach a homeserver");
    throw new FederationError("unreachable", `could not reach ${destination} (${why})`, { cause: lastError });
  }
}
