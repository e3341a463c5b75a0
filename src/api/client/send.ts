/** Sending events: messages, state and redactions. */
import { Type } from "typebox";
import { optionalBody } from "../../http/hooks.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

const Content = Type.Record(Type.String(), Type.Unknown());

export function registerSendRoutes(app: App, services: Services): void {
  const onRequest = authHook(services.auth, "required");
  const { rooms } = services;

  const SendParams = Type.Object({ roomId: Type.String(), eventType: Type.String({ minLength: 1 }), txnId: Type.String({ minLength: 1 }) });
  for (const url of clientPaths("/rooms/:roomId/send/:eventType/:txnId")) {
    app.put(url, { onRequest, schema: { params: SendParams, body: Content } }, async (request) => {
      const p = request.params;
      return { event_id: await rooms.send(requester(request), p.roomId, p.eventType, request.body, p.txnId) };
    });
  }
  for (const url of clientPaths("/rooms/:roomId/send/:eventType")) {
    app.post(
      url,
      { onRequest, schema: { params: Type.Object({ roomId: Type.String(), eventType: Type.String({ minLength: 1 }) }), body: Content } },
      async (request) => ({
        event_id: await rooms.send(requester(request), request.params.roomId, request.params.eventType, request.body),
      }),
    );
  }

  const StateParams = Type.Object({ roomId: Type.String(), eventType: Type.String({ minLength: 1 }), stateKey: Type.String() });
  const StateTypeParams = Type.Object({ roomId: Type.String(), eventType: Type.String({ minLength: 1 }) });
  for (const url of clientPaths("/rooms/:roomId/state/:eventType/:stateKey")) {
    app.put(url, { onRequest, schema: { params: StateParams, body: Content } }, async (request) => {
      const p = request.params;
      return { event_id: await rooms.setState(requester(request), p.roomId, p.eventType, p.stateKey, request.body) };
    });
    app.get(url, { onRequest, schema: { params: StateParams } }, async (request) => {
      const p = request.params;
      return services.roomReads.stateContent(requester(request), p.roomId, p.eventType, p.stateKey);
    });
  }
  // The empty state key has its own path form, with and without the trailing slash.
  for (const url of clientPaths("/rooms/:roomId/state/:eventType").flatMap((u) => [u, `${u}/`])) {
    app.put(url, { onRequest, schema: { params: StateTypeParams, body: Content } }, async (request) => {
      const p = request.params;
      return { event_id: await rooms.setState(requester(request), p.roomId, p.eventType, "", request.body) };
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
