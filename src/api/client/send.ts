/** Sending events: messages, state and redactions. */
import { Type } from "../../json_schema.js";
import { optionalBody } from "../../http/hooks.js";
import { Errors } from "../../errors.js";
import { MSC4354_MAX_STICKY_MS } from "../../events/index.js";
import type { App } from "../../http/server.js";
import type { Requester } from "../../services/auth.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

const Content = Type.Record(Type.String(), Type.Unknown());

const DELAY = "org.matrix.msc4140.delay";
const PARENT_DELAY = "org.matrix.msc4140.parent_delay_id";
const STICKY = "org.matrix.msc4354.sticky_duration_ms";

/** The unstable query parameters that turn a send into a delayed and/or sticky one. */
const SendQuery = Type.Object({
  [DELAY]: Type.Optional(Type.String()),
  [PARENT_DELAY]: Type.Optional(Type.String({ minLength: 1 })),
  [STICKY]: Type.Optional(Type.String()),
});
type SendQueryType = { [DELAY]?: string; [PARENT_DELAY]?: string; [STICKY]?: string };

function stickyDuration(services: Services, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  if (!services.config.features.msc4354) throw Errors.invalidParam("Sticky events are not enabled on this server");
  if (!/^[0-9]+$/.test(raw) || Number(raw) > MSC4354_MAX_STICKY_MS) {
    throw Errors.invalidParam(`${STICKY} must be an integer from 0 to ${MSC4354_MAX_STICKY_MS}`);
  }
  return Number(raw);
}

/**
 * Sends now, or schedules when a delay is asked for. A server that ignored
 * the delay would send a call's "leave" at join time, so it is never ignored.
 */
async function sendOrSchedule(
  services: Services,
  who: Requester,
  query: SendQueryType,
  event: { roomId: string; type: string; stateKey?: string; content: Record<string, unknown>; txnId?: string },
): Promise<{ event_id: string } | { delay_id: string }> {
  const stickyDurationMs = stickyDuration(services, query[STICKY]);
  const delayMs = services.delayedEvents.parseDelay(query[DELAY]);
  if (delayMs !== undefined || query[PARENT_DELAY] !== undefined) {
    if (delayMs === undefined && !services.delayedEvents.enabled) throw Errors.forbidden("Delayed events are not enabled on this server");
    // On PUT /send the transaction ID makes a retry answer the same delay ID instead of scheduling again.
    const txn = event.txnId === undefined ? undefined : { deviceId: who.deviceId, key: JSON.stringify(["send", event.roomId, event.type, event.txnId]) };
    return services.delayedEvents.schedule(
      who,
      {
        roomId: event.roomId,
        type: event.type,
        stateKey: event.stateKey,
        content: event.content,
        delayMs,
        parentDelayId: query[PARENT_DELAY],
        stickyDurationMs,
      },
      txn,
    );
  }
  const opts = { stickyDurationMs };
  if (event.stateKey !== undefined) {
    return { event_id: await services.rooms.setState(who, event.roomId, event.type, event.stateKey, event.content, opts) };
  }
  return { event_id: await services.rooms.send(who, event.roomId, event.type, event.content, event.txnId, opts) };
}

export function registerSendRoutes(app: App, services: Services): void {
  const onRequest = authHook(services.auth, "required");
  const { rooms } = services;

  const SendParams = Type.Object({ roomId: Type.String(), eventType: Type.String({ minLength: 1 }), txnId: Type.String({ minLength: 1 }) });
  for (const url of clientPaths("/rooms/:roomId/send/:eventType/:txnId")) {
    app.put(url, { onRequest, schema: { params: SendParams, body: Content, querystring: SendQuery } }, async (request) => {
      const p = request.params;
      return sendOrSchedule(services, requester(request), request.query, {
        roomId: p.roomId,
        type: p.eventType,
        content: request.body,
        txnId: p.txnId,
      });
    });
  }
  for (const url of clientPaths("/rooms/:roomId/send/:eventType")) {
    app.post(
      url,
      {
        onRequest,
        schema: {
          params: Type.Object({ roomId: Type.String(), eventType: Type.String({ minLength: 1 }) }),
          body: Content,
          querystring: SendQuery,
        },
      },
      async (request) =>
        sendOrSchedule(services, requester(request), request.query, {
          roomId: request.params.roomId,
          type: request.params.eventType,
          content: request.body,
        }),
    );
  }

  const StateParams = Type.Object({ roomId: Type.String(), eventType: Type.String({ minLength: 1 }), stateKey: Type.String() });
  const StateTypeParams = Type.Object({ roomId: Type.String(), eventType: Type.String({ minLength: 1 }) });
  for (const url of clientPaths("/rooms/:roomId/state/:eventType/:stateKey")) {
    app.put(url, { onRequest, schema: { params: StateParams, body: Content, querystring: SendQuery } }, async (request) => {
      const p = request.params;
      return sendOrSchedule(services, requester(request), request.query, {
        roomId: p.roomId,
        type: p.eventType,
        stateKey: p.stateKey,
        content: request.body,
      });
    });
    app.get(url, { onRequest, schema: { params: StateParams } }, async (request) => {
      const p = request.params;
      return services.roomReads.stateContent(requester(request), p.roomId, p.eventType, p.stateKey);
    });
  }
  // The empty state key has its own path form, with and without the trailing slash.
  for (const url of clientPaths("/rooms/:roomId/state/:eventType").flatMap((u) => [u, `${u}/`])) {
    app.put(url, { onRequest, schema: { params: StateTypeParams, body: Content, querystring: SendQuery } }, async (request) => {
      const p = request.params;
      return sendOrSchedule(services, requester(request), request.query, {
        roomId: p.roomId,
        type: p.eventType,
        stateKey: "",
        content: request.body,
      });
    });
    app.get(url, { onRequest, schema: { params: StateTypeParams } }, async (request) =>
      services.roomReads.stateContent(requester(request), request.params.roomId, request.params.eventType, ""),
    );
  }

  const RedactParams = Type.Object({ roomId: Type.String(), eventId: Type.String(), txnId: Type.String({ minLength: 1 }) });
  for (const url of clientPaths("/rooms/:roomId/redact/:eventId/:txnId")) {
    app.put(url, { onRequest, preValidation: optionalBody, schema: { params: RedactParams, body: Type.Object({ reason: Type.Optional(Type.String()) }) } }, async (request) => {
      const p = request.params;
      return { event_id: await rooms.redactEvent(requester(request), p.roomId, p.eventId, p.txnId, request.body.reason) };
    });
  }
}
