/**
 * URL previews (`GET /media/preview_url`): the OpenGraph description of a page a user links to,
 * with its picture stored as media of that user so that clients never contact the page's
 * server themselves. Fetching goes through the SSRF-safe fetcher (services/outbound), under
 * `url_preview_ip_range_*`, `url_preview_url_blacklist` and `max_spider_size`.
 *
 * Errors follow Synapse's statuses, so that clients treat a failed preview alike on both:
 * 403 for a refused URL or IP address, 502 when the page cannot be had (DNS, an error status,
 * too large), 504 when it does not answer in time.
 */
import { Readable } from "node:stream";
import { domainToASCII } from "node:url";
import type { Config } from "../../config/config.js";
import { Errors, MatrixError } from "../../errors.js";
import type { Clock } from "../clock.js";
import { AddressPolicy } from "../outbound/address_policy.js";
import { SafeFetcher, SafeFetchError, type FetchHead, type FetchResult } from "../outbound/safe_fetch.js";
import type { RateLimiter } from "../ratelimiter.js";
import type { MediaService } from "./repository.js";
import { baseType } from "./thumbnails.js";
import { trimOldest } from "../bounded_map.js";

/** A preview: OpenGraph keys (`og:title`, ...) plus `matrix:image:size`. */
export type OpenGraph = Record<string, string | number>;

/**
 * Answers are kept per URL for an hour, as Synapse does (a page shared in a busy room is
 * fetched once, not once per member), and at most 1,000 of them (a few MB) in each process;
 * past that the oldest go first. Failures are not kept: a second request tries again.
 */
const CACHE_ENTRIES = 1000;
const CACHE_TTL_MS = 3_600_000;
/** Pages sending more tags than this are not worth reading further. */
const MAX_OG_TAGS = 50;
/** Longer keys or values are dropped, as Synapse drops them: no client shows them whole. */
const MAX_KEY_LENGTH = 50;
const MAX_VALUE_LENGTH = 1000;
const MAX_DESCRIPTION_LENGTH = 500;
/** Some sites only describe themselves to crawlers; this says what the request is. */
const USER_AGENT = "Switchboard (bot; URL preview)";

interface Logger {
  info(obj: object, msg: string): void;
}

export class UrlPreviewService {
  readonly #fetcher: SafeFetcher;
  readonly #cache = new Map<string, { expires: number; answer: Promise<OpenGraph> }>();
  /** Pictures are stored as media, so uploads' limit holds for them too. */
  readonly #maxBytes: number;
  readonly #blockedHosts: { host: string; subdomains: boolean }[];

