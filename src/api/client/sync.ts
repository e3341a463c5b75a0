/** `GET /sync` and the filters it uses. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import type { StateAfterMode } from "../../services/sync/sync_service.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

/** Long-polls are capped so that a client cannot hold a request open indefinitely. */
const MAX_TIMEOUT_MS = 10 * 60_000;

const SyncQuery = Type.Object({
  since: Type.Optional(Type.String()),
  timeout: Type.Optional(Type.Integer({ minimum: 0 })),
  full_state: Type.Optional(Type.Boolean()),
  filter: Type.Optional(Type.String()),
  set_presence: Type.Optional(Type.String()),
  use_state_after: Type.Optional(Type.Boolean()),
  "org.matrix.msc4222.use_state_after": Type.Optional(Type.Boolean()),
});

const UserParams = Type.Object({ userId: Type.String() });

export function registerSyncRoutes(app: App, services: Services): void {
  // Guests may sync and keep filters (spec: "Guest Access").
  const onRequest = authHook(services.auth, "required", { allowGuest: true });

  // Requests in a long-poll when the server begins to stop: answer them at once so the close is not held up.
  // One that reaches its handler after that (it was still authenticating) does not wait at all.
  const inFlight = new Set<AbortController>();
  let closing = false;
  app.addHook("preClose", async () => {
    closing = true;
    for (const controller of inFlight) controller.abort();
  });

  for (const url of clientPaths("/sync")) {
    app.get(url, { onRequest, schema: { querystring: SyncQuery } }, async (request, reply) => {
      const q = request.query;
      const stateAfter: StateAfterMode = q["org.matrix.msc4222.use_state_after"] ? "unstable" : q.use_state_after ? "stable" : "none";
      const controller = new AbortController();
      if (closing) controller.abort();
      // The response's "close" fires when the client disconnects (and harmlessly once the reply is sent).
      const onClose = () => controller.abort();
      reply.raw.once("close", onClose);
      inFlight.add(controller);
      try {
        return await services.sync.sync(requester(request), {
          since: q.since,
          timeoutMs: Math.min(q.timeout ?? 0, MAX_TIMEOUT_MS),
          fullState: q.full_state ?? false,
          filter: q.filter,
          stateAfter,
          signal: controller.signal,
        });
      } finally {
        inFlight.delete(controller);
        reply.raw.off("close", onClose);
      }
    });
  }

  for (const url of clientPaths("/user/:userId/filter")) {
    app.post(url, { onRequest, schema: { params: UserParams } }, async (request) => ({
      filter_id: await services.filters.create(requester(request), request.params.userId, request.body),
    }));
  }
  for (const url of clientPaths("/user/:userId/filter/:filterId")) {
    app.get(url, { onRequest, schema: { params: Type.Object({ userId: Type.String(), filterId: Type.String() }) } }, async (request) =>
      services.filters.get(requester(request), request.params.userId, request.params.filterId),
    );
  }
}
