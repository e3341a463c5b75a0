/**
 * Validates `matrix_rtc.transports`. Every entry is served to every user, so
 * anything that looks like a secret refuses the config.
 */
import type { RtcTransport } from "./config.js";
import { dottedPath, type ConfigPath, type Problems } from "./errors.js";

/** The `.well-known/matrix/client` key that carries the transports for older clients. */
export const RTC_FOCI_KEY = "org.matrix.msc4143.rtc_foci";

const LIVEKIT_TYPES = new Set(["livekit", "msc4195.livekit"]);
const LIVEKIT_KEYS = new Set(["type", "url", "livekit_service_url"]);
const SECRET_WORDS = ["secret", "password", "api_key", "apikey", "token"];
const looksSecret = (name: string) => SECRET_WORDS.some((w) => name.toLowerCase().includes(w));

/**
 * Whether a parsed URL's `hostname` is this machine. The URL parser has already written any
 * IPv4 form as four decimal numbers, so a name such as `127.example.com` stays a name.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h.endsWith(".localhost") || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** A URL as it may be quoted in an error message: any user name and password left out. */
export function quotedUrl(value: string): string {
  if (!hasUrlCredentials(value)) return JSON.stringify(value);
  const url = new URL(value);
  url.username = "";
  url.password = "";
  return JSON.stringify(url.toString());
}

/** Whether a string is a URL that carries a user name or password (`https://user:pass@host`). */
function hasUrlCredentials(value: string): boolean {
  if (!value.includes("@")) return false;
  try {
    const url = new URL(value);
    return url.username !== "" || url.password !== "";
  } catch {
    return false;
  }
}

/**
 * A parameter of a URL's query or fragment whose name looks like a secret (`?token=…`,
 * `#access_token=…`), if any.
 */
function secretUrlParam(value: string): string | undefined {
  if (!value.includes("?") && !value.includes("#")) return undefined;
  try {
    const url = new URL(value);
    const names = [...url.searchParams.keys(), ...new URLSearchParams(url.hash.slice(1)).keys()];
    return names.find(looksSecret);
  } catch {
    return undefined;
  }
}

/** Each secret-looking key or URL under `value`, at `at` in the file. */
function findSecrets(value: unknown, at: ConfigPath, out: { at: ConfigPath; what: string }[]): void {
  if (Array.isArray(value)) {
    value.forEach((v, i) => findSecrets(v, [...at, i], out));
  } else if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      if (looksSecret(k)) out.push({ at: [...at, k], what: `\`${dottedPath([...at, k])}\` looks like a secret` });
      findSecrets(v, [...at, k], out);
    }
  } else if (typeof value === "string") {
    if (hasUrlCredentials(value)) out.push({ at, what: `\`${dottedPath(at)}\` is a URL with a user name or password` });
    const param = secretUrlParam(value);
    if (param !== undefined) out.push({ at, what: `\`${dottedPath(at)}\` is a URL whose parameter \`${param}\` looks like a secret` });
  }
}

export function resolveTransports(
  raw: Record<string, unknown>[],
  problems: Problems,
  warnings: string[],
  listPath: ConfigPath = ["matrix_rtc", "transports"],
): RtcTransport[] {
  const out: RtcTransport[] = [];
  raw.forEach((entry, i) => {
    const at = [...listPath, i];
    const where = dottedPath(at);
    const secrets: { at: ConfigPath; what: string }[] = [];
    findSecrets(entry, at, secrets);
    for (const { at: secretAt, what } of secrets) {
      problems.add(
        secretAt,
        `${what}; transports are served to every user, so they may not hold secrets (keep LiveKit credentials out of this list)`,
      );
    }
    const type = String(entry.type);
    if (!LIVEKIT_TYPES.has(type)) {
      warnings.push(`${where} has type "${type}", which Switchboard does not know; it is served to clients as written`);
      out.push(structuredClone(entry) as RtcTransport);
      return;
    }
    for (const key of Object.keys(entry)) {
      if (!LIVEKIT_KEYS.has(key)) {
        problems.add([...at, key], `unknown key \`${where}.${key}\`; a ${type} transport allows: ${[...LIVEKIT_KEYS].join(", ")}`);
      }
    }
    const given = (key: string) => entry[key] !== undefined && entry[key] !== null;
    if (!given("url") && !given("livekit_service_url")) {
      problems.add(
        at,
        `\`${where}.livekit_service_url\` is missing, and so is \`${where}.url\`: a ${type} transport needs its SFU's wss:// URL (\`url\`), the https:// URL of its LiveKit JWT service (\`livekit_service_url\`), or both`,
      );
      return;
    }
    // Built from the validated model, never copied from the raw entry.
    const transport: RtcTransport = { type };
    let valid = true;
    for (const rule of URL_RULES) {
      if (!given(rule.key)) continue;
      const value = checkedUrl(entry[rule.key], rule, [...at, rule.key], problems, warnings);
      if (value === undefined) valid = false;
      else transport[rule.key] = value;
    }
    if (valid) out.push(transport);
  });
  return out;
}

