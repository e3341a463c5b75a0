/** `GET /pushers` and `POST /pushers/set` (spec: Push Notifications, "Pushers"). */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

/** Types only; what each kind requires (and the URL's host) is the service's to check. */
const SetBody = Type.Object({
  kind: Type.Union([Type.String(), Type.Null()]),
  app_id: Type.String(),
  pushkey: Type.String(),
  app_display_name: Type.Optional(Type.String()),
  device_display_name: Type.Optional(Type.String()),
  profile_tag: Type.Optional(Type.String()),
  lang: Type.Optional(Type.String()),
  data: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  append: Type.Optional(Type.Boolean()),
});

export function registerPusherRoutes(app: App, services: Services): void {
  const onRequest = authHook(services.auth, "required");
  for (const url of clientPaths("/pushers")) {
    app.get(url, { onRequest }, async (request) => services.pushers.list(requester(request).userId));
  }
  for (const url of clientPaths("/pushers/set")) {
    app.post(url, { onRequest, schema: { body: SetBody } }, async (request) => {
      await services.pushers.set(requester(request), request.body);
      return {};
    });
  }
}
