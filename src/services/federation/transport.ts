/**
 * The connections federation makes: to a place server discovery chose, over TLS that names and
 * verifies the server (not whatever address it resolved to), and only to addresses the
 * `AddressPolicy` allows. A remote server decides where its name points, so this is SSRF
 * territory: names are resolved here once, every address is vetted, and the connection goes to
 * the vetted address itself, so a second DNS answer cannot send it elsewhere.
 */
import { promises as dns } from "node:dns";
import type { IncomingHttpHeaders } from "node:http";
import https from "node:https";
import { isIP } from "node:net";
import tls from "node:tls";
import type { AddressPolicy } from "../outbound/address_policy.js";
import type { Dialer } from "../outbound/dialer.js";

export type { Dialer, SrvRecord } from "../outbound/dialer.js";

/** Where to send a request for a server, as discovery found it. */
export interface FederationTarget {
  /** The name the certificate must carry (and the SNI). */
  tlsName: string;
  hostHeader: string;
  /** What to resolve and connect to. */
  connectHost: string;
  port: number;
}

export type TransportErrorKind = "blocked_address" | "dns" | "network" | "timeout" | "too_large";

export class TransportError extends Error {
  constructor(
    readonly kind: TransportErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "TransportError";
  }
}

export interface TransportResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface TransportRequest {
  method: string;
  target: FederationTarget;
  /** Path and query, already encoded. */
  path: string;
  headers?: Record<string, string>;
  body?: string;
  /** The most response bytes accepted; default 1 MiB. */
  maxBytes?: number;
  /**
   * Instead of the transport's default inactivity timeout. It caps the overall deadline too: a
   * caller that must have its answer within a time (a client's `timeout`) gets it or a failure.
   */
  timeoutMs?: number;
}

export interface FederationTransportOptions {
  policy: AddressPolicy;
  dialer?: Dialer;
  /** Extra trusted CA certificates (PEM), on top of the system's. */
  ca?: (string | Buffer)[];
  verifyCertificates: boolean;
  /** Without a byte either way, per request; default 30 s. */
  timeoutMs?: number;
  /** From the start of a request to the last byte of its answer; default `DEFAULT_DEADLINE_MS`. */
  deadlineMs?: number;
}

const DEFAULT_MAX_BYTES = 1024 * 1024;
/**
 * The whole of a request: connecting, TLS, sending, and reading the answer. The inactivity
 * timeout alone lets a peer that sends a byte every 29 seconds hold a request (and the
 * destination's delivery job) for ever; 60 s is what Synapse allows a federation request.
 */
const DEFAULT_DEADLINE_MS = 60_000;
/**
 * Answers allowed to be large (a big room's `send_join` or `/state`, up to 256 MiB) get time to
 * arrive on top of the deadline, as if at this rate: slow enough for any working link, so only a
 * peer that trickles is cut off.
 */
const SLOWEST_BYTES_PER_S = 256 * 1024;

/** The system's DNS. Every address a name has must be allowed: the remote side chooses which one we would use. */
export function systemDialer(policy: AddressPolicy): Dialer {
  return {
    async resolveSrv(name) {
      try {
        return await dns.resolveSrv(name);
      } catch {
        return [];
      }
    },
    async resolveAddress(host, port) {
      if (isIP(host)) return { address: host, port };
      const found = await dns.lookup(host, { all: true });
      if (found.some((a) => !policy.check(a.address).allowed)) throw new TransportError("blocked_address", `${host} resolves to a blocked address`);
      return { address: found[0]!.address, port };
    },
  };
}

export class FederationTransport {
  readonly dialer: Dialer;
  readonly #policy: AddressPolicy;
  /**
   * Built once: given `ca` instead, Node builds a secure context per connection, parsing every
   * root certificate each time (about 15 ms of CPU per outgoing request, bench/federation.ts).
   */
  readonly #secureContext: tls.SecureContext | undefined;
  readonly #verify: boolean;
  readonly #timeoutMs: number;
  readonly #deadlineMs: number;

  constructor(opts: FederationTransportOptions) {
    this.#policy = opts.policy;
    this.dialer = opts.dialer ?? systemDialer(opts.policy);
    // Node's `ca` replaces the system roots, so keep them alongside the extra ones.
    this.#secureContext = opts.ca?.length ? tls.createSecureContext({ ca: [...tls.rootCertificates, ...opts.ca] }) : undefined;
    this.#verify = opts.verifyCertificates;
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#deadlineMs = opts.deadlineMs ?? DEFAULT_DEADLINE_MS;
  }

