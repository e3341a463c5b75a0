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
  for (const url of RTC_TRANSPORT_PATHS) {
    app.get(url, { onRequest }, async (request) => {
      services.rtcLimiter.ratelimit(requester(request).userId);
      return { rtc_transports: services.rtc.transports() };
    });
  }
}
