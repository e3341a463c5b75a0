/**
 * End-to-end encryption for other servers: `GET /_matrix/federation/v1/user/devices/{userId}`,
 * `POST /_matrix/federation/v1/user/keys/query` and `POST /_matrix/federation/v1/user/keys/claim`,
 * for this server's users, X-Matrix authenticated.
 */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { federationAuthHook } from "./auth.js";

const QueryBody = Type.Object({ device_keys: Type.Record(Type.String(), Type.Array(Type.String())) });
const ClaimBody = Type.Object({ one_time_keys: Type.Record(Type.String(), Type.Record(Type.String(), Type.String())) });

export function registerFederationUserKeyRoutes(app: App, services: Services): void {
  const preValidation = federationAuthHook(services.federation);
  const keys = services.federatedKeys;
  app.get(
    "/_matrix/federation/v1/user/devices/:userId",
    { preValidation, schema: { params: Type.Object({ userId: Type.String() }) } },
    async (request) => keys.userDevices(request.params.userId),
  );
  app.post("/_matrix/federation/v1/user/keys/query", { preValidation, schema: { body: QueryBody } }, async (request) => keys.serveQuery(request.body));
  app.post("/_matrix/federation/v1/user/keys/claim", { preValidation, schema: { body: ClaimBody } }, async (request) => keys.serveClaim(request.body));
}
