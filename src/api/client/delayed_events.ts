/** MSC4140 delayed events: management, listing and the latest draft's scheduling form. */
import type { FastifyRequest } from "fastify";
import { Type } from "typebox";
import { Errors } from "../../errors.js";
import type { App } from "../../http/server.js";
import type { Requester } from "../../services/auth.js";
import type { DelayedAction } from "../../services/delayed_events/service.js";
import { lookupView, statusView } from "../../services/delayed_events/service.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";

export const MSC4140_PREFIX = "/_matrix/client/unstable/org.matrix.msc4140";
const ACTIONS: DelayedAction[] = ["cancel", "restart", "send"];
const DelayParams = Type.Object({ delayId: Type.String() });
const Status = Type.Union([Type.Literal("scheduled"), Type.Literal("finalised")]);

export function registerDelayedEventRoutes(app: App, services: Services): void {
  const delayed = services.delayedEvents;
  if (!delayed.enabled) return;
  const optionalAuth = authHook(services.auth, "optional", { allowGuest: true });
  const requiredAuth = authHook(services.auth, "required", { allowGuest: true });

  /** Per user when a token came with the call, per client IP otherwise. */
  const limit = (request: FastifyRequest) => {
    const key = request.requester ? `user:${request.requester.userId}` : `ip:${request.ip}`;
    services.delayedEventLimiter.ratelimit(key);
  };
  const ownerOf = (r: Requester | null) => r?.userId;

  // The path form deployed clients use. No token needed: the delay ID is the capability.
  for (const action of ACTIONS) {
    app.post(`${MSC4140_PREFIX}/delayed_events/:delayId/${action}`, { onRequest: optionalAuth, schema: { params: DelayParams } }, async (request) => {
      limit(request);
      await delayed.act(request.params.delayId, action, { owner: ownerOf(request.requester) });
      return {};
    });
  }

  // The older body form, which matrix-js-sdk falls back to.
  app.post(
    `${MSC4140_PREFIX}/delayed_events/:delayId`,
    // `action` is checked here rather than by the schema: a wrong value is M_INVALID_PARAM, whatever its type.
    { onRequest: optionalAuth, schema: { params: DelayParams, body: Type.Object({ action: Type.Unknown() }) } },
    async (request) => {
      limit(request);
      const action = request.body.action as DelayedAction;
      if (typeof action !== "string" || !ACTIONS.includes(action)) {
        throw Errors.invalidParam(`action must be one of ${ACTIONS.join(", ")}`);
      }
      await delayed.act(request.params.delayId, action, { owner: ownerOf(request.requester) });
      return {};
    },
  );

  app.get(
    `${MSC4140_PREFIX}/delayed_events`,
    {
      onRequest: requiredAuth,
      schema: {
        querystring: Type.Object({
          // matrix-js-sdk sends one status; Synapse accepts the parameter repeated.
          status: Type.Optional(Type.Union([Status, Type.Array(Status)])),
          delay_id: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())])),
          from: Type.Optional(Type.String()),
        }),
      },
    },
    async (request) => {
      const ids = request.query.delay_id;
      const statuses = request.query.status === undefined ? [] : [request.query.status].flat();
      return delayed.list(requester(request), {
        status: statuses.length === 1 ? statuses[0] : undefined,
        delayIds: ids === undefined ? undefined : Array.isArray(ids) ? ids : [ids],
      });
    },
  );

  app.get(`${MSC4140_PREFIX}/delayed_events/:delayId`, { onRequest: requiredAuth, schema: { params: DelayParams } }, async (request) => {
    // The shape matrix-js-sdk's `_unstable_getDelayedEvent` declares, plus the list item's fields.
    const record = await delayed.get(requester(request), request.params.delayId);
    return lookupView(record);
  });

  // The latest MSC4140 draft: authenticated, idempotent management and a status lookup.
  for (const action of ACTIONS) {
    app.post(`/_matrix/client/v1/delayed_events/:delayId/${action}`, { onRequest: requiredAuth, schema: { params: DelayParams } }, async (request) => {
      limit(request);
      await delayed.act(request.params.delayId, action, { owner: requester(request).userId, idempotent: true });
      return {};
    });
  }
  app.get("/_matrix/client/v1/delayed_events/:delayId", { onRequest: requiredAuth, schema: { params: DelayParams } }, async (request) =>
    statusView(await delayed.get(requester(request), request.params.delayId)),
  );

  app.put(
    "/_matrix/client/v3/rooms/:roomId/delayed_event/:eventType/:txnId",
    {
      onRequest: authHook(services.auth, "required"),
      schema: {
        params: Type.Object({ roomId: Type.String(), eventType: Type.String({ minLength: 1 }), txnId: Type.String({ minLength: 1 }) }),
        body: Type.Object({
          // Checked by parseDelay, so that a bad delay answers M_INVALID_PARAM as on /send.
          delay_ms: Type.Unknown(),
          state_key: Type.Optional(Type.String()),
          content: Type.Record(Type.String(), Type.Unknown()),
        }),
      },
    },
    async (request) => {
      const b = request.body;
      if (b.delay_ms === undefined) throw Errors.missingParam("Missing parameter: delay_ms");
      if (typeof b.delay_ms !== "number") throw Errors.invalidParam("delay_ms must be a non-negative integer of milliseconds");
      return delayed.schedule(requester(request), {
        roomId: request.params.roomId,
        type: request.params.eventType,
        stateKey: b.state_key,
        content: b.content,
        delayMs: delayed.parseDelay(b.delay_ms),
      });
    },
  );
}
