/**
 * HTTP(S) requests to destinations someone else chose: a URL a user asks to preview, an address
 * a remote server names. Such a request must not become a way into the server's own network
 * (SSRF), so every hop of it is vetted by an `AddressPolicy`:
 *
 * - a host name is resolved once, and refused if ANY of its addresses is refused (an attacker
 *   controls which one the system would pick);
 * - the connection goes to the addresses just vetted, through a `lookup` that returns them,
 *   so a second DNS answer (DNS rebinding) cannot send it elsewhere; TLS still names and
 *   verifies the real host;
 * - redirects are followed by hand, each target vetted the same way;
 * - responses are read up to a byte limit and refused beyond it, all within one deadline;
 * - with `keepAlive`, connections are reused, but only by requests whose vetting came to the
 *   same addresses: the pool is keyed by them, so a name that now resolves elsewhere (DNS
 *   rebinding) gets a connection of its own to the newly vetted address, never an old one.
 *
 * Nothing here knows Matrix: failures are `SafeFetchError`s with a kind for callers to map.
 */
import { promises as dns, type LookupAddress } from "node:dns";
import http, { type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import https from "node:https";
import type { LookupFunction } from "node:net";
import { isIP } from "node:net";
import { finished, pipeline, type Readable } from "node:stream";
import tls from "node:tls";
import zlib from "node:zlib";
import type { AddressPolicy } from "./address_policy.js";

export type SafeFetchErrorKind =
  /** The URL does not parse, or is not http(s). */
  | "invalid_url"
  /** `allowHost` refused the host name. */
  | "blocked_host"
  /** The URL names an IP address the policy refuses. */
  | "blocked_address"
  /** The host name resolves to at least one address the policy refuses. */
  | "blocked_resolution"
  /** The host name does not resolve. */
  | "dns"
  /** Connecting, TLS, or the connection failing mid-response. */
  | "network"
  /** A response this client cannot read (an unknown or corrupt content encoding). */
  | "bad_response"
  | "timeout"
  | "too_large"
  | "too_many_redirects";

export class SafeFetchError extends Error {
  constructor(
    readonly kind: SafeFetchErrorKind,
    message: string,
    /** For logs. `headersReceived` tells a slow server (no answer) from a slow body. */
    readonly detail: { host?: string; headersReceived?: boolean } = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "SafeFetchError";
  }
}

/** How host names become addresses; the default asks the system (`getaddrinfo`). */
export type Resolver = (hostname: string) => Promise<{ address: string; family: number }[]>;

export const systemResolver: Resolver = (hostname) => dns.lookup(hostname, { all: true });

export interface SafeFetcherOptions {
  policy: AddressPolicy;
  resolve?: Resolver;
  /** Extra trusted CA certificates (PEM), on top of the system's. */
  ca?: (string | Buffer)[];
  userAgent?: string;
  /** Default deadline for a whole fetch, redirects and body included: 10 s. */
  timeoutMs?: number;
  /**
   * Reuse connections (per vetted destination; see above). For callers that talk to the same
   * few servers again and again, such as push gateways. Off by default: a connection per request.
   */
  keepAlive?: boolean;
}

export interface SafeFetchRequest {
  url: string | URL;
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** The most body bytes (after decompression) accepted; more is a `too_large` failure. */
  maxBytes: number;
  timeoutMs?: number;
  /** Redirects followed before giving up; 0 returns the redirect itself. Default 5. */
  maxRedirects?: number;
  /** A check on every hop's host name (e.g. a host blacklist), before it is resolved. */
  allowHost?: (hostname: string) => boolean;
  /** Sees the final response's status and headers before its body is read; throw to refuse it. */
  inspect?: (head: FetchHead) => void;
  signal?: AbortSignal;
}

export interface FetchHead {
  /** The URL that answered, after redirects. */
  url: URL;
  status: number;
  headers: IncomingHttpHeaders;
}

export interface FetchResult extends FetchHead {
  body: Buffer;
}

interface Target {
  /** The host name to name in TLS and to pin the lookup of; undefined for an IP literal. */
  name: string | undefined;
  addresses: LookupAddress[];
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** Destinations with a connection pool; the least recently used pool is closed beyond this. */
const MAX_POOLS = 256;
/** Connections per destination; more requests at once wait for one to be free. */
const SOCKETS_PER_POOL = 64;
/** An idle pooled connection is closed after this. */
const IDLE_SOCKET_MS = 30_000;
/** Headers that carry the caller's credentials, not to be handed to another origin. */
const CREDENTIALS = ["authorization", "cookie", "proxy-authorization"];

export class SafeFetcher {
  readonly policy: AddressPolicy;
  readonly #resolve: Resolver;
  readonly #ca: (string | Buffer)[] | undefined;
  readonly #userAgent: string;
  readonly #timeoutMs: number;
  readonly #keepAlive: boolean;
  /** Connection pools by destination (scheme, TLS name, port and the vetted addresses), least recently used first. */
  readonly #pools = new Map<string, http.Agent>();

  constructor(opts: SafeFetcherOptions) {
    this.policy = opts.policy;
    this.#resolve = opts.resolve ?? systemResolver;
    // Node's `ca` replaces the system roots, so keep them alongside the extra ones.
    this.#ca = opts.ca?.length ? [...tls.rootCertificates, ...opts.ca] : undefined;
    this.#userAgent = opts.userAgent ?? "Switchboard";
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#keepAlive = opts.keepAlive ?? false;
  }

  /** Closes every pooled connection (at shutdown). */
  close(): void {
    for (const agent of this.#pools.values()) agent.destroy();
    this.#pools.clear();
  }

  /**
   * The pool for one vetted destination. A connection in it was opened to one of exactly these
   * addresses, through the pinned lookup, so reusing it goes nowhere the vetting did not allow.
   */
  #pool(secure: boolean, target: Target, port: number): http.Agent {
    const addresses = target.addresses.map((a) => a.address).sort();
    const key = JSON.stringify([secure, target.name ?? null, port, addresses]);
    let agent = this.#pools.get(key);
    if (agent) {
      this.#pools.delete(key);
    } else {
      const opts = { keepAlive: true, maxSockets: SOCKETS_PER_POOL, timeout: IDLE_SOCKET_MS, scheduling: "lifo" as const };
      agent = secure ? new https.Agent(opts) : new http.Agent(opts);
      if (this.#pools.size >= MAX_POOLS) {
        // One at a time, not trimOldest's tenth: destroying a pool ends its requests in flight.
        const [oldKey, oldest] = this.#pools.entries().next().value!;
        this.#pools.delete(oldKey);
        oldest.destroy();
      }
    }
    this.#pools.set(key, agent);
    return agent;
  }

  async fetch(req: SafeFetchRequest): Promise<FetchResult> {
    const cancel = new Cancel();
    // Made only when needed: an error captures a stack, and most fetches never time out.
    let timedOut: SafeFetchError | undefined;
    const timer = setTimeout(() => {
      timedOut = new SafeFetchError("timeout", "The remote server took too long to answer");
      cancel.abort(timedOut);
    }, req.timeoutMs ?? this.#timeoutMs);
    const unfollow = req.signal ? follow(req.signal, cancel) : undefined;
    const state = { headersReceived: false, host: undefined as string | undefined };
    try {
      return await this.#run(req, cancel, state);
    } catch (err) {
      if (timedOut !== undefined && cancel.reason === timedOut) {
        throw new SafeFetchError("timeout", timedOut.message, { host: state.host, headersReceived: state.headersReceived });
      }
      if (cancel.aborted) throw cancel.reason;
      throw err;
    } finally {
      clearTimeout(timer);
      cancel.watch(undefined);
      unfollow?.();
    }
  }

  async #run(req: SafeFetchRequest, signal: Cancel, state: { headersReceived: boolean; host: string | undefined }): Promise<FetchResult> {
    let url = parseHttpUrl(req.url, "The URL");
    let method = (req.method ?? "GET").toUpperCase();
    let body = req.body;
    const headers: Record<string, string> = { "user-agent": this.#userAgent, "accept-encoding": "gzip, deflate, br" };
    for (const [k, v] of Object.entries(req.headers ?? {})) headers[k.toLowerCase()] = v;
    const maxRedirects = req.maxRedirects ?? 5;
    for (let hop = 0; ; hop++) {
      state.host = url.hostname;
      const target = await this.#vet(url, req, signal);
      const res = await this.#send(url, target, method, headers, body, signal);
      const location = res.headers.location;
      if (REDIRECTS.has(res.statusCode ?? 0) && location !== undefined && maxRedirects > 0) {
        res.destroy();
        if (hop >= maxRedirects) throw new SafeFetchError("too_many_redirects", `More than ${maxRedirects} redirects`, { host: url.hostname });
        const next = parseHttpUrl(resolveLocation(location, url), "A redirect");
        // As browsers do: 303 always, and 301/302 after a POST, become a GET without a body.
        if (res.statusCode === 303 || (method === "POST" && (res.statusCode === 301 || res.statusCode === 302))) {
          if (method !== "HEAD") method = "GET";
          body = undefined;
          delete headers["content-type"];
        }
        if (next.origin !== url.origin) for (const h of CREDENTIALS) delete headers[h];
        url = next;
        continue;
      }
      state.headersReceived = true;
      const head: FetchHead = { url, status: res.statusCode ?? 0, headers: res.headers };
      try {
        req.inspect?.(head);
      } catch (err) {
        res.destroy();
        throw err;
      }
      return { ...head, body: await readBody(res, req.maxBytes, url.hostname) };
    }
  }

  /** Where `url` may be fetched from: its addresses, each allowed by the policy. */
  async #vet(url: URL, req: SafeFetchRequest, signal: Cancel): Promise<Target> {
    const host = url.hostname.replace(/^\[|\]$/g, "");
    if (req.allowHost && !req.allowHost(host)) throw new SafeFetchError("blocked_host", `${host} may not be fetched`, { host });
    if (isIP(host)) {
      const verdict = this.policy.check(host);
      if (!verdict.allowed) throw new SafeFetchError("blocked_address", "The IP address is blocked", { host });
      return { name: undefined, addresses: [{ address: verdict.connectTo, family: verdict.family }] };
    }
    let found: { address: string; family: number }[];
    try {
      found = await abortable(this.#resolve(host), signal);
    } catch (err) {
      if (signal.aborted) throw err;
      throw new SafeFetchError("dns", `${host} does not resolve`, { host }, { cause: err });
    }
    if (found.length === 0) throw new SafeFetchError("dns", `${host} does not resolve`, { host });
    const addresses: LookupAddress[] = [];
    for (const { address } of found) {
      const verdict = this.policy.check(address);
      if (!verdict.allowed) throw new SafeFetchError("blocked_resolution", `${host} resolves to a blocked address`, { host });
      if (!addresses.some((a) => a.address === verdict.connectTo)) addresses.push({ address: verdict.connectTo, family: verdict.family });
    }
    return { name: host, addresses };
  }

  #send(url: URL, target: Target, method: string, headers: Record<string, string>, body: string | Buffer | undefined, signal: Cancel) {
    const secure = url.protocol === "https:";
    const outgoing: Record<string, string> = { host: url.host, ...headers };
    if (body !== undefined) outgoing["content-length"] = String(Buffer.byteLength(body));
    const port = url.port === "" ? (secure ? 443 : 80) : Number(url.port);
    const options: https.RequestOptions = {
      method,
      host: target.name ?? target.addresses[0]!.address,
      port,
      path: `${url.pathname}${url.search}`,
      headers: outgoing,
      // Never the global pool, whose connections may have been opened by code that vetted
      // nothing: a connection of its own, or one from this fetcher's pool for these addresses.
      agent: this.#keepAlive ? this.#pool(secure, target, port) : false,
    };
    if (target.name !== undefined) options.lookup = pinnedLookup(target.addresses);
    if (secure) {
      if (target.name !== undefined) options.servername = target.name;
      if (this.#ca) options.ca = this.#ca;
    }
    return new Promise<IncomingMessage>((resolve, reject) => {
      const request = (secure ? https : http).request(options, (res) => {
        // Errors after this point reach the reader; one with no listener would crash the process.
        res.on("error", () => undefined);
        resolve(res);
      });
      request.on("error", (err) => reject(signal.aborted ? err : new SafeFetchError("network", `Could not reach ${url.hostname}`, { host: url.hostname }, { cause: err })));
      // Cancelled: the request goes, and with it its response, if it is being read.
      signal.watch(() => request.destroy(signal.reason as Error));
      request.end(body);
    });
  }
}

/** A `lookup` for `http.request` that answers with addresses vetted beforehand, never asking DNS. */
function pinnedLookup(addresses: LookupAddress[]): LookupFunction {
  return ((_hostname: string, opts: { all?: boolean; family?: number | string }, callback: (...args: unknown[]) => void) => {
    const family = opts.family === "IPv4" ? 4 : opts.family === "IPv6" ? 6 : Number(opts.family ?? 0);
    const usable = family === 4 || family === 6 ? addresses.filter((a) => a.family === family) : addresses;
    if (usable.length === 0) {
      callback(Object.assign(new Error("no vetted address of the requested family"), { code: "ENOTFOUND" }));
    } else if (opts.all) {
      callback(null, usable);
    } else {
      callback(null, usable[0]!.address, usable[0]!.family);
    }
  }) as LookupFunction;
}

function parseHttpUrl(raw: string | URL, what: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new SafeFetchError("invalid_url", `${what} is not a valid URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new SafeFetchError("invalid_url", `${what} is not an http or https URL`);
  return url;
}

function resolveLocation(location: string, base: URL): string {
  try {
    return new URL(location, base).href;
  } catch {
    throw new SafeFetchError("invalid_url", "A redirect is not a valid URL", { host: base.hostname });
  }
}

/**
 * How one fetch is called off (its deadline, or the caller's signal): whatever it waits on at
 * that moment fails. Not an AbortController: making one, and the listeners `http.request` adds
 * to its signal, cost more than the rest of a small request (push gateways get thousands a second).
 */
class Cancel {
  aborted = false;
  reason: unknown;
  #onAbort: (() => void) | undefined;

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const onAbort = this.#onAbort;
    this.#onAbort = undefined;
    onAbort?.();
  }

  /** `onAbort` runs on abort (at once if that has happened), instead of any earlier one. */
  watch(onAbort: (() => void) | undefined): void {
    if (this.aborted) onAbort?.();
    else this.#onAbort = onAbort;
  }
}

/** Settles as `promise` does, or rejects when `signal` aborts first (DNS cannot be cancelled). */
function abortable<T>(promise: Promise<T>, signal: Cancel): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    signal.watch(() => reject(signal.reason as Error));
    promise.then(resolve, reject).finally(() => signal.watch(undefined));
  });
}

/** The body, decompressed, refused once it passes `maxBytes`. */
async function readBody(res: IncomingMessage, maxBytes: number, host: string): Promise<Buffer> {
  const tooLarge = () => new SafeFetchError("too_large", `The response is larger than ${maxBytes} bytes`, { host, headersReceived: true });
  const encoding = (res.headers["content-encoding"] ?? "identity").trim().toLowerCase();
  const declared = Number(res.headers["content-length"]);
  if ((encoding === "identity" || encoding === "") && declared > maxBytes) {
    res.destroy();
    throw tooLarge();
  }
  let stream: Readable = res;
  if (encoding !== "identity" && encoding !== "") {
    const decoder = decompressor(encoding);
    if (!decoder) {
      res.destroy();
      throw new SafeFetchError("bad_response", `Unsupported content encoding ${encoding}`, { host, headersReceived: true });
    }
    stream = pipeline(res, decoder, () => undefined);
  }
  try {
    return await collect(stream, maxBytes, tooLarge);
  } catch (err) {
    res.destroy();
    if (err instanceof SafeFetchError) throw err;
    const kind = (err as { code?: string }).code?.startsWith("Z_") ? "bad_response" : "network";
    throw new SafeFetchError(kind, `Reading the response from ${host} failed`, { host, headersReceived: true }, { cause: err });
  }
}

/**
 * A stream's bytes, failing past `maxBytes`. With `data` and `end` listeners rather than
 * `for await`: the async iterator's set-up and teardown cost more than a push gateway's whole
 * answer takes to read. `finished` reports a stream closed before its end (a cancelled fetch
 * destroys the request, and with it the response) as an error.
 */
function collect(stream: Readable, maxBytes: number, tooLarge: () => Error): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      reject(err);
    };
    stream.on("data", (chunk: Buffer) => {
      if (settled) return;
      size += chunk.length;
      if (size > maxBytes) {
        fail(tooLarge());
        stream.destroy();
        return;
      }
      chunks.push(chunk);
    });
    finished(stream, (err) => {
      if (err) return fail(err);
      if (settled) return;
      settled = true;
      resolve(Buffer.concat(chunks, size));
    });
  });
}

/**
 * Cancels that follow each caller's signal. Push delivery passes one signal to every fetch it
 * makes, thousands at once; an `abort` listener each would make every add and remove walk all
 * the others (an EventTarget keeps its listeners in a list), so each signal gets one listener,
 * added the first time, and a set of the fetches it calls off.
 */
const followers = new WeakMap<AbortSignal, Set<Cancel>>();

/** Has `cancel` abort when `signal` does (at once if it has); returns how to stop following. */
function follow(signal: AbortSignal, cancel: Cancel): () => void {
  if (signal.aborted) {
    cancel.abort(signal.reason);
    return () => undefined;
  }
  let set = followers.get(signal);
  if (!set) {
    const fetches = (set = new Set<Cancel>());
    followers.set(signal, fetches);
    signal.addEventListener(
      "abort",
      () => {
        for (const c of fetches) c.abort(signal.reason);
        fetches.clear();
      },
      { once: true },
    );
  }
  set.add(cancel);
  const following = set;
  return () => following.delete(cancel);
}

function decompressor(encoding: string): zlib.Gunzip | zlib.Inflate | zlib.BrotliDecompress | undefined {
  if (encoding === "gzip" || encoding === "x-gzip") return zlib.createGunzip();
  if (encoding === "deflate") return zlib.createInflate();
  if (encoding === "br") return zlib.createBrotliDecompress();
  return undefined;
}
