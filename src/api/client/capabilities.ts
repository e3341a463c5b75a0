/** `GET /capabilities`: what a client may do on this server. */
import { DEFAULT_ROOM_VERSION, ROOM_VERSIONS, roomVersionStability } from "../../events/index.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook } from "../auth.js";
import { clientPaths } from "../paths.js";

/** `m.room_versions`: exactly the versions `createRoom` accepts, with their stability. */
export function roomVersionsCapability(
  defaultVersion: string = DEFAULT_ROOM_VERSION,
): { default: string; available: Record<string, "stable" | "unstable"> } {
  const available: Record<string, "stable" | "unstable"> = {};
  for (const id of Object.keys(ROOM_VERSIONS)) available[id] = roomVersionStability(id);
  return { default: defaultVersion, available };
}

export function registerCapabilitiesRoutes(app: App, services: Services): void {
  const capabilities = {
    "m.change_password": { enabled: true },
    "m.room_versions": roomVersionsCapability(services.config.defaultRoomVersion),
    "m.set_displayname": { enabled: true },
    "m.set_avatar_url": { enabled: true },
    "m.3pid_changes": { enabled: false },
    "m.get_login_token": { enabled: false },
    ...(services.delayedEvents.enabled
      ? {
          "org.matrix.msc4140.delayed_events": services.delayedEvents.capabilities(),
          "m.delayed_events": services.delayedEvents.capabilities(),
        }
      : {}),
  };
  for (const url of clientPaths("/capabilities")) {
    app.get(url, { onRequest: authHook(services.auth, "required", { allowGuest: true }) }, async () => ({ capabilities }));
  }
}
