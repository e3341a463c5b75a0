/** `GET /media/preview_url`: served only when `url_preview_enabled`, as Synapse does. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";

// The authenticated path, and the legacy ones Synapse still serves.
const PATHS = ["/_matrix/client/v1/media/preview_url", "/_matrix/media/v3/preview_url", "/_matrix/media/r0/preview_url", "/_matrix/media/v1/preview_url"];

const PreviewQuery = Type.Object(
  {
    url: Type.String(),
    // Accepted and checked, then unused: no history of previews is kept, so every answer is
    // the page as it is now, which is also what Synapse gives when it holds none for `ts`.
    ts: Type.Optional(Type.String({ pattern: "^[0-9]{1,16}$" })),
  },
  { additionalProperties: true },
);

export function registerUrlPreviewRoutes(app: App, services: Services): void {
  const previews = services.urlPreview;
  if (!services.config.media.urlPreview.enabled || !previews) return;
  // Guests are refused, as on Synapse: a preview makes the server fetch and store on their behalf.
  const onRequest = authHook(services.auth, "required");
  for (const path of PATHS) {
    app.get(path, { onRequest, schema: { querystring: PreviewQuery } }, async (request) =>
      previews.preview(requester(request).userId, request.query.url),
    );
  }
}
