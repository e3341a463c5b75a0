/**
 * Which IP addresses the server may open connections to when a user or a remote server chooses
 * the destination (URL previews, later federation). Everything not globally reachable is refused
 * whatever the configuration says: loopback, private and link-local networks, shared (CGNAT)
 * space, multicast, and the ranges reserved for documentation, benchmarking or future use
 * (IANA's special-purpose registries). IPv6 forms that carry an IPv4 address (mapped, SIIT,
 * NAT64, 6to4) are judged by that address too, or `::ffff:127.0.0.1` would reach loopback.
 *
 * An operator's blacklist adds ranges; the whitelist re-allows addresses any blacklist covers,
 * built-in ones included (a preview proxy on a private network, a test site on loopback).
 */
import { BlockList, isIP, isIPv6 } from "node:net";
import { trimOldest } from "../bounded_map.js";

/** Ranges no configuration needs to repeat. */
export const ALWAYS_BLOCKED: readonly string[] = [
  "0.0.0.0/8", // "this network": 0.0.0.0 reaches the local host on Linux
  "10.0.0.0/8",
  "100.64.0.0/10", // shared address space (carrier-grade NAT)
  "127.0.0.0/8",
  "169.254.0.0/16", // link-local, and cloud metadata services (169.254.169.254)
  "172.16.0.0/12",
  "192.0.0.0/24", // IETF protocol assignments
  "192.0.2.0/24", // documentation (TEST-NET-1)
  "192.88.99.0/24", // 6to4 relay anycast, deprecated
  "192.168.0.0/16",
  "198.18.0.0/15", // benchmarking
  "198.51.100.0/24", // documentation (TEST-NET-2)
  "203.0.113.0/24", // documentation (TEST-NET-3)
  "224.0.0.0/4", // multicast
  "240.0.0.0/4", // reserved, and the broadcast address 255.255.255.255
  "::/96", // unspecified (::), loopback (::1), and the deprecated IPv4-compatible form
  "64:ff9b:1::/48", // NAT64 for local use
  "100::/64", // discard-only
  "2001::/32", // Teredo: tunnels to an IPv4 address hidden (obfuscated) in the address
  "2001:2::/48", // benchmarking
  "2001:10::/28", // ORCHID
  "2001:20::/28", // ORCHIDv2
  "2001:db8::/32", // documentation
  "3fff::/20", // documentation
  "5f00::/16", // segment routing identifiers, never globally routed
  "fc00::/7", // unique local
  "fe80::/10", // link-local
  "fec0::/10", // site-local, deprecated
  "ff00::/8", // multicast
];

export interface AddressPolicyOptions {
  /** Extra ranges (CIDR or single addresses) to refuse. */
  deny?: readonly string[];
  /** Ranges allowed even though a blacklist, built-in or configured, covers them. */
  allow?: readonly string[];
}

export type Verdict =
  | { allowed: true; /** Where to connect: an IPv4-mapped address becomes plain IPv4. */ connectTo: string; family: 4 | 6 }
  | { allowed: false; reason: string };

/** Addresses whose verdicts are remembered. */
const CACHED_VERDICTS = 4096;

export class AddressPolicy {
  readonly #builtin = new BlockList();
  readonly #deny = new BlockList();
  readonly #allow = new BlockList();
  /** Verdicts by address: the ranges never change, and a push gateway is checked on every push. */
  readonly #verdicts = new Map<string, Verdict>();