/** A URL key of a LiveKit transport: the schemes it takes, and the plain one allowed for loopback hosts. */
interface UrlRule {
  key: "url" | "livekit_service_url";
  secure: "https:" | "wss:";
  plain: "http:" | "ws:";
}

/** `url` (MSC4195, Synapse 1.163) names the SFU itself; `livekit_service_url` its JWT service. */
const URL_RULES: UrlRule[] = [
  { key: "url", secure: "wss:", plain: "ws:" },
  { key: "livekit_service_url", secure: "https:", plain: "http:" },
];

/** The URL when it is absolute and of the rule's scheme (the plain one only for loopback hosts, with a warning). */
function checkedUrl(value: unknown, rule: UrlRule, at: ConfigPath, problems: Problems, warnings: string[]): string | undefined {
  const where = dottedPath(at);
  const scheme = rule.secure.slice(0, -1);
  const plain = rule.plain.slice(0, -1);
  if (typeof value !== "string") {
    problems.add(at, `\`${where}\` is ${JSON.stringify(value)}, which is not allowed: expected an absolute ${scheme}:// URL`);
    return undefined;
  }
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    problems.add(at, `\`${where}\` is ${quotedUrl(value)}, which is not allowed: expected an absolute ${scheme}:// URL`);
    return undefined;
  }
  if (parsed.protocol === rule.plain && isLoopbackHost(parsed.hostname)) {
    warnings.push(`${where} uses plain ${plain}; that only works for clients on this machine`);
  } else if (parsed.protocol !== rule.secure) {
    problems.add(
      at,
      `\`${where}\` is ${quotedUrl(value)}, which is not allowed: expected a ${scheme}:// URL (${plain}:// only for loopback hosts)`,
    );
    return undefined;
  }
  return value;
}

/**
 * A hand-written `rtc_foci` list in `extra_well_known_client_content` is a transport list
 * served to everyone too, so it meets the same rules; the validated copy replaces it.
 */
export function resolveExtraWellKnown(
  raw: Record<string, unknown>,
  problems: Problems,
  warnings: string[],
): Record<string, unknown> {
  const foci = raw[RTC_FOCI_KEY];
  if (foci === undefined) return raw;
  const listPath = ["extra_well_known_client_content", RTC_FOCI_KEY];
  if (!Array.isArray(foci) || !foci.every((f) => f !== null && typeof f === "object" && !Array.isArray(f))) {
    problems.add(listPath, `\`${dottedPath(listPath)}\` must be a list of transports (objects with a \`type\`), as in \`matrix_rtc.transports\``);
    return raw;
  }
  const missingType = foci.findIndex((f) => typeof (f as Record<string, unknown>).type !== "string");
  if (missingType >= 0) {
    problems.add([...listPath, missingType], `\`${dottedPath([...listPath, missingType, "type"])}\` is missing: every transport names its type`);
    return raw;
  }
  return { ...raw, [RTC_FOCI_KEY]: resolveTransports(foci as Record<string, unknown>[], problems, warnings, listPath) };
}