  constructor(
    config: Config,
    private readonly media: MediaService,
    private readonly limiter: RateLimiter,
    private readonly clock: Clock,
    private readonly logger: Logger,
    fetcher?: SafeFetcher,
  ) {
    const { urlPreview } = config.media;
    this.#maxBytes = Math.min(urlPreview.maxBytes, config.media.maxUploadBytes);
    this.#blockedHosts = urlPreview.urlBlacklist.map((entry) => {
      const subdomains = entry.startsWith("*.");
      return { host: normaliseHost(subdomains ? entry.slice(2) : entry), subdomains };
    });
    this.#fetcher =
      fetcher ??
      new SafeFetcher({
        policy: new AddressPolicy({ deny: urlPreview.ipRangeBlacklist, allow: urlPreview.ipRangeWhitelist }),
        userAgent: USER_AGENT,
      });
  }

  /** The preview of `rawUrl` for `userId`, from the cache when another request made it lately. */
  async preview(userId: string, rawUrl: string): Promise<OpenGraph> {
    this.limiter.ratelimit(userId);
    let url: URL;
    try {
      url = new URL(rawUrl);
    } catch {
      throw Errors.invalidParam("url is not a valid URL");
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") throw Errors.invalidParam("Only http and https URLs can be previewed");
    if (!this.#hostAllowed(url.hostname)) throw blacklisted();
    const key = url.href;
    const now = this.clock.now();
    const cached = this.#cache.get(key);
    if (cached && cached.expires > now) return cached.answer;
    this.#cache.delete(key);
    const answer = this.#build(userId, url);
    this.#cache.set(key, { expires: now + CACHE_TTL_MS, answer });
    trimOldest(this.#cache, CACHE_ENTRIES);
    answer.catch(() => {
      if (this.#cache.get(key)?.answer === answer) this.#cache.delete(key);
    });
    return answer;
  }

  async #build(userId: string, url: URL): Promise<OpenGraph> {
    const page = await this.#fetch(url, (type) => type === "" || isImage(type) || isHtml(type));
    const contentType = page.headers["content-type"] ?? "";
    const type = baseType(contentType);
    if (isImage(type)) return this.#storeImage(userId, page);
    // Without a Content-Type there is nothing to go by; Synapse answers an empty preview too.
    if (!isHtml(type)) return {};
    const og = openGraph(decodeHtml(page.body, contentType));
    await this.#attachImage(userId, og, page.url);
    return og;
  }

  /** The page, refused before its body is read unless it succeeded with a type `wanted`. */
  async #fetch(url: URL, wanted: (type: string) => boolean): Promise<FetchResult> {
    const inspect = (head: FetchHead) => {
      if (head.status < 200 || head.status > 299) throw Errors.unknown(`The remote server answered HTTP ${head.status}`, 502);
      const type = baseType(head.headers["content-type"] ?? "");
      if (!wanted(type)) throw Errors.unknown(`Cannot preview content of type ${type}`, 502);
    };
    try {
      return await this.#fetcher.fetch({ url, maxBytes: this.#maxBytes, allowHost: (h) => this.#hostAllowed(h), inspect });
    } catch (err) {
      if (!(err instanceof SafeFetchError)) throw err;
      // The host only: a URL's path and query may hold what its sender meant to keep private.
      this.logger.info({ host: err.detail.host, kind: err.kind }, "url preview: fetch failed");
      throw previewError(err, this.#maxBytes);
    }
  }

  /** Replaces the page's `og:image` URL by the picture, stored; drops it if that fails. */
  async #attachImage(userId: string, og: OpenGraph, pageUrl: URL): Promise<void> {
    const raw = og["og:image"] ?? og["og:image:secure_url"] ?? og["og:image:url"];
    // What the page says of its picture is replaced by what the stored picture is.
    for (const k of Object.keys(og)) if (k.startsWith("og:image") && k !== "og:image:alt") delete og[k];
    const stored = typeof raw === "string" ? await this.#imageAt(userId, raw, pageUrl) : undefined;
    if (stored) Object.assign(og, stored);
    else delete og["og:image:alt"];
  }

  /** The picture at `raw` (relative to the page), stored; undefined if it cannot be had, as on Synapse. */
  async #imageAt(userId: string, raw: string, pageUrl: URL): Promise<OpenGraph | undefined> {
    let url: URL;
    try {
      url = new URL(raw, pageUrl);
    } catch {
      return undefined;
    }
    if ((url.protocol !== "http:" && url.protocol !== "https:") || !this.#hostAllowed(url.hostname)) return undefined;
    try {
      return await this.#storeImage(userId, await this.#fetch(url, isImage));
    } catch (err) {
      if (err instanceof MatrixError) return undefined;
      throw err;
    }
  }

  async #storeImage(userId: string, image: FetchResult): Promise<OpenGraph> {
    const contentType = baseType(image.headers["content-type"] ?? "");
    const mxc = await this.media.store(userId, {
      body: Readable.from([image.body]),
      contentType,
      filename: undefined,
      length: image.body.length,
    });
    const og: OpenGraph = { "og:image": mxc, "og:image:type": contentType, "matrix:image:size": image.body.length };
    const dims = await dimensions(image.body);
    if (dims) Object.assign(og, { "og:image:width": dims.width, "og:image:height": dims.height });
    return og;
  }

  #hostAllowed(hostname: string): boolean {
    const host = normaliseHost(hostname.replace(/^\[|\]$/g, ""));
    return !this.#blockedHosts.some((b) => (b.subdomains ? host.endsWith(`.${b.host}`) : host === b.host));
  }
}

function blacklisted(): MatrixError {
  return Errors.unknown("This URL's host is blacklisted for previews", 403);
}

