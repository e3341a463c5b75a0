/** Which route groups each listener resource serves. */
import type { ListenerResource } from "../config/sections/server.js";
import type { App } from "../http/server.js";
import type { Services } from "../services/index.js";
import { registerRegistrationTokenRoutes } from "./admin/registration_tokens.js";
import { registerSharedSecretRoutes } from "./admin/register.js";
import { registerAccountRoutes } from "./client/account.js";
import { registerCapabilitiesRoutes } from "./client/capabilities.js";
import { registerDeviceRoutes } from "./client/devices.js";
import { registerLoginRoutes } from "./client/login.js";
import { registerProfileRoutes } from "./client/profile.js";
import { registerRegistrationRoutes } from "./client/register.js";
import { registerVersionsRoutes } from "./client/versions.js";
import { registerWellKnownRoutes } from "./client/wellknown.js";

export function registerRoutes(app: App, services: Services, resources: Set<ListenerResource>): void {
  // Every listener answers health checks, as Synapse's do.
  app.get("/health", async (_request, reply) => reply.type("text/plain").send("OK"));
  if (resources.has("client")) {
    registerVersionsRoutes(app, services);
    registerWellKnownRoutes(app, services);
    registerCapabilitiesRoutes(app, services);
    registerRegistrationRoutes(app, services);
    registerLoginRoutes(app, services);
    registerAccountRoutes(app, services);
    registerDeviceRoutes(app, services);
    registerProfileRoutes(app, services);
    registerSharedSecretRoutes(app, services);
    registerRegistrationTokenRoutes(app, services);
  }
}