  /** Throws on a range that does not parse; config validation has already caught those. */
  constructor(opts: AddressPolicyOptions = {}) {
    for (const range of ALWAYS_BLOCKED) addRange(this.#builtin, range);
    for (const range of opts.deny ?? []) addRange(this.#deny, range);
    for (const range of opts.allow ?? []) addRange(this.#allow, range);
  }

  /** Whether the server may connect to `address` (an IP address, as DNS or a URL gives it). */
  check(address: string): Verdict {
    let verdict = this.#verdicts.get(address);
    if (verdict) return verdict;
    verdict = this.#judge(address);
    this.#verdicts.set(address, verdict);
    trimOldest(this.#verdicts, CACHED_VERDICTS);
    return verdict;
  }

  #judge(address: string): Verdict {
    const bare = address.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
    const family = isIP(bare);
    if (family === 0) return { allowed: false, reason: "not an IP address" };
    // Every form the address can be judged by: itself and any IPv4 address it carries.
    const forms: { address: string; type: "ipv4" | "ipv6" }[] = [{ address: bare, type: family === 4 ? "ipv4" : "ipv6" }];
    const embedded = family === 6 ? embeddedIpv4(bare) : undefined;
    if (embedded) forms.push({ address: embedded.address, type: "ipv4" });
    // The whitelist speaks of where connections go: a mapped address goes to its IPv4 address,
    // a translated one (NAT64, 6to4) to a gateway, so only the mapped form counts there.
    const whitelisted = this.#allow.check(bare, forms[0]!.type) || (embedded?.mapped === true && this.#allow.check(embedded.address, "ipv4"));
    if (!whitelisted) {
      if (forms.some((f) => this.#builtin.check(f.address, f.type))) return { allowed: false, reason: "reserved or private range" };
      if (forms.some((f) => this.#deny.check(f.address, f.type))) return { allowed: false, reason: "configured blacklist" };
    }
    // A mapped address is an IPv4 connection in disguise: make it one, so that it works on
    // hosts without IPv6 and is what it looks like in logs.
    if (embedded?.mapped) return { allowed: true, connectTo: embedded.address, family: 4 };
    return { allowed: true, connectTo: bare, family: family === 4 ? 4 : 6 };
  }
}

function addRange(list: BlockList, range: string): void {
  const [address = "", prefix] = range.split("/");
  const type = isIP(address) === 4 ? "ipv4" : "ipv6";
  if (prefix === undefined) list.addAddress(address, type);
  else list.addSubnet(address, Number(prefix), type);
}

/**
 * The IPv4 address inside an IPv6 one, where a well-known translation puts one: `mapped` when
 * the host's own stack turns it into an IPv4 connection (`::ffff:0:0/96`).
 */
export function embeddedIpv4(address: string): { address: string; mapped: boolean } | undefined {
  const b = ipv6Bytes(address);
  if (!b) return undefined;
  const v4 = (at: number) => `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
  const zeros = (from: number, to: number) => b.slice(from, to).every((x) => x === 0);
  // ::ffff:a.b.c.d (mapped)
  if (zeros(0, 10) && b[10] === 0xff && b[11] === 0xff) return { address: v4(12), mapped: true };
  // ::ffff:0:a.b.c.d (SIIT, RFC 2765)
  if (zeros(0, 8) && b[8] === 0xff && b[9] === 0xff && zeros(10, 12)) return { address: v4(12), mapped: false };
  // 64:ff9b::a.b.c.d (NAT64 well-known prefix, RFC 6052)
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zeros(4, 12)) return { address: v4(12), mapped: false };
  // 2002:aabb:ccdd::/48 (6to4, RFC 3056)
  if (b[0] === 0x20 && b[1] === 0x02) return { address: v4(2), mapped: false };
  return undefined;
}

/** The 16 bytes of an IPv6 address, or undefined when it is not one. */
export function ipv6Bytes(address: string): number[] | undefined {
  const bare = address.replace(/%.*$/, "");
  if (!isIPv6(bare)) return undefined;
  let text = bare;
  const tail: number[] = [];
  // A dotted IPv4 tail stands for the last two groups.
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    tail.push(...dotted.slice(1).map(Number));
    text = text.slice(0, dotted.index) + "0:0";
  }
  const [head = "", rest] = text.split("::");
  const groups = (s: string) => (s === "" ? [] : s.split(":").map((g) => parseInt(g, 16)));
  const before = groups(head);
  const after = rest === undefined ? [] : groups(rest);
  const all = [...before, ...new Array<number>(8 - before.length - after.length).fill(0), ...after];
  const bytes = all.flatMap((g) => [g >> 8, g & 0xff]);
  if (tail.length === 4) bytes.splice(12, 4, ...tail);
  return bytes;
}
