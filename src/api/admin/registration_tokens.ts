/** Synapse's admin API for registration tokens (the subset Switchboard supports). */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";

const BASE = "/_synapse/admin/v1/registration_tokens";

export function registerRegistrationTokenRoutes(app: App, services: Services): void {
  const onRequest = authHook(services.auth, "required");
  const { admin } = services;
  const Params = Type.Object({ token: Type.String() });
  app.get(BASE, { onRequest }, async (request) => ({ registration_tokens: await admin.listRegistrationTokens(requester(request)) }));
  app.post(
    `${BASE}/new`,
    {
      onRequest,
      schema: {
        body: Type.Object({
          token: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: "^[A-Za-z0-9._~-]+$" })),
          uses_allowed: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()])),
          expiry_time: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()])),
          length: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
        }),
      },
    },
    async (request) => admin.createRegistrationToken(requester(request), request.body),
  );
  app.get(`${BASE}/:token`, { onRequest, schema: { params: Params } }, async (request) =>
    admin.getRegistrationToken(requester(request), request.params.token),
  );
  app.delete(`${BASE}/:token`, { onRequest, schema: { params: Params } }, async (request) => {
    await admin.deleteRegistrationToken(requester(request), request.params.token);
    return {};
  });
}
