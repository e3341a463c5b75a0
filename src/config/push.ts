/**
 * Resolves the push keys and the address ranges that govern connections to destinations users
 * choose (push gateways now, federation later): ranges must parse as CIDR, as for URL previews.
 */
import type { Config } from "./config.js";
import type { Problems } from "./errors.js";
import { isCidr } from "./media.js";
import type { RawConfig } from "./schema.js";

export function resolvePush(raw: RawConfig, problems: Problems): Pick<Config, "outbound" | "push"> {
  for (const key of ["ip_range_blacklist", "ip_range_whitelist"] as const) {
    raw[key].forEach((range, i) => {
      if (!isCidr(range)) {
        problems.add([key, i], `\`${key}\` entry ${JSON.stringify(range)} is not an address range: expected CIDR such as 10.0.0.0/8 or fd00::/8`);
      }
    });
  }
  return {
    outbound: { ipRangeBlacklist: raw.ip_range_blacklist, ipRangeWhitelist: raw.ip_range_whitelist },
    push: { enabled: raw.push.enabled, includeContent: raw.push.include_content },
  };
}
