/**
 * `GET /_matrix/federation/v1/openid/userinfo`. It takes no federation
 * authentication: the OpenID token in the query is the only credential.
 */
import type { App } from "../../http/server.js";
import { Errors } from "../../errors.js";
import type { Services } from "../../services/index.js";

export function registerOpenIdUserInfoRoutes(app: App, services: Services): void {
  app.get("/_matrix/federation/v1/openid/userinfo", async (request) => {
    const token = (request.query as Record<string, unknown>).access_token;
    if (typeof token !== "string" || token === "") throw Errors.missingToken();
    return services.openId.userInfo(token);
  });
}
