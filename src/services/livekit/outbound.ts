/**
 * Outbound HTTP(S) for the LiveKit service: OpenID checks and delayed-event
 * calls to other homeservers. Where a name resolves to and which CAs are
 * trusted are injectable, so tests can reach a local TLS server under a
 * made-up name with a CA of their own; certificates are always verified.
 */
import { promises as dns } from "node:dns";
import http from "node:http";
import https from "node:https";
import { isIP } from "node:net";
import tls from "node:tls";
import type { Dialer } from "../outbound/dialer.js";

export type { Dialer, SrvRecord } from "../outbound/dialer.js";

export interface OutboundOptions {
  /** Extra trusted CA certificates (PEM), on top of the system's. */
  ca?: (string | Buffer)[];
  dialer?: Dialer;
  /** Per request; the default is 10 s. */
  timeoutMs?: number;
}

export const systemDialer: Dialer = {
  async resolveSrv(name) {
    try {
      return await dns.resolveSrv(name);
    } catch {
      return [];
    }
  },
  async resolveAddress(host, port) {
    if (isIP(host)) return { address: host, port };
    const { address } = await dns.lookup(host);
    return { address, port };
  },
};

export interface OutboundRequest {
  method: "GET" | "POST";
  scheme: "https" | "http";
  /** For https, the name the certificate must carry; also the host to resolve unless `connectHost` is set. */
  host: string;
  /** Where to connect when that differs from `host` (an SRV target). */
  connectHost?: string;
  port: number;
  path: string;
  /** The Host header; defaults to host[:port]. */
  hostHeader?: string;
  body?: string;
  headers?: Record<string, string>;
}

export interface OutboundResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** Answers are small JSON documents; anything bigger is not one of them. */
const MAX_RESPONSE_BYTES = 64 * 1024;

export class Outbound {
  readonly #dialer: Dialer;
  readonly #ca: (string | Buffer)[] | undefined;
  readonly #timeoutMs: number;

  constructor(opts: OutboundOptions = {}) {
    this.#dialer = opts.dialer ?? systemDialer;
    // Node's `ca` replaces the system roots, so keep them alongside the extra ones.
    this.#ca = opts.ca?.length ? [...tls.rootCertificates, ...opts.ca] : undefined;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
  }

  get dialer(): Dialer {
    return this.#dialer;
  }

  async request(req: OutboundRequest): Promise<OutboundResponse> {
    const bareHost = req.host.replace(/^\[|\]$/g, "");
    const { address, port } = await this.#dialer.resolveAddress((req.connectHost ?? req.host).replace(/^\[|\]$/g, ""), req.port);
    const defaultPort = req.scheme === "https" ? 443 : 80;
    const headers: Record<string, string> = {
      host: req.hostHeader ?? (req.port === defaultPort ? req.host : `${req.host}:${req.port}`),
      "user-agent": "Switchboard (LiveKit authorisation)",
      ...req.headers,
    };
    if (req.body !== undefined) {
      headers["content-type"] ??= "application/json";
      headers["content-length"] = String(Buffer.byteLength(req.body));
    }
    const options: https.RequestOptions = { method: req.method, host: address, port, path: req.path, headers, agent: false };
    if (req.scheme === "https") {
      // Verify against the name we meant to reach, whatever address it resolved to.
      if (!isIP(bareHost)) options.servername = bareHost;
      options.checkServerIdentity = (_host, cert) => tls.checkServerIdentity(bareHost, cert);
      if (this.#ca) options.ca = this.#ca;
    }
    const mod = req.scheme === "https" ? https : http;
    return new Promise<OutboundResponse>((resolve, reject) => {
      const outgoing = mod.request(options, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            res.destroy(new Error(`response from ${req.host} is larger than ${MAX_RESPONSE_BYTES} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      });
      outgoing.setTimeout(this.#timeoutMs, () => outgoing.destroy(new Error(`no answer from ${req.host} within ${this.#timeoutMs} ms`)));
      outgoing.on("error", reject);
      outgoing.end(req.body);
    });
  }

  /** A request by absolute URL (a CS API base URL, a redirect target). */
  async requestUrl(method: "GET" | "POST", url: string, body?: string): Promise<OutboundResponse> {
    const u = new URL(url);
    if (u.protocol !== "https:" && u.protocol !== "http:") throw new Error(`unsupported URL scheme in ${url}`);
    const scheme = u.protocol === "https:" ? "https" : "http";
    return this.request({
      method,
      scheme,
      host: u.hostname,
      port: u.port ? Number(u.port) : scheme === "https" ? 443 : 80,
      path: u.pathname + u.search,
      hostHeader: u.host,
      body,
    });
  }
}

/** Parses a JSON object body, or undefined when it is not one. */
export function jsonObject(body: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(body);
    return v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
