/** `GET /notifications`: the events that notified the user (spec: Push Notifications). */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

/** Synapse's default page size; the cap keeps one request's cost bounded. */
const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 1000;

const Query = Type.Object({
  from: Type.Optional(Type.String()),
  limit: Type.Optional(Type.String({ pattern: "^[0-9]{1,9}$" })),
  only: Type.Optional(Type.String()),
});

export function registerNotificationRoutes(app: App, services: Services): void {
  const onRequest = authHook(services.auth, "required");
  for (const url of clientPaths("/notifications")) {
    app.get(url, { onRequest, schema: { querystring: Query } }, async (request) => {
      const q = request.query;
      const limit = Math.min(Math.max(q.limit === undefined ? DEFAULT_LIMIT : Number(q.limit), 1), MAX_LIMIT);
      return services.pushActions.notifications(requester(request).userId, { from: q.from, limit, onlyHighlight: q.only === "highlight" });
    });
  }
}
