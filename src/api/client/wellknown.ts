/** `.well-known` discovery for clients and, when enabled, for federation. */
import { RTC_FOCI_KEY } from "../../config/transports.js";
import { Errors } from "../../errors.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";

export function wellKnownClientBody(services: Services): Record<string, unknown> {
  const { config } = services;
  const body: Record<string, unknown> = { ...config.extraWellKnownClientContent };
  // With MSC4143 switched off, older clients must not find transports here either, not even
  // hand-written ones. Otherwise an empty list leaves a hand-written `rtc_foci` alone.
  const transports = services.rtc.transports();
  if (!config.features.msc4143) delete body[RTC_FOCI_KEY];
  else if (config.matrixRtc.advertiseInWellKnown && transports.length > 0) body[RTC_FOCI_KEY] = transports;
  body["m.homeserver"] = { base_url: config.publicBaseUrl };
  return body;
}

export function wellKnownServerBody(services: Services): { "m.server": string } {
  const url = new URL(services.config.publicBaseUrl);
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  return { "m.server": `${url.hostname}:${port}` };
}

export function registerWellKnownRoutes(app: App, services: Services): void {
  const clientBody = JSON.stringify(wellKnownClientBody(services));
  app.get("/.well-known/matrix/client", async (_request, reply) => {
    reply.header("cache-control", "public, max-age=3600");
    reply.type("application/json");
    return clientBody;
  });
  // Always routed, so that other methods get 405 as on every known path; unrecognised when off.
  app.get("/.well-known/matrix/server", async (_request, reply) => {
    if (!services.config.serveServerWellKnown) throw Errors.unrecognized();
    reply.header("cache-control", "public, max-age=3600");
    return wellKnownServerBody(services);
  });
}
