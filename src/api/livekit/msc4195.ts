/**
 * MSC4195's homeserver flow, at `/_matrix/client/v1/rtc/livekit` and under the
 * `io.element.msc4195` prefix that matrix-js-sdk 43 calls: the caller's access
 * token replaces the OpenID token. Without `livekit` configured the routes do
 * not exist, and the 404 `M_UNRECOGNIZED` tells clients the feature is not there.
 */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";

export const MSC4195_PREFIX = "/_matrix/client/unstable/io.element.msc4195/rtc/livekit";
export const RTC_LIVEKIT_V1_PREFIX = "/_matrix/client/v1/rtc/livekit";

const Member = Type.Object({
  id: Type.String({ minLength: 1 }),
  claimed_device_id: Type.Optional(Type.String({ minLength: 1 })),
});

const tokenFields = {
  url: Type.Optional(Type.String()),
  server_name: Type.Optional(Type.String()),
  room_id: Type.String({ minLength: 1 }),
  slot_id: Type.String({ minLength: 1 }),
  // matrix-js-sdk 43 sends `member`; MSC4195's newest text names the same thing `member_id`.
  member: Type.Optional(Member),
  member_id: Type.Optional(Type.String({ minLength: 1 })),
};

export function registerMsc4195Routes(app: App, services: Services): void {
  const lk = services.livekit;
  if (!lk) return;
  // MSC4195 lets guests take part in calls.
  const onRequest = authHook(services.auth, "required", { allowGuest: true });
  for (const prefix of [RTC_LIVEKIT_V1_PREFIX, MSC4195_PREFIX]) {
    app.post(`${prefix}/get_token`, { onRequest, schema: { body: Type.Object(tokenFields) } }, async (request) => {
      const who = requester(request);
      // One call per join; the transports limit (`rc_rtc_transports`) is generous enough for both.
      services.rtcLimiter.ratelimit(who.userId);
      return lk.client.getToken(who, request.body);
    });
    app.post(
      `${prefix}/delegate_delayed_leave`,
      { onRequest, schema: { body: Type.Object({ ...tokenFields, delay_id: Type.String({ minLength: 1 }) }) } },
      async (request) => {
        const who = requester(request);
        services.rtcLimiter.ratelimit(who.userId);
        return lk.client.delegate(who, request.body);
      },
    );
  }
}
