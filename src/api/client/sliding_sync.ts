/** `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`: simplified sliding sync (MSC4186). */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";

/** Long-polls are capped so that a client cannot hold a request open indefinitely. */
const MAX_TIMEOUT_MS = 10 * 60_000;

const Query = Type.Object({
  pos: Type.Optional(Type.String()),
  timeout: Type.Optional(Type.Integer({ minimum: 0 })),
  set_presence: Type.Optional(Type.String()),
});

export const SLIDING_SYNC_PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

export function registerSlidingSyncRoutes(app: App, services: Services): void {
  const onRequest = authHook(services.auth, "required", { allowGuest: true });
  // Long-polls answer at once when the server begins to stop, so the close is not held up.
  const inFlight = new Set<AbortController>();
  let closing = false;
  app.addHook("preClose", async () => {
    closing = true;
    for (const controller of inFlight) controller.abort();
  });

  app.post(SLIDING_SYNC_PATH, { onRequest, schema: { querystring: Query } }, async (request, reply) => {
    const controller = new AbortController();
    if (closing) controller.abort();
    // The client went away: answer at once, and save no connection state for an answer nobody reads.
    const gone = new AbortController();
    const onClose = () => {
      gone.abort();
      controller.abort();
    };
    reply.raw.once("close", onClose);
    inFlight.add(controller);
    try {
      return await services.slidingSync.sync(requester(request), request.body ?? {}, {
        pos: request.query.pos,
        timeoutMs: Math.min(request.query.timeout ?? 0, MAX_TIMEOUT_MS),
        signal: controller.signal,
        abandoned: gone.signal,
      });
    } finally {
      inFlight.delete(controller);
      reply.raw.off("close", onClose);
    }
  });
}
