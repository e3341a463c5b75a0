/**
 * Finds where another homeserver serves its federation API, by the spec's
 * "Resolving server names" (Server-Server API): an IP literal or explicit port
 * as given; otherwise `/.well-known/matrix/server`, then SRV
 * `_matrix-fed._tcp` (and the deprecated `_matrix._tcp`), then port 8448.
 */
import { isIP } from "node:net";
import { isValidServerName } from "../../events/ids.js";
import type { Clock } from "../clock.js";
import { jsonObject, type Outbound } from "./outbound.js";

export interface FederationTarget {
  /** The name the certificate must carry (and SNI). */
  tlsName: string;
  hostHeader: string;
  /** What to resolve and connect to. */
  connectHost: string;
  port: number;
}

const DEFAULT_PORT = 8448;
/** Spec: cache a well-known answer; without one, a shorter while. Either is long next to a call. */
const CACHE_MS = 10 * 60_000;
const MAX_REDIRECTS = 5;

/** Splits `host[:port]`; IPv6 literals keep their brackets off. */
export function splitServerName(name: string): { host: string; port?: number } {
  const m = /^(\[[^\]]+\]|[^:]+)(?::([0-9]{1,5}))?$/.exec(name);
  if (!m) return { host: name };
  const host = m[1]!.replace(/^\[|\]$/g, "");
  return m[2] === undefined ? { host } : { host, port: Number(m[2]) };
}

export class ServerDiscovery {
  readonly #cache = new Map<string, { targets: FederationTarget[]; until: number }>();

  constructor(
    private readonly outbound: Outbound,
    private readonly clock: Clock,
  ) {}

  /** The places to try, in order. Throws only for a name that is not a server name. */
  async resolve(serverName: string): Promise<FederationTarget[]> {
    if (!isValidServerName(serverName)) throw new Error(`not a server name: ${JSON.stringify(serverName)}`);
    const cached = this.#cache.get(serverName);
    if (cached && cached.until > this.clock.now()) return cached.targets;
    const targets = await this.#discover(serverName);
    if (this.#cache.size > 10_000) this.#cache.clear();
    this.#cache.set(serverName, { targets, until: this.clock.now() + CACHE_MS });
    return targets;
  }

  async #discover(serverName: string): Promise<FederationTarget[]> {
    const { host, port } = splitServerName(serverName);
    if (isIP(host)) return [{ tlsName: host, hostHeader: serverName, connectHost: host, port: port ?? DEFAULT_PORT }];
    if (port !== undefined) return [{ tlsName: host, hostHeader: serverName, connectHost: host, port }];

    const delegated = await this.#wellKnown(host);
    if (delegated !== undefined) {
      const d = splitServerName(delegated);
      if (isIP(d.host)) return [{ tlsName: d.host, hostHeader: delegated, connectHost: d.host, port: d.port ?? DEFAULT_PORT }];
      if (d.port !== undefined) return [{ tlsName: d.host, hostHeader: delegated, connectHost: d.host, port: d.port }];
      return this.#srvOrDefault(d.host);
    }
    return this.#srvOrDefault(host);
  }

  async #srvOrDefault(host: string): Promise<FederationTarget[]> {
    for (const service of ["_matrix-fed._tcp", "_matrix._tcp"]) {
      const records = (await this.outbound.dialer.resolveSrv(`${service}.${host}`))
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
  async #wellKnown(host: string): Promise<string | undefined> {
    let url = `https://${host}/.well-known/matrix/server`;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      let res;
      try {
        res = await this.outbound.requestUrl("GET", url);
      } catch {
        return undefined;
      }
      const location = res.headers.location;
      if (res.status >= 300 && res.status < 400 && typeof location === "string") {
        url = new URL(location, url).toString();
        // Never follow a redirect off TLS: the answer decides whom we trust.
        if (!url.startsWith("https://")) return undefined;
        continue;
      }
      if (res.status !== 200) return undefined;
      const server = jsonObject(res.body)?.["m.server"];
      return typeof server === "string" && isValidServerName(server) ? server : undefined;
    }
    return undefined;
  }
}