  async request(req: TransportRequest): Promise<TransportResponse> {
    const { target } = req;
    const tlsName = target.tlsName.replace(/^\[|\]$/g, "");
    const connectHost = target.connectHost.replace(/^\[|\]$/g, "");
    let resolved;
    try {
      // An IP literal is where to go already; only names are looked up.
      resolved = isIP(connectHost) ? { address: connectHost, port: target.port } : await this.dialer.resolveAddress(connectHost, target.port);
    } catch (err) {
      if (err instanceof TransportError) throw err;
      throw new TransportError("dns", `${target.connectHost} does not resolve`, { cause: err });
    }
    const verdict = this.#policy.check(resolved.address);
    if (!verdict.allowed) throw new TransportError("blocked_address", `${target.connectHost} is at a blocked address (${verdict.reason})`);
    const headers: Record<string, string> = { host: target.hostHeader, "user-agent": "Switchboard", ...req.headers };
    if (req.body !== undefined) {
      headers["content-type"] ??= "application/json";
      headers["content-length"] = String(Buffer.byteLength(req.body));
    }
    const options: https.RequestOptions = {
      method: req.method,
      host: verdict.connectTo,
      family: verdict.family,
      port: resolved.port,
      path: req.path,
      headers,
      // A connection of its own, to the address just vetted.
      agent: false,
      rejectUnauthorized: this.#verify,
      // Verify against the name we meant to reach, whatever address it resolved to.
      checkServerIdentity: (_host, cert) => (this.#verify ? tls.checkServerIdentity(tlsName, cert) : undefined),
    };
    if (!isIP(tlsName)) options.servername = tlsName;
    if (this.#secureContext) (options as tls.ConnectionOptions).secureContext = this.#secureContext;
    const maxBytes = req.maxBytes ?? DEFAULT_MAX_BYTES;
    const timeoutMs = req.timeoutMs ?? this.#timeoutMs;
    const sizeAllowance = maxBytes > DEFAULT_MAX_BYTES ? ((maxBytes - DEFAULT_MAX_BYTES) / SLOWEST_BYTES_PER_S) * 1000 : 0;
    const deadlineMs = Math.min(this.#deadlineMs + sizeAllowance, req.timeoutMs ?? Infinity);
    let deadline: NodeJS.Timeout | undefined;
    return new Promise<TransportResponse>((settle, fail) => {
      const resolve = (res: TransportResponse) => {
        clearTimeout(deadline);
        settle(res);
      };
      const reject = (err: unknown) => {
        clearTimeout(deadline);
        fail(err);
      };
      const outgoing = https.request(options, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBytes) {
            res.destroy(new TransportError("too_large", `the answer from ${target.tlsName} is larger than ${maxBytes} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", (err) => reject(err instanceof TransportError ? err : new TransportError("network", `reading from ${target.tlsName} failed`, { cause: err })));
      });
      // Rejected here, not left to the destroyed request: once the answer has begun, its error
      // would be the response's "aborted", not the timeout.
      const giveUp = (err: TransportError) => {
        reject(err);
        outgoing.destroy(err);
      };
      outgoing.setTimeout(timeoutMs, () => giveUp(new TransportError("timeout", `no answer from ${target.tlsName} within ${timeoutMs} ms`)));
      deadline = setTimeout(() => giveUp(new TransportError("timeout", `${target.tlsName} did not answer in full within ${deadlineMs} ms`)), deadlineMs);
      outgoing.on("error", (err) => reject(err instanceof TransportError ? err : new TransportError("network", `could not reach ${target.tlsName}`, { cause: err })));
      outgoing.end(req.body);
    });
  }

  /** A GET by https URL (a `.well-known` file): the URL's host is both the TLS name and where to connect. */
  async requestUrl(method: "GET", url: string): Promise<TransportResponse> {
    const u = new URL(url);
    if (u.protocol !== "https:") throw new TransportError("network", `federation speaks only https, not ${u.protocol}`);
    const host = u.hostname;
    return this.request({
      method,
      target: { tlsName: host, hostHeader: u.host, connectHost: host, port: u.port ? Number(u.port) : 443 },
      path: u.pathname + u.search,
      maxBytes: 64 * 1024,
    });
  }
}