/** Synapse's answer to each failure (its `_download_url` and HTTP client), worded our own way. */
function previewError(err: SafeFetchError, maxBytes: number): MatrixError {
  switch (err.kind) {
    case "blocked_host":
      return blacklisted();
    case "blocked_address":
      return Errors.unknown("The URL's IP address is blocked", 403);
    // Synapse cannot tell a name that does not resolve from one that resolves to a blocked
    // address (its resolver drops those), and neither do we: 502 for both.
    case "blocked_resolution":
    case "dns":
      return Errors.unknown("Could not resolve the URL's host to an allowed address", 502);
    case "too_large":
      return new MatrixError(502, "M_TOO_LARGE", `The content is larger than ${maxBytes} bytes`);
    case "timeout":
      return err.detail.headersReceived
        ? new MatrixError(502, "M_TOO_LARGE", "The content took too long to download")
        : Errors.unknown("The remote server did not answer in time", 504);
    // Synapse answers these 500; 502 says whose fault it is, and this server stays free of 500s.
    default:
      return Errors.unknown("Could not download the content", 502);
  }
}

function isImage(type: string): boolean {
  return type.startsWith("image/");
}

function isHtml(type: string): boolean {
  return type === "text/html" || type === "application/xhtml+xml";
}

function normaliseHost(host: string): string {
  const lower = host.toLowerCase().replace(/\.$/, "");
  return domainToASCII(lower) || lower;
}

type SharpModule = typeof import("sharp").default;
let sharpModule: Promise<SharpModule> | undefined;

/** The picture's size from its header (no decoding), or undefined if it cannot be read. */
async function dimensions(data: Buffer): Promise<{ width: number; height: number } | undefined> {
  sharpModule ??= import("sharp").then((m) => m.default);
  try {
    const meta = await (await sharpModule)(data, { limitInputPixels: false }).metadata();
    const height = meta.pageHeight ?? meta.height;
    return meta.width && height ? { width: meta.width, height } : undefined;
  } catch {
    return undefined;
  }
}

// ---- HTML ----------------------------------------------------------------------------------

/**
 * The page's text: in the encoding its byte order mark, Content-Type or `<meta charset>` names
 * (the HTML standard's order), when Node's TextDecoder knows it; UTF-8 otherwise.
 */
export function decodeHtml(body: Buffer, contentType: string | undefined): string {
  const label = bomEncoding(body) ?? charsetOf(contentType ?? "") ?? metaCharset(body.subarray(0, 1024).toString("latin1")) ?? "utf-8";
  try {
    return new TextDecoder(label).decode(body);
  } catch {
    return new TextDecoder("utf-8").decode(body);
  }
}

function bomEncoding(b: Buffer): string | undefined {
  if (b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) return "utf-8";
  if (b[0] === 0xfe && b[1] === 0xff) return "utf-16be";
  if (b[0] === 0xff && b[1] === 0xfe) return "utf-16le";
  return undefined;
}

function charsetOf(contentType: string): string | undefined {
  return /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(contentType)?.[1];
}

function metaCharset(head: string): string | undefined {
  return /<meta\s[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:+-]+)/i.exec(head)?.[1];
}

