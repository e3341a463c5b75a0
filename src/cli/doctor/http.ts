/**
 * The doctor's HTTP client, on node:http/https rather than fetch: it must see every copy of a
 * repeated header (two `Access-Control-Allow-Origin` lines are a fault browsers reject), trust
 * an extra CA when asked (`--ca-file`), and refuse plain http unless `--insecure-http` says so.
 * TLS is always verified. The doctor is a command an operator runs against addresses they name,
 * so it talks to loopback and private addresses as asked (no SSRF guard, unlike the server).
 */
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import https from "node:https";
import { isIP } from "node:net";
import tls from "node:tls";
import type { Dialer } from "../../services/outbound/dialer.js";

export interface HttpOptions {
  /** Extra trusted CA certificates (PEM), added to Node's own list. */
  ca?: string;
  /** Whether http:// URLs may be used at all. */
  allowHttp: boolean;
  timeoutMs: number;
  /** Where names resolve to; the system's DNS unless given (tests map made-up names to loopback). */
  dialer?: Dialer;
}

export interface HttpReply {
  status: number;
  /** Every header line, names lower-cased, in order; repeated headers stay separate. */
  headerLines: [string, string][];
  text: string;
  /** The body parsed as JSON, or undefined if it is not JSON. */
  json: unknown;
}

export class HttpFailure extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

export class PlainHttpRefused extends HttpFailure {}

export function headerValues(reply: HttpReply, name: string): string[] {
  return reply.headerLines.filter(([n]) => n === name).map(([, v]) => v);
}

/** `body.errcode`, when the reply is a Matrix error. */
export function errcodeOf(reply: HttpReply): string | undefined {
  const body = reply.json as { errcode?: unknown } | undefined;
  return body && typeof body.errcode === "string" ? body.errcode : undefined;
}

/** A short description of a reply: `404 M_UNRECOGNIZED "Unrecognized request"`. */
export function describeReply(reply: HttpReply): string {
  const body = reply.json as { errcode?: unknown; error?: unknown } | undefined;
  if (body && typeof body.errcode === "string") {
    return `${reply.status} ${body.errcode}${typeof body.error === "string" ? ` "${body.error.slice(0, 160)}"` : ""}`;
  }
  const text = reply.text.trim().replace(/\s+/g, " ");
  return text && reply.json === undefined ? `${reply.status} (not JSON: "${text.slice(0, 80)}")` : `${reply.status}`;
}

/** Names the usual network errors in words an operator acts on. */
export function describeError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e.code) {
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `the name does not resolve (${e.code})`;
    case "ECONNREFUSED":
      return "connection refused: nothing listens there";
    case "ECONNRESET":
      return "the connection was reset";
    case "ETIMEDOUT":
    case "TIMEOUT":
      return "no answer in time";
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "CERT_HAS_EXPIRED":
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return `the TLS certificate is not trusted (${e.code})`;
    default:
      return e.message ?? String(err);
  }
}

export function isTlsError(err: unknown): boolean {
  return /CERT|SELF_SIGNED|TLS/.test(String((err as NodeJS.ErrnoException).code ?? ""));
}

export class HttpClient {
  /** While set, new requests fail at once (after Ctrl-C, so the checks wind down); one in flight is answered. */
  #refusing = false;
  constructor(readonly options: HttpOptions) {}

  refuseNewRequests(refuse: boolean): void {
    this.#refusing = refuse;
  }

  /** A GET that follows up to five redirects, as browsers and the spec's well-known lookup do. */
  async get(url: string, headers: Record<string, string> = {}): Promise<HttpReply> {
    let target = url;
    for (let hops = 0; ; hops++) {
      const reply = await this.request("GET", target, { headers });
      const location = headerValues(reply, "location")[0];
      if (![301, 302, 303, 307, 308].includes(reply.status) || !location || hops === 5) return reply;
      target = new URL(location, target).toString();
    }
  }

  request(
    method: string,
    url: string,
    opts: { headers?: Record<string, string>; json?: unknown; token?: string; servername?: string } = {},
  ): Promise<HttpReply> {
    return this.#exchange(method, new URL(url), opts);
  }

