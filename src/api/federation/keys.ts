/**
 * `/_matrix/key/v2`: this server's signing keys, and the notary query for other servers' keys.
 * None of it is authenticated: key responses carry their own signatures.
 */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";

const Criteria = Type.Record(
  Type.String(),
  Type.Record(Type.String(), Type.Object({ minimum_valid_until_ts: Type.Optional(Type.Integer({ minimum: 0 })) })),
);

export function registerKeyServerRoutes(app: App, services: Services): void {
  const { keys } = services.federation;
  app.get("/_matrix/key/v2/server", async () => keys.ownKeys());
  // Deprecated since v1.0 (the key ID is ignored, as Synapse does), still asked by old servers.
  app.get("/_matrix/key/v2/server/:keyId", async () => keys.ownKeys());
  app.post("/_matrix/key/v2/query", { schema: { body: Type.Object({ server_keys: Criteria }) } }, async (request) =>
    keys.query(request.body.server_keys),
  );
  app.get(
    "/_matrix/key/v2/query/:serverName",
    {
      schema: {
        params: Type.Object({ serverName: Type.String({ minLength: 1 }) }),
        querystring: Type.Object({ minimum_valid_until_ts: Type.Optional(Type.Integer({ minimum: 0 })) }),
      },
    },
    async (request) => {
      const min = request.query.minimum_valid_until_ts;
      return keys.query({ [request.params.serverName]: {} }).then((answer) =>
        min === undefined ? answer : { server_keys: answer.server_keys.filter((r) => typeof r.valid_until_ts === "number" && r.valid_until_ts >= min) },
      );
    },
  );
}
