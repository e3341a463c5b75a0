/** Profiles: display name and avatar. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import { Errors } from "../../errors.js";
import { serverNameOf } from "../../events/ids.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

const FIELDS = ["displayname", "avatar_url"] as const;

export function registerProfileRoutes(app: App, services: Services): void {
  const { accounts } = services;
  // Other servers' users: asked of their server (`/_matrix/federation/v1/query/profile`).
  const profileOf = (userId: string) =>
    serverNameOf(userId) === undefined || serverNameOf(userId) === services.config.serverName ? accounts.getProfile(userId) : services.federation.profiles.fetch(userId);
  // The spec serves profiles without authentication; a token, when sent, must still be valid.
  const readAuth = authHook(services.auth, "optional", { allowGuest: true });
  const Params = Type.Object({ userId: Type.String() });
  for (const url of clientPaths("/profile/:userId")) {
    app.get(url, { onRequest: readAuth, schema: { params: Params } }, async (request) => profileOf(request.params.userId));
  }
  for (const field of FIELDS) {
    for (const url of clientPaths(`/profile/:userId/${field}`)) {
      app.get(url, { onRequest: readAuth, schema: { params: Params } }, async (request) => {
        const profile = await profileOf(request.params.userId);
        if (profile[field] === undefined) throw Errors.notFound(`The user has no ${field}`);
        return { [field]: profile[field] };
      });
      app.put(
        url,
        {
          onRequest: authHook(services.auth, "required", { allowGuest: field === "displayname" }),
          schema: { params: Params, body: Type.Object({ [field]: Type.Union([Type.String(), Type.Null()]) }) },
        },
        async (request) => {
          const value = (request.body as Record<string, string | null>)[field] ?? null;
          await accounts.setProfileField(requester(request), request.params.userId, field, value);
          return {};
        },
      );
    }
  }
}
