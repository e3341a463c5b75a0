/** Typing notifications, read receipts and read markers. */
import { Type } from "../../json_schema.js";
import { optionalBody } from "../../http/hooks.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

export function registerReceiptRoutes(app: App, services: Services): void {
  const onRequest = authHook(services.auth, "required", { allowGuest: true });

  const TypingParams = Type.Object({ roomId: Type.String(), userId: Type.String() });
  const TypingBody = Type.Object({ typing: Type.Boolean(), timeout: Type.Optional(Type.Integer({ minimum: 0 })) });
  for (const url of clientPaths("/rooms/:roomId/typing/:userId")) {
    app.put(url, { onRequest, schema: { params: TypingParams, body: TypingBody } }, async (request) => {
      const { roomId, userId } = request.params;
      await services.typing.setTyping(requester(request), roomId, userId, request.body.typing, request.body.timeout);
      return {};
    });
  }

  const ReceiptParams = Type.Object({ roomId: Type.String(), receiptType: Type.String(), eventId: Type.String() });
  // The body is optional in practice (older clients send none); `thread_id` is checked by the service.
  const ReceiptBody = Type.Object({ thread_id: Type.Optional(Type.Unknown()) });
  for (const url of clientPaths("/rooms/:roomId/receipt/:receiptType/:eventId")) {
    app.post(url, { onRequest, preValidation: optionalBody, schema: { params: ReceiptParams, body: ReceiptBody } }, async (request) => {
      const p = request.params;
      await services.receipts.receipt(requester(request), p.roomId, p.receiptType, p.eventId, request.body.thread_id);
      return {};
    });
  }

  const MarkersBody = Type.Object({
    "m.fully_read": Type.Optional(Type.String()),
    "m.read": Type.Optional(Type.String()),
    "m.read.private": Type.Optional(Type.String()),
  });
  for (const url of clientPaths("/rooms/:roomId/read_markers")) {
    app.post(url, { onRequest, schema: { params: Type.Object({ roomId: Type.String() }), body: MarkersBody } }, async (request) => {
      await services.receipts.readMarkers(requester(request), request.params.roomId, request.body);
      return {};
    });
  }
}
