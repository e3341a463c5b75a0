/**
 * Resolves the `livekit` block: checks what the schema cannot (the SFU URL's
 * scheme, exactly one secret source) and reads the secret file, so a bad file
 * stops the server at start rather than failing every call.
 */
import { readFileSync } from "node:fs";
import type { LiveKitConfig } from "./config.js";
import type { Problems } from "./errors.js";
import type { RawConfig } from "./schema.js";
import { isLoopbackHost, quotedUrl } from "./transports.js";
import { parseDuration, Secret } from "./types.js";

export function resolveLiveKit(
  raw: RawConfig,
  fromBase: (p: string) => string,
  problems: Problems,
  warnings: string[],
): LiveKitConfig | undefined {
  const lk = raw.livekit;
  if (!lk) return undefined;

  let url: URL | undefined;
  try {
    url = new URL(lk.url);
  } catch {
    problems.add(["livekit", "url"], `\`livekit.url\` is ${JSON.stringify(lk.url)}, which is not a URL: expected wss://host[:port]`);
  }
  if (url && (url.username !== "" || url.password !== "")) {
    problems.add(["livekit", "url"], "`livekit.url` carries a user name or password, which clients would be shown: give the SFU's credentials as `livekit.api_key` and `livekit.api_secret_path`");
  }
  if (url?.protocol === "ws:") {
    if (isLoopbackHost(url.hostname)) {
      warnings.push("livekit.url uses plain ws://; only clients on this machine can reach that SFU");
    } else {
      problems.add(
        ["livekit", "url"],
        `\`livekit.url\` is ${quotedUrl(lk.url)}, which is not allowed: browsers need wss:// (ws:// only for loopback hosts)`,
      );
    }
  }

  let secret: string | undefined;
  if (lk.api_secret !== undefined && lk.api_secret_path !== undefined) {
    problems.add(["livekit", "api_secret_path"], "`livekit.api_secret` and `livekit.api_secret_path` exclude each other: set one of them");
  } else if (lk.api_secret !== undefined) {
    secret = lk.api_secret;
  } else if (lk.api_secret_path !== undefined) {
    const file = fromBase(lk.api_secret_path);
    try {
      secret = readFileSync(file, "utf8").trim();
      if (secret === "") problems.add(["livekit", "api_secret_path"], `\`livekit.api_secret_path\`: the file ${file} is empty`);
    } catch (err) {
      // The error names the file, never its contents.
      problems.add(["livekit", "api_secret_path"], `\`livekit.api_secret_path\`: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  } else {
    problems.add(["livekit"], "`livekit` needs the LiveKit API secret: set `livekit.api_secret` or `livekit.api_secret_path`");
  }

  const full = lk.full_access_homeservers ?? [raw.server_name];
  if (full.includes("*") && full.length > 1) {
    problems.add(["livekit", "full_access_homeservers"], "`livekit.full_access_homeservers`: `*` means every server and must be the only entry");
  }

  for (const [name, base] of Object.entries(lk.cs_api_url_overrides)) {
    try {
      new URL(base);
    } catch {
      problems.add(["livekit", "cs_api_url_overrides", name], `\`livekit.cs_api_url_overrides.${name}\` is ${JSON.stringify(base)}, which is not an absolute URL`);
    }
  }

  const publicBase = (raw.public_baseurl ?? `https://${raw.server_name}/`).replace(/\/+$/, "");
  return {
    url: lk.url,
    apiKey: lk.api_key,
    apiSecret: new Secret(secret ?? ""),
    fullAccessHomeservers: full,
    path: lk.path,
    serviceUrl: publicBase + lk.path,
    sanityCheckIntervalMs: parseDuration(lk.sanity_check_interval),
    csApiUrlOverrides: { ...lk.cs_api_url_overrides },
    canUpdateOwnMetadata: lk.can_update_own_metadata,
    delegationMinDelayMs: parseDuration(lk.delegation_min_delay),
  };
}
