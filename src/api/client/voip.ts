/** `GET /voip/turnServer`. */
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

export function registerVoipRoutes(app: App, services: Services): void {
  for (const url of clientPaths("/voip/turnServer")) {
    // Guests pass authentication here; the TURN service applies `turn_allow_guests`.
    app.get(url, { onRequest: authHook(services.auth, "required", { allowGuest: true }) }, async (request) =>
      services.turn.credentials(requester(request)),
    );
  }
}
