/** `/account/whoami` and `/account/password`. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import type { AuthDict } from "../../services/uia.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

/** Also the response schema, so that Fastify serialises the body with a compiled serialiser. */
const WHOAMI = Type.Object({ user_id: Type.String(), device_id: Type.String(), is_guest: Type.Boolean() });

export function registerAccountRoutes(app: App, services: Services): void {
  for (const url of clientPaths("/account/whoami")) {
    app.get(url, { onRequest: authHook(services.auth, "required", { allowGuest: true }), schema: { response: { 200: WHOAMI } } }, (request) => {
      const r = requester(request);
      // Not async: nothing to wait for, and a promise per request shows in the benchmark.
      return { user_id: r.userId, device_id: r.deviceId, is_guest: r.isGuest };
    });
  }
  for (const url of clientPaths("/account/password")) {
    app.post(
      url,
      {
        onRequest: authHook(services.auth, "required"),
        schema: {
          body: Type.Object({
            new_password: Type.String(),
            logout_devices: Type.Optional(Type.Boolean()),
            auth: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
          }),
        },
      },
      async (request) => {
        const b = request.body;
        await services.accounts.changePassword(requester(request), b.new_password, b.logout_devices ?? true, b.auth as AuthDict);
        return {};
      },
    );
  }
}
