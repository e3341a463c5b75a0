/** Registration: `/register` with user-interactive auth, availability and token validity. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import type { AuthDict } from "../../services/uia.js";
import { clientPaths } from "../paths.js";

const RegisterBody = Type.Object({
  username: Type.Optional(Type.String()),
  password: Type.Optional(Type.String()),
  device_id: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  initial_device_display_name: Type.Optional(Type.String({ maxLength: 1000 })),
  inhibit_login: Type.Optional(Type.Boolean()),
  refresh_token: Type.Optional(Type.Boolean()),
  auth: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
});

export function registerRegistrationRoutes(app: App, services: Services): void {
  for (const url of clientPaths("/register")) {
    app.post(
      url,
      {
        schema: {
          body: RegisterBody,
          querystring: Type.Object({ kind: Type.Union([Type.Literal("user"), Type.Literal("guest")], { default: "user" }) }),
        },
      },
      async (request) => {
        const body = request.body;
        return services.accounts.register({
          kind: request.query.kind,
          username: body.username,
          password: body.password,
          deviceId: body.device_id,
          initialDeviceDisplayName: body.initial_device_display_name,
          inhibitLogin: body.inhibit_login ?? false,
          auth: body.auth as AuthDict | undefined,
          ip: request.ip,
        });
      },
    );
  }

  for (const url of clientPaths("/register/available")) {
    app.get(url, { schema: { querystring: Type.Object({ username: Type.String() }) } }, async (request) => {
      await services.accounts.isAvailable(request.query.username);
      return { available: true };
    });
  }

  app.get(
    "/_matrix/client/v1/register/m.login.registration_token/validity",
    { schema: { querystring: Type.Object({ token: Type.String() }) } },
    async (request) => ({ valid: await services.accounts.registrationTokenValid(request.query.token) }),
  );
}
