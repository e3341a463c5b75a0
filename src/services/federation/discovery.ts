/**
 * Finds where another homeserver serves its federation API, by the spec's "Resolving server
 * names" (Server-Server API): an IP literal or explicit port as given; otherwise
 * `/.well-known/matrix/server` (cached as its headers say, 24 hours by default, at most 48),
 * then SRV `_matrix-fed._tcp` and the deprecated `_matrix._tcp`, then port 8448. The bundled
 * LiveKit service uses the same rules to find the servers whose OpenID tokens it checks.
 */
import type { IncomingHttpHeaders } from "node:http";
import { isIP } from "node:net";
import { isValidServerName } from "../../events/ids.js";
import type { Clock } from "../clock.js";
import type { FederationTarget, SrvRecord } from "./transport.js";

export type { FederationTarget } from "./transport.js";

/** What discovery needs from the network: SRV records, and GETs of https URLs that do not follow redirects. */
export interface DiscoveryNet {
  dialer: { resolveSrv(name: string): Promise<SrvRecord[]> };
  requestUrl(method: "GET", url: string): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>;
}

const DEFAULT_PORT = 8448;
const HOUR = 3_600_000;
/** The spec: without cache headers, 24 hours; never more than 48. */
const WELL_KNOWN_DEFAULT_MS = 24 * HOUR;
const WELL_KNOWN_MAX_MS = 48 * HOUR;
/** No usable well-known file: the spec suggests caching errors for up to an hour. */
const NO_WELL_KNOWN_MS = HOUR;
const MAX_REDIRECTS = 5;
const CACHE_LIMIT = 10_000;

/** Splits `host[:port]`; IPv6 literals keep their brackets off. */
export function splitServerName(name: string): { host: string; port?: number } {
  const m = /^(\[[^\]]+\]|[^:]+)(?::([0-9]{1,5}))?$/.exec(name);
  if (!m) return { host: name };
  const host = m[1]!.replace(/^\[|\]$/g, "");
  return m[2] === undefined ? { host } : { host, port: Number(m[2]) };
}

/** How long a well-known answer may be used, from `Cache-Control: max-age` or `Expires`. */
export function wellKnownLifetimeMs(headers: IncomingHttpHeaders, now: number): number {
  const cacheControl = String(headers["cache-control"] ?? "");
  let ms: number | undefined;
  if (/\b(no-store|no-cache)\b/i.test(cacheControl)) ms = 0;
  const maxAge = /\bmax-age\s*=\s*"?(\d+)/i.exec(cacheControl);
  if (ms === undefined && maxAge) ms = Number(maxAge[1]) * 1000;
  if (ms === undefined && typeof headers.expires === "string") {
    const at = Date.parse(headers.expires);
    if (!Number.isNaN(at)) ms = Math.max(0, at - now);
  }
  return Math.min(ms ?? WELL_KNOWN_DEFAULT_MS, WELL_KNOWN_MAX_MS);
}

function jsonObject(body: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(body);
    return v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export class ServerDiscovery {
  readonly #cache = new Map<string, { targets: FederationTarget[]; until: number }>();

  constructor(
    private readonly net: DiscoveryNet,
    private readonly clock: Clock,
  ) {}

  /** The places to try, in order. Throws only for a name that is not a server name. */
  async resolve(serverName: string): Promise<FederationTarget[]> {
    if (!isValidServerName(serverName)) throw new Error(`not a server name: ${JSON.stringify(serverName)}`);
    const cached = this.#cache.get(serverName);
    if (cached && cached.until > this.clock.now()) return cached.targets;
    const { targets, cacheMs } = await this.#discover(serverName);
    if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear();
    if (cacheMs > 0) this.#cache.set(serverName, { targets, until: this.clock.now() + cacheMs });
    return targets;
  }

  async #discover(serverName: string): Promise<{ targets: FederationTarget[]; cacheMs: number }> {
    const { host, port } = splitServerName(serverName);
    // An IP literal or an explicit port is used as given, with nothing to look up.
    if (isIP(host) || port !== undefined) {
      return { targets: [{ tlsName: host, hostHeader: serverName, connectHost: host, port: port ?? DEFAULT_PORT }], cacheMs: WELL_KNOWN_MAX_MS };
    }
    const delegated = await this.#wellKnown(host);
    if (delegated === undefined) return { targets: await this.#srvOrDefault(host), cacheMs: NO_WELL_KNOWN_MS };
    const d = splitServerName(delegated.server);
    if (isIP(d.host) || d.port !== undefined) {
      return {
        targets: [{ tlsName: d.host, hostHeader: delegated.server, connectHost: d.host, port: d.port ?? DEFAULT_PORT }],
        cacheMs: delegated.cacheMs,
      };
    }
    return { targets: await this.#srvOrDefault(d.host), cacheMs: delegated.cacheMs };
  }

  async #srvOrDefault(host: string): Promise<FederationTarget[]> {
    for (const service of ["_matrix-fed._tcp", "_matrix._tcp"]) {
      const records = (await this.net.dialer.resolveSrv(`${service}.${host}`))
        // A target of "." means "no such service here".
        .filter((r) => r.name !== "" && r.name !== ".")
        .sort((a, b) => a.priority - b.priority || b.weight - a.weight);
      if (records.length) {
        return records.map((r) => ({ tlsName: host, hostHeader: host, connectHost: r.name.replace(/\.$/, ""), port: r.port }));
      }
    }
    return [{ tlsName: host, hostHeader: host, connectHost: host, port: DEFAULT_PORT }];
  }

  /** `m.server` from the host's well-known file, or undefined when there is no usable one. */
  async #wellKnown(host: string): Promise<{ server: string; cacheMs: number } | undefined> {
    let url = `https://${host.includes(":") ? `[${host}]` : host}/.well-known/matrix/server`;
    const seen = new Set<string>();
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      if (seen.has(url)) return undefined;
      seen.add(url);
      let res;
      try {
        res = await this.net.requestUrl("GET", url);
      } catch {
        return undefined;
      }
      const location = res.headers.location;
      if (res.status >= 300 && res.status < 400 && typeof location === "string") {
        try {
          url = new URL(location, url).toString();
        } catch {
          return undefined;
        }
        // Never follow a redirect off TLS: the answer decides whom we trust.
        if (!url.startsWith("https://")) return undefined;
        continue;
      }
      if (res.status !== 200) return undefined;
      const server = jsonObject(res.body)?.["m.server"];
      if (typeof server !== "string" || !isValidServerName(server)) return undefined;
      return { server, cacheMs: wellKnownLifetimeMs(res.headers, this.clock.now()) };
    }
    return undefined;
  }
}
