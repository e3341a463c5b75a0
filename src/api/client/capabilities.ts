/** `GET /capabilities`: what a client may do on this server. */
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook } from "../auth.js";
import { clientPaths } from "../paths.js";

export function registerCapabilitiesRoutes(app: App, services: Services): void {
  const capabilities = {
    "m.change_password": { enabled: true },
    "m.set_displayname": { enabled: true },
    "m.set_avatar_url": { enabled: true },
    "m.3pid_changes": { enabled: false },
    "m.get_login_token": { enabled: false },
  };
  for (const url of clientPaths("/capabilities")) {
    app.get(url, { onRequest: authHook(services.auth, "required", { allowGuest: true }) }, async () => ({ capabilities }));
  }
}
