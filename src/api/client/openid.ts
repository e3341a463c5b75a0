/** `POST /user/{userId}/openid/request_token`. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

export function registerOpenIdRoutes(app: App, services: Services): void {
  for (const url of clientPaths("/user/:userId/openid/request_token")) {
    app.post(
      url,
      {
        onRequest: authHook(services.auth, "required"),
        schema: { params: Type.Object({ userId: Type.String() }), body: Type.Object({}) },
      },
      async (request) => services.openId.requestToken(requester(request), request.params.userId),
    );
  }
}
