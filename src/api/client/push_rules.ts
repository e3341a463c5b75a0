/** Push rules (spec: Push Rules API): the server defaults merged with each user's own. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

export function registerPushRuleRoutes(app: App, services: Services): void {
  const onRequest = authHook(services.auth, "required", { allowGuest: true });
  // Changing rules is for registered users (as in Synapse); guests may read the defaults.
  const writer = authHook(services.auth, "required");
  const { pushRules } = services;

  for (const url of clientPaths("/pushrules/").flatMap((u) => [u, u.slice(0, -1)])) {
    app.get(url, { onRequest }, async (request) => pushRules.all(requester(request).userId));
  }
  for (const url of clientPaths("/pushrules/global/")) {
    app.get(url, { onRequest }, async (request) => (await pushRules.all(requester(request).userId)).global);
  }

  const params = Type.Object({ kind: Type.String(), ruleId: Type.String() });
  const placement = Type.Object({ before: Type.Optional(Type.String()), after: Type.Optional(Type.String()) });
  for (const url of clientPaths("/pushrules/global/:kind/:ruleId")) {
    app.get(url, { onRequest, schema: { params } }, async (request) =>
      pushRules.get(requester(request).userId, request.params.kind, request.params.ruleId),
    );
    app.put(url, { onRequest: writer, schema: { params, querystring: placement } }, async (request) => {
      const { kind, ruleId } = request.params;
      await pushRules.put(requester(request).userId, kind, ruleId, request.body, request.query);
      return {};
    });
    app.delete(url, { onRequest: writer, schema: { params } }, async (request) => {
      await pushRules.delete(requester(request).userId, request.params.kind, request.params.ruleId);
      return {};
    });
  }
  for (const url of clientPaths("/pushrules/global/:kind/:ruleId/enabled")) {
    app.get(url, { onRequest, schema: { params } }, async (request) => ({
      enabled: (await pushRules.get(requester(request).userId, request.params.kind, request.params.ruleId)).enabled,
    }));
    app.put(url, { onRequest: writer, schema: { params } }, async (request) => {
      await pushRules.setEnabled(requester(request).userId, request.params.kind, request.params.ruleId, request.body);
      return {};
    });
  }
  for (const url of clientPaths("/pushrules/global/:kind/:ruleId/actions")) {
    app.get(url, { onRequest, schema: { params } }, async (request) => ({
      actions: (await pushRules.get(requester(request).userId, request.params.kind, request.params.ruleId)).actions,
    }));
    app.put(url, { onRequest: writer, schema: { params } }, async (request) => {
      await pushRules.setActions(requester(request).userId, request.params.kind, request.params.ruleId, request.body);
      return {};
    });
  }
}
