/**
 * Resolves the media repository's keys: what the schema cannot check (address ranges that
 * must parse as CIDR, thumbnail sizes listed twice) and the paths relative to the config.
 */
import { isIP } from "node:net";
import type { MediaConfig } from "./config.js";
import type { Problems } from "./errors.js";
import type { RawConfig } from "./schema.js";
import { parseDuration, parseSize } from "./types.js";

/** Whether `range` is an address or an address/prefix that `net.BlockList` accepts. */
export function isCidr(range: string): boolean {
  const [address, prefix, ...rest] = range.split("/");
  if (rest.length > 0 || address === undefined) return false;
  const family = isIP(address);
  if (family === 0) return false;
  if (prefix === undefined) return true;
  if (!/^[0-9]{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}

export function resolveMedia(raw: RawConfig, fromBase: (p: string) => string, problems: Problems): MediaConfig {
  for (const key of ["url_preview_ip_range_blacklist", "url_preview_ip_range_whitelist"] as const) {
    raw[key].forEach((range, i) => {
      if (!isCidr(range)) {
        problems.add([key, i], `\`${key}\` entry ${JSON.stringify(range)} is not an address range: expected CIDR such as 10.0.0.0/8 or fd00::/8`);
      }
    });
  }
  const seen = new Set<string>();
  raw.thumbnail_sizes.forEach((t, i) => {
    const key = `${t.width}x${t.height} ${t.method}`;
    if (seen.has(key)) problems.add(["thumbnail_sizes", i], `\`thumbnail_sizes\` lists ${key} twice`);
    seen.add(key);
  });
  return {
    enabled: raw.enable_media_repo,
    storePath: fromBase(raw.media_store_path ?? "data/media_store"),
    maxUploadBytes: parseSize(raw.max_upload_size),
    maxImagePixels: parseSize(raw.max_image_pixels),
    dynamicThumbnails: raw.dynamic_thumbnails,
    thumbnailSizes: raw.thumbnail_sizes.map((t) => ({ width: t.width, height: t.height, method: t.method })),
    maxPendingUploads: raw.max_pending_media_uploads,
    unusedExpirationMs: parseDuration(raw.unused_expiration_time),
    urlPreview: {
      enabled: raw.url_preview_enabled,
      ipRangeBlacklist: raw.url_preview_ip_range_blacklist,
      ipRangeWhitelist: raw.url_preview_ip_range_whitelist,
      urlBlacklist: raw.url_preview_url_blacklist,
      maxBytes: parseSize(raw.max_spider_size),
    },
  };
}