  /**
   * Opens a WebSocket the way a browser does (RFC 6455 opening handshake over HTTP/1.1) and closes
   * it at once: enough to see whether every hop passes the upgrade. No WebSocket client is needed
   * (Node 20 has none without a flag), and no frame is sent.
   */
  async openWebSocket(url: string): Promise<UpgradeReply> {
    const target = new URL(url);
    target.protocol = target.protocol === "wss:" || target.protocol === "https:" ? "https:" : "http:";
    const key = randomBytes(16).toString("base64");
    const expected = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
    const headers = { connection: "Upgrade", upgrade: "websocket", "sec-websocket-key": key, "sec-websocket-version": "13" };
    const reply = await this.#exchange("GET", target, { headers });
    if (reply.status === 101) return { status: 101, acceptOk: headerValues(reply, "sec-websocket-accept")[0] === expected, description: "101" };
    return { status: reply.status, acceptOk: false, description: describeReply(reply) };
  }

  /** One request and its whole answer; a 101 (a WebSocket upgrade) is answered with its headers, and its socket closed. */
  #exchange(method: string, target: URL, opts: { headers?: Record<string, string>; json?: unknown; token?: string; servername?: string }): Promise<HttpReply> {
    if (this.#refusing) return Promise.reject(new HttpFailure("interrupted", "INTERRUPTED"));
    if (target.protocol === "http:" && !this.options.allowHttp) {
      return Promise.reject(new PlainHttpRefused(`${target.origin} is plain http, which the doctor uses only with --insecure-http`, "PLAIN_HTTP"));
    }
    const headers: Record<string, string> = { accept: "application/json", "user-agent": "switchboard-doctor", ...opts.headers };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    let body: string | undefined;
    if (opts.json !== undefined) {
      body = JSON.stringify(opts.json);
      headers["content-type"] = "application/json";
    }
    const lib = target.protocol === "https:" ? https : http;
    const headerLinesOf = (raw: string[]) => {
      const lines: [string, string][] = [];
      for (let i = 0; i + 1 < raw.length; i += 2) lines.push([raw[i]!.toLowerCase(), raw[i + 1]!]);
      return lines;
    };
    return this.#connectTo(target).then((where) => new Promise<HttpReply>((resolve, reject) => {
      const servername = opts.servername ?? (where && !isIP(target.hostname) ? target.hostname : undefined);
      const req = lib.request(
        target,
        {
          method, headers, timeout: this.options.timeoutMs,
          // A dialer's address: connect there, but keep the Host header and check the certificate against the name.
          ...(where ? { host: where.address, hostname: where.address, port: where.port, headers: { ...headers, host: target.host } } : {}),
          ...(servername ? { servername, checkServerIdentity: (_h: string, cert: tls.PeerCertificate) => tls.checkServerIdentity(servername, cert) } : {}),
          ...(target.protocol === "https:" && this.options.ca ? { ca: trustedCas(this.options.ca) } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("error", (err) => reject(new HttpFailure(describeError(err), (err as NodeJS.ErrnoException).code)));
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            let json: unknown;
            try {
              json = text ? JSON.parse(text) : undefined;
            } catch {
              json = undefined;
            }
            resolve({ status: res.statusCode ?? 0, headerLines: headerLinesOf(res.rawHeaders), text, json });
          });
        },
      );
      req.on("upgrade", (res, socket) => {
        socket.destroy();
        resolve({ status: res.statusCode ?? 101, headerLines: headerLinesOf(res.rawHeaders), text: "", json: undefined });
      });
      req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
      req.on("error", (err) => reject(new HttpFailure(describeError(err), (err as NodeJS.ErrnoException).code)));
      req.end(body);
    }));
  }

  /** The dialer's address for a name, or undefined to let Node resolve it (no dialer, or an IP literal). */
  async #connectTo(target: URL): Promise<{ address: string; port: number } | undefined> {
    const host = target.hostname.replace(/^\[|\]$/g, "");
    if (!this.options.dialer || isIP(host)) return undefined;
    const port = target.port ? Number(target.port) : target.protocol === "https:" ? 443 : 80;
    try {
      return await this.options.dialer.resolveAddress(host, port);
    } catch (err) {
      throw new HttpFailure(describeError(err), (err as NodeJS.ErrnoException).code);
    }
  }
}

/** What a WebSocket opening handshake got: 101 with the right accept key, or the plain answer. */
export interface UpgradeReply {
  status: number;
  /** For a 101: whether `Sec-WebSocket-Accept` is the one RFC 6455 derives from the key sent. */
  acceptOk: boolean;
  /** For anything else: the reply as `describeReply` puts it. */
  description: string;
}

/** The CA list for a TLS connection: Node's own roots plus the `--ca-file` ones. */
export function trustedCas(extra: string | undefined): string[] | undefined {
  return extra ? [...tls.rootCertificates, extra] : undefined;
}
