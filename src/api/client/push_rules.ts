/** Push rules, read-only: the server-default ruleset every user has for now. */
import { Type } from "typebox";
import { Errors } from "../../errors.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

export function registerPushRuleRoutes(app: App, services: Services): void {
  const onRequest = authHook(services.auth, "required", { allowGuest: true });
  const { pushRules } = services;

  for (const url of clientPaths("/pushrules/").flatMap((u) => [u, u.slice(0, -1)])) {
    app.get(url, { onRequest }, async (request) => pushRules.all(requester(request).userId));
  }
  for (const url of clientPaths("/pushrules/global/")) {
    app.get(url, { onRequest }, async (request) => pushRules.all(requester(request).userId).global);
  }

  const RuleParams = Type.Object({ kind: Type.String(), ruleId: Type.String() });
  const find = (userId: string, kind: string, ruleId: string) => {
    const rule = pushRules.find(userId, kind, ruleId);
    if (!rule) throw Errors.notFound("Unknown push rule");
    return rule;
  };
  for (const url of clientPaths("/pushrules/global/:kind/:ruleId")) {
    app.get(url, { onRequest, schema: { params: RuleParams } }, async (request) =>
      find(requester(request).userId, request.params.kind, request.params.ruleId),
    );
  }
  for (const url of clientPaths("/pushrules/global/:kind/:ruleId/enabled")) {
    app.get(url, { onRequest, schema: { params: RuleParams } }, async (request) => ({
      enabled: find(requester(request).userId, request.params.kind, request.params.ruleId).enabled,
    }));
  }
  for (const url of clientPaths("/pushrules/global/:kind/:ruleId/actions")) {
    app.get(url, { onRequest, schema: { params: RuleParams } }, async (request) => ({
      actions: find(requester(request).userId, request.params.kind, request.params.ruleId).actions,
    }));
  }
}