const TAG_NAME = /<([A-Za-z][A-Za-z0-9-]*)/y;
const ATTRIBUTE = /([^\s"'>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?/g;
/** Elements whose content is text, not markup: a `<meta>` written inside one is not a tag. */
const RAW_TEXT = new Set(["script", "style", "textarea", "template", "noscript", "title"]);
const CLOSE_TAG = new Map([...RAW_TEXT].map((name) => [name, new RegExp(`</${name}\\s*>`, "gi")]));
/** Twitter's card tags that say nothing about the page. */
const TWITTER_ONLY = new Set(["twitter:card", "twitter:site", "twitter:creator"]);

/**
 * The OpenGraph data of a page: `og:`, `article:` and `profile:` meta properties (the first of
 * each wins, as `og:image` lists the main picture first), Twitter card tags where they fill a
 * gap, then `<title>` and `<meta name="description">` for a missing title and description.
 *
 * A forgiving scan rather than a parser: one pass, linear in the page's length, so a hostile
 * page costs no more than its bytes.
 */
export function openGraph(html: string): OpenGraph {
  const og: Record<string, string> = {};
  const twitter: Record<string, string> = {};
  let title: string | undefined;
  let description: string | undefined;
  let count = 0;
  let i = 0;
  while (i < html.length && count < MAX_OG_TAGS) {
    const lt = html.indexOf("<", i);
    if (lt < 0) break;
    if (html.startsWith("<!--", lt)) {
      const end = html.indexOf("-->", lt + 4);
      i = end < 0 ? html.length : end + 3;
      continue;
    }
    TAG_NAME.lastIndex = lt;
    const match = TAG_NAME.exec(html);
    if (!match) {
      i = lt + 1;
      continue;
    }
    const name = match[1]!.toLowerCase();
    const end = tagEnd(html, TAG_NAME.lastIndex);
    if (end < 0) break;
    i = end + 1;
    if (name === "meta") {
      const attrs = attributes(html.slice(TAG_NAME.lastIndex, end));
      const content = attrs.content?.trim();
      if (!content) continue;
      for (const key of [attrs.property, attrs.name].map((k) => k?.trim().toLowerCase())) {
        if (!key) continue;
        if (/^(og|article|profile):/.test(key)) {
          if (!(key in og)) {
            og[key] = content;
            count++;
          }
        } else if (key.startsWith("twitter:") && !TWITTER_ONLY.has(key)) {
          twitter[`og:${key.slice(8)}`] ??= content;
        } else if (key === "description") {
          description ??= content;
        }
      }
    } else if (RAW_TEXT.has(name)) {
      const close = CLOSE_TAG.get(name)!;
      close.lastIndex = i;
      const found = close.exec(html);
      if (name === "title") title ??= decodeEntities(html.slice(i, found ? found.index : html.length));
      i = found ? close.lastIndex : html.length;
    }
  }
  for (const [k, v] of Object.entries(twitter)) og[k] ??= v;
  const collapse = (s: string | undefined) => s?.replace(/\s+/g, " ").trim() || undefined;
  const fullTitle = collapse(og["og:title"] ?? title);
  const fullDescription = collapse(og["og:description"] ?? description);
  if (fullTitle) og["og:title"] = fullTitle;
  if (fullDescription) og["og:description"] = shorten(fullDescription, MAX_DESCRIPTION_LENGTH);
  for (const [k, v] of Object.entries(og)) if (k.length > MAX_KEY_LENGTH || v.length > MAX_VALUE_LENGTH) delete og[k];
  return og;
}

/** The index of the `>` ending a tag whose attributes start at `from`; quoted values may hold `>`. */
function tagEnd(html: string, from: number): number {
  let j = from;
  while (j < html.length) {
    const c = html[j];
    if (c === ">") return j;
    j++;
    if (c !== "=") continue;
    while (j < html.length && /\s/.test(html[j]!)) j++;
    const quote = html[j];
    if (quote === '"' || quote === "'") {
      const close = html.indexOf(quote, j + 1);
      if (close < 0) return -1;
      j = close + 1;
    }
  }
  return -1;
}

function attributes(text: string): Record<string, string | undefined> {
  // No prototype: an attribute named `__proto__` is just an attribute.
  const attrs = Object.create(null) as Record<string, string | undefined>;
  for (const m of text.matchAll(ATTRIBUTE)) {
    const name = m[1]!.toLowerCase();
    if (!(name in attrs)) attrs[name] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? "");
  }
  return attrs;
}

const NAMED_ENTITIES: Record<string, string> = {
  amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0", hellip: "…", mdash: "—", ndash: "–",
  lsquo: "‘", rsquo: "’", sbquo: "‚", ldquo: "“", rdquo: "”", bdquo: "„", laquo: "«", raquo: "»", middot: "·",
  bull: "•", copy: "©", reg: "®", trade: "™", euro: "€", pound: "£", yen: "¥", cent: "¢", deg: "°", times: "×",
};

/** Numeric references and the common named ones; unknown names stay as they are written. */
export function decodeEntities(text: string): string {
  if (!text.includes("&")) return text;
  return text.replace(/&(?:#([0-9]{1,7});?|#[xX]([0-9A-Fa-f]{1,6});?|([A-Za-z][A-Za-z0-9]{1,31});)/g, (whole, dec?: string, hex?: string, name?: string) => {
    if (name !== undefined) return NAMED_ENTITIES[name] ?? whole;
    const code = dec !== undefined ? Number(dec) : parseInt(hex!, 16);
    const valid = code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff);
    return String.fromCodePoint(valid ? code : 0xfffd);
  });
}

function shorten(text: string, max: number): string {
  if (text.length <= max) return text;
  const cut = text.lastIndexOf(" ", max - 1);
  return `${text.slice(0, cut > max / 2 ? cut : max - 1).trimEnd()}…`;
}
