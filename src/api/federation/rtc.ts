/**
 * MSC4195 over federation: `POST /_matrix/federation/v1/rtc/livekit/get_token` and the unstable
 * `io.element.msc4195` form. Only with `livekit` configured; otherwise 404 `M_UNRECOGNIZED`.
 */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { federationAuthHook, originOf } from "./auth.js";

const Body = Type.Object({
  user_id: Type.String({ minLength: 1 }),
  url: Type.Optional(Type.String()),
  room_id: Type.String({ minLength: 1 }),
  slot_id: Type.String({ minLength: 1 }),
  member_id: Type.Optional(Type.String({ minLength: 1 })),
  member: Type.Optional(Type.Object({ id: Type.String({ minLength: 1 }), claimed_device_id: Type.Optional(Type.String({ minLength: 1 })) })),
});

export function registerFederationRtcRoutes(app: App, services: Services): void {
  const tokens = services.federatedTokens;
  if (!tokens) return;
  const preValidation = federationAuthHook(services.federation);
  for (const prefix of ["/_matrix/federation/v1", "/_matrix/federation/unstable/io.element.msc4195"]) {
    app.post(`${prefix}/rtc/livekit/get_token`, { preValidation, schema: { body: Body } }, async (request) => tokens.getToken(originOf(request), request.body));
  }
}
