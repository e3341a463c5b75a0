/** `.well-known` discovery for clients and, when enabled, for federation. */
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";

export function wellKnownClientBody(services: Services): Record<string, unknown> {
  const { config } = services;
  return {
    ...config.extraWellKnownClientContent,
    "m.homeserver": { base_url: config.publicBaseUrl },
  };
}

export function wellKnownServerBody(services: Services): { "m.server": string } {
  const url = new URL(services.config.publicBaseUrl);
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  return { "m.server": `${url.hostname}:${port}` };
}

export function registerWellKnownRoutes(app: App, services: Services): void {
  app.get("/.well-known/matrix/client", async (_request, reply) => {
    reply.header("cache-control", "public, max-age=3600");
    return wellKnownClientBody(services);
  });
  if (services.config.serveServerWellKnown) {
    app.get("/.well-known/matrix/server", async (_request, reply) => {
      reply.header("cache-control", "public, max-age=3600");
      return wellKnownServerBody(services);
    });
  }
}
