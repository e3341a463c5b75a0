/** MSC4143 transport discovery, at the unstable and the stable path. */
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";

export const RTC_TRANSPORT_PATHS = [
  "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports",
  "/_matrix/client/v1/rtc/transports",
];

export function registerRtcRoutes(app: App, services: Services): void {
  // Off means the route does not exist, which clients read as "not supported".
  if (!services.config.features.msc4143) return;
  const onRequest = authHook(services.auth, "required", { allowGuest: true });
  // The list is fixed at start, so its JSON is too. The handler is synchronous and returns the
  // body for Fastify to send (see `writeResponsesPerTurn`). A rate limit refusal is thrown.
  const body = JSON.stringify({ rtc_transports: services.rtc.transports() });
  for (const url of RTC_TRANSPORT_PATHS) {
    app.get(url, { onRequest }, (request, reply) => {
      services.rtcLimiter.ratelimit(requester(request).userId);
      reply.type("application/json; charset=utf-8");
      return body;
    });
  }
}
