/** `GET /_matrix/federation/v1/query/profile` and `/query/directory`: a local user's profile, a local alias, for another server. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { federationAuthHook } from "./auth.js";

export function registerFederationQueryRoutes(app: App, services: Services): void {
  const preValidation = federationAuthHook(services.federation);
  app.get(
    "/_matrix/federation/v1/query/profile",
    {
      preValidation,
      schema: {
        querystring: Type.Object({
          user_id: Type.String(),
          field: Type.Optional(Type.String()),
        }),
      },
    },
    async (request) => services.federation.profiles.serve(request.query.user_id, request.query.field),
  );
  app.get(
    "/_matrix/federation/v1/query/directory",
    { preValidation, schema: { querystring: Type.Object({ room_alias: Type.String() }) } },
    async (request) => services.federation.directory.serve(request.query.room_alias),
  );
}
