/** Synapse's shared-secret registration, as `register_new_matrix_user` speaks it. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";

export function registerSharedSecretRoutes(app: App, services: Services): void {
  app.get("/_synapse/admin/v1/register", async () => ({ nonce: await services.admin.newNonce() }));
  app.post(
    "/_synapse/admin/v1/register",
    {
      schema: {
        body: Type.Object({
          nonce: Type.String(),
          username: Type.String(),
          password: Type.String(),
          mac: Type.String(),
          admin: Type.Optional(Type.Boolean()),
          displayname: Type.Optional(Type.String()),
          user_type: Type.Optional(Type.Union([Type.String(), Type.Null()])),
        }),
      },
    },
    async (request) => {
      const b = request.body;
      return services.admin.registerWithSharedSecret({
        nonce: b.nonce,
        username: b.username,
        password: b.password,
        mac: b.mac,
        admin: b.admin ?? false,
        displayname: b.displayname,
        userType: b.user_type ?? undefined,
      });
    },
  );
}
