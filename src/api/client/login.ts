/** `/login` and `/logout`. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

const LoginBody = Type.Object({
  type: Type.String(),
  identifier: Type.Optional(Type.Object({ type: Type.String(), user: Type.Optional(Type.String()) })),
  user: Type.Optional(Type.String()),
  password: Type.Optional(Type.String()),
  device_id: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  initial_device_display_name: Type.Optional(Type.String({ maxLength: 1000 })),
  refresh_token: Type.Optional(Type.Boolean()),
});

export function registerLoginRoutes(app: App, services: Services): void {
  for (const url of clientPaths("/login")) {
    app.get(url, async () => ({ flows: [{ type: "m.login.password" }] }));
    app.post(url, { schema: { body: LoginBody } }, async (request) => {
      const b = request.body;
      return services.sessions.login({
        type: b.type,
        identifier: b.identifier,
        user: b.user,
        password: b.password,
        deviceId: b.device_id,
        initialDeviceDisplayName: b.initial_device_display_name,
        ip: request.ip,
      });
    });
  }
  const authed = { onRequest: authHook(services.auth, "required", { allowGuest: true }) };
  for (const url of clientPaths("/logout")) {
    app.post(url, authed, async (request) => {
      await services.sessions.logout(requester(request));
      return {};
    });
  }
  for (const url of clientPaths("/logout/all")) {
    app.post(url, authed, async (request) => {
      await services.sessions.logoutAll(requester(request));
      return {};
    });
  }
}
