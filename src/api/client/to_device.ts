/** `PUT /sendToDevice/{eventType}/{txnId}`. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

const Params = Type.Object({ eventType: Type.String({ minLength: 1 }), txnId: Type.String({ minLength: 1 }) });
const Body = Type.Object({
  messages: Type.Record(Type.String(), Type.Record(Type.String(), Type.Record(Type.String(), Type.Unknown()))),
});

export function registerToDeviceRoutes(app: App, services: Services): void {
  const onRequest = authHook(services.auth, "required", { allowGuest: true });
  for (const url of clientPaths("/sendToDevice/:eventType/:txnId")) {
    app.put(url, { onRequest, schema: { params: Params, body: Body } }, async (request) => {
      await services.toDevice.send(requester(request), request.params.eventType, request.params.txnId, request.body.messages);
      return {};
    });
  }
}
