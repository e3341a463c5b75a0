/** Which route groups each listener resource serves. */
import type { ListenerResource } from "../config/sections/server.js";
import type { App } from "../http/server.js";
import type { Services } from "../services/index.js";
import { declareRequester } from "./auth.js";
import { registerRegistrationTokenRoutes } from "./admin/registration_tokens.js";
import { registerSharedSecretRoutes } from "./admin/register.js";
import { registerAccountRoutes } from "./client/account.js";
import { registerCapabilitiesRoutes } from "./client/capabilities.js";
import { registerDelayedEventRoutes } from "./client/delayed_events.js";
import { registerDeviceRoutes } from "./client/devices.js";
import { registerLoginRoutes } from "./client/login.js";
import { registerOpenIdRoutes } from "./client/openid.js";
import { registerProfileRoutes } from "./client/profile.js";
import { registerRegistrationRoutes } from "./client/register.js";
import { registerRoomReadRoutes } from "./client/room_reads.js";
import { registerRoomRoutes } from "./client/rooms.js";
import { registerRtcRoutes } from "./client/rtc.js";
import { registerSendRoutes } from "./client/send.js";
import { registerVersionsRoutes } from "./client/versions.js";
import { registerVoipRoutes } from "./client/voip.js";
import { registerWellKnownRoutes } from "./client/wellknown.js";
import { registerAccountDataRoutes } from "./client/account_data.js";
import { registerPushRuleRoutes } from "./client/push_rules.js";
import { registerReceiptRoutes } from "./client/receipts.js";
import { registerSyncRoutes } from "./client/sync.js";
import { registerSlidingSyncRoutes } from "./client/sliding_sync.js";
import { registerKeyRoutes } from "./client/keys.js";
import { registerRoomKeyRoutes } from "./client/room_keys.js";
import { registerToDeviceRoutes } from "./client/to_device.js";
import { registerNotificationRoutes } from "./client/notifications.js";
import { registerPusherRoutes } from "./client/pushers.js";
import { registerKeyServerRoutes } from "./federation/keys.js";
import { registerOpenIdUserInfoRoutes } from "./federation/openid.js";
import { registerFederationQueryRoutes } from "./federation/query.js";
import { registerFederationRtcRoutes } from "./federation/rtc.js";
import { registerFederationUserKeyRoutes } from "./federation/user_keys.js";
import { registerFederationSendRoutes } from "./federation/send.js";
import { registerFederationRoomRoutes } from "./federation/rooms.js";
import { registerFederationVersionRoutes } from "./federation/version.js";
import { registerLiveKitJwtRoutes } from "./livekit/jwt_service.js";
import { registerMsc4195Routes } from "./livekit/msc4195.js";
import { registerMediaRoutes } from "./media/routes.js";

export function registerRoutes(app: App, services: Services, resources: Set<ListenerResource>): void {
  declareRequester(app);
  // Every listener answers health checks, as Synapse's do.
  app.get("/health", (_request, reply) => {
    reply.type("text/plain");
    return "OK";
  });
  if (resources.has("client")) {
    registerVersionsRoutes(app, services);
    registerWellKnownRoutes(app, services);
    registerCapabilitiesRoutes(app, services);
    registerRegistrationRoutes(app, services);
    registerLoginRoutes(app, services);
    registerAccountRoutes(app, services);
    registerDeviceRoutes(app, services);
    registerProfileRoutes(app, services);
    registerSharedSecretRoutes(app, services);
    registerRegistrationTokenRoutes(app, services);
    registerRoomRoutes(app, services);
    registerSendRoutes(app, services);
    registerRoomReadRoutes(app, services);
    registerDelayedEventRoutes(app, services);
    registerRtcRoutes(app, services);
    registerOpenIdRoutes(app, services);
    registerVoipRoutes(app, services);
    registerSyncRoutes(app, services);
    registerSlidingSyncRoutes(app, services);
    registerAccountDataRoutes(app, services);
    registerReceiptRoutes(app, services);
    registerPushRuleRoutes(app, services);
    registerNotificationRoutes(app, services);
    registerPusherRoutes(app, services);
    registerKeyRoutes(app, services);
    registerRoomKeyRoutes(app, services);
    registerToDeviceRoutes(app, services);
    // Both exist only when `livekit` is configured.
    registerLiveKitJwtRoutes(app, services);
    registerMsc4195Routes(app, services);
  }
  // Synapse serves the media repository on `client` and `media` listeners alike.
  if (resources.has("client") || resources.has("media")) registerMediaRoutes(app, services);
  // The LiveKit JWT service checks OpenID tokens here, so it must answer even
  // where the rest of federation is off: any listener with `openid` or `federation`.
  if (resources.has("openid") || resources.has("federation")) {
    registerOpenIdUserInfoRoutes(app, services);
  }
  // Signing keys: part of `federation`, or on their own (`keys`), as in Synapse.
  if (resources.has("federation") || resources.has("keys")) registerKeyServerRoutes(app, services);
  if (resources.has("federation")) {
    registerFederationVersionRoutes(app);
    registerFederationQueryRoutes(app, services);
    registerFederationRtcRoutes(app, services);
    registerFederationUserKeyRoutes(app, services);
    registerFederationSendRoutes(app, services);
    registerFederationRoomRoutes(app, services);
  }
}
