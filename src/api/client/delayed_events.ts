/** MSC4140 delayed events: the accepted API (v1/v3) beside the unstable forms deployed clients send. */
import type { FastifyRequest } from "fastify";
import { Type } from "../../json_schema.js";
import { Errors } from "../../errors.js";
import type { App } from "../../http/server.js";
import type { Requester } from "../../services/auth.js";
import type { DelayedAction } from "../../services/delayed_events/service.js";
import { acceptedView, lookupView } from "../../services/delayed_events/views.js";
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

  // The accepted MSC4140: unauthenticated, idempotent management (the delay ID is the capability).
  for (const action of ACTIONS) {
    app.post(`/_matrix/client/v1/delayed_events/:delayId/${action}`, { onRequest: optionalAuth, schema: { params: DelayParams } }, async (request) => {
      limit(request);
      await delayed.act(request.params.delayId, action, { accepted: true });
      return {};
    });
  }
  app.get("/_matrix/client/v1/delayed_events/:delayId", { onRequest: requiredAuth, schema: { params: DelayParams } }, async (request) =>
    acceptedView(await delayed.get(requester(request), request.params.delayId)),
  );
  // Query parameters are checked by the service, so that every unsupported value is M_INVALID_PARAM.
  app.get("/_matrix/client/v1/delayed_events", { onRequest: requiredAuth }, async (request) =>
    delayed.listPage(requester(request), request.query as Record<string, unknown>),
  );

  const ScheduleParams = Type.Object({ roomId: Type.String(), eventType: Type.String({ minLength: 1 }), txnId: Type.String({ minLength: 1 }) });
  const ScheduleBody = Type.Object({
    // Checked by parseBodyDelay, so that a bad delay answers M_INVALID_PARAM. Drafts called it `delay_ms`.
    delay: Type.Optional(Type.Unknown()),
    delay_ms: Type.Optional(Type.Unknown()),
    state_key: Type.Optional(Type.String()),
    content: Type.Record(Type.String(), Type.Unknown()),
  });
  for (const prefix of ["/_matrix/client/v3", MSC4140_PREFIX]) {
    app.put(
      `${prefix}/rooms/:roomId/delayed_event/:eventType/:txnId`,
      { onRequest: requiredAuth, schema: { params: ScheduleParams, body: ScheduleBody } },
      async (request) => {
        const { roomId, eventType, txnId } = request.params;
        const b = request.body;
        const who = requester(request);
        const delayMs = delayed.parseBodyDelay(b.delay !== undefined ? b.delay : b.delay_ms);
        // A retry with the same transaction ID answers the same delay ID, as on /send.
        const txn = { deviceId: who.deviceId, key: JSON.stringify(["delayed_event", roomId, eventType, txnId]) };
        return delayed.schedule(who, { roomId, type: eventType, stateKey: b.state_key, content: b.content, delayMs }, txn);
      },
    );
  }
}
