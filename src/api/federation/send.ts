/** `PUT /_matrix/federation/v1/send/{txnId}`: a transaction of PDUs and EDUs from another server. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { federationAuthHook, originOf } from "./auth.js";

/**
 * The largest transaction the spec allows: 50 PDUs and 100 EDUs of at most 64 KiB each. A larger
 * body gets 413 `M_TOO_LARGE` before it is read (and before its signature is checked).
 */
const MAX_TXN_BYTES = 150 * 65_536;

export function registerFederationSendRoutes(app: App, services: Services): void {
  const preValidation = federationAuthHook(services.federation);
  app.put(
    "/_matrix/federation/v1/send/:txnId",
    {
      preValidation,
      bodyLimit: Math.max(MAX_TXN_BYTES, services.config.maxRequestBodyBytes),
      schema: { params: Type.Object({ txnId: Type.String({ minLength: 1 }) }) },
    },
    async (request) => services.federation.transactions.receive(originOf(request), request.params.txnId, request.body),
  );
}
