/** Account data: `GET`/`PUT /user/{userId}[/rooms/{roomId}]/account_data/{type}`. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

const Content = Type.Record(Type.String(), Type.Unknown());
const GlobalParams = Type.Object({ userId: Type.String(), type: Type.String({ minLength: 1 }) });
const RoomParams = Type.Object({ userId: Type.String(), roomId: Type.String(), type: Type.String({ minLength: 1 }) });

export function registerAccountDataRoutes(app: App, services: Services): void {
  const onRequest = authHook(services.auth, "required", { allowGuest: true });
  const { accountData } = services;

  for (const url of clientPaths("/user/:userId/account_data/:type")) {
    app.get(url, { onRequest, schema: { params: GlobalParams } }, async (request) =>
      accountData.get(requester(request), request.params.userId, null, request.params.type),
    );
    app.put(url, { onRequest, schema: { params: GlobalParams, body: Content } }, async (request) => {
      await accountData.set(requester(request), request.params.userId, null, request.params.type, request.body);
      return {};
    });
  }
  for (const url of clientPaths("/user/:userId/rooms/:roomId/account_data/:type")) {
    app.get(url, { onRequest, schema: { params: RoomParams } }, async (request) => {
      const p = request.params;
      return accountData.get(requester(request), p.userId, p.roomId, p.type);
    });
    app.put(url, { onRequest, schema: { params: RoomParams, body: Content } }, async (request) => {
      const p = request.params;
      await accountData.set(requester(request), p.userId, p.roomId, p.type, request.body);
      return {};
    });
  }
}
