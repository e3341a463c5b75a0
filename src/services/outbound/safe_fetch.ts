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
import tls from "node:tls";
import { trimOldest } from "../bounded_map.js";
import type { AddressPolicy } from "./address_policy.js";
import { abortable, Cancel, follow } from "./cancel.js";
import { SafeFetchError } from "./fetch_error.js";
import { readBody } from "./response_body.js";

export { SafeFetchError, type SafeFetchErrorKind } from "./fetch_error.js";

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
  /**
   * Remember each host name's vetted addresses this long (ms), instead of asking the resolver
   * for every request: for callers that fetch from the same few hosts many times a second (push
   * gateways), where `getaddrinfo` per request costs more than the request. What is remembered
   * was vetted, and connections are pinned to it, so this never reaches an address the policy
   * refuses; a changed DNS answer is seen once the entry expires. Failures are not remembered.
   * Off (0) by default.
   */
  resolutionCacheMs?: number;
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

/** A request without callbacks, as another thread can be given it (fetch_thread.ts). */
export type PlainFetchRequest = Omit<SafeFetchRequest, "allowHost" | "inspect">;

/** What a caller that needs no callbacks fetches with: a SafeFetcher here, or one on a thread of its own (FetchThread). */
export interface Fetcher {
  fetch(req: PlainFetchRequest): Promise<FetchResult>;
  /** Ends its connections (at shutdown). */
  close(): void;
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
/** Host names whose vetted addresses are remembered, at most (see `resolutionCacheMs`). */
const CACHED_RESOLUTIONS = 1024;
/** An idle pooled connection is closed after this. */
const IDLE_SOCKET_MS = 30_000;
/** Headers that carry the caller's credentials, not to be handed to another origin. */
const CREDENTIALS = ["authorization", "cookie", "proxy-authorization"];

export class SafeFetcher implements Fetcher {
  readonly policy: AddressPolicy;
  readonly #resolve: Resolver;
  readonly #ca: (string | Buffer)[] | undefined;
  readonly #userAgent: string;
  readonly #timeoutMs: number;
  readonly #keepAlive: boolean;
  /** Connection pools by destination (scheme, TLS name, port and the vetted addresses), least recently used first. */
  readonly #pools = new Map<string, http.Agent>();
  readonly #resolutionCacheMs: number;
  /** Vetted resolutions by host name, oldest first (see `resolutionCacheMs`). */
  readonly #resolved = new Map<string, { target: Target; until: number }>();

  constructor(opts: SafeFetcherOptions) {
    this.policy = opts.policy;
    this.#resolve = opts.resolve ?? systemResolver;
    // Node's `ca` replaces the system roots, so keep them alongside the extra ones.
    this.#ca = opts.ca?.length ? [...tls.rootCertificates, ...opts.ca] : undefined;
    this.#userAgent = opts.userAgent ?? "Switchboard";
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#keepAlive = opts.keepAlive ?? false;
    this.#resolutionCacheMs = opts.resolutionCacheMs ?? 0;
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
    // Made for every request: the usual single address without an array and JSON. A host name
    // has no "|", and the JSON form starts with "[", so the two forms cannot collide.
    const key =
      target.addresses.length === 1
        ? `${secure ? "s" : "p"}|${target.name ?? ""}|${port}|${target.addresses[0]!.address}`
        : JSON.stringify([secure, target.name ?? null, port, target.addresses.map((a) => a.address).sort()]);
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
    const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
    if (req.allowHost && !req.allowHost(host)) throw new SafeFetchError("blocked_host", `${host} may not be fetched`, { host });
    if (isIP(host)) {
      const verdict = this.policy.check(host);
      if (!verdict.allowed) throw new SafeFetchError("blocked_address", "The IP address is blocked", { host });
      return { name: undefined, addresses: [{ address: verdict.connectTo, family: verdict.family }] };
    }
    const cached = this.#resolved.get(host);
    if (cached && cached.until > performance.now()) return cached.target;
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
    const target = { name: host, addresses };
    if (this.#resolutionCacheMs > 0) {
      this.#resolved.delete(host);
      this.#resolved.set(host, { target, until: performance.now() + this.#resolutionCacheMs });
      trimOldest(this.#resolved, CACHED_RESOLUTIONS);
    }
    return target;
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
