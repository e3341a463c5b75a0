import { Type } from "../../json_schema.js";
import { ratelimit } from "../types.js";

export const ratelimitFields = {
  rc_message: ratelimit({
    default: { per_second: 0.2, burst_count: 10 },
    description: "Messages a user may send (per user).",
  }),
  rc_login: Type.Object(
    {
      address: ratelimit({ default: { per_second: 0.003, burst_count: 5 }, description: "Login attempts per client IP." }),
      account: ratelimit({ default: { per_second: 0.003, burst_count: 5 }, description: "Successful logins per account." }),
      failed_attempts: ratelimit({
        default: { per_second: 0.17, burst_count: 3 },
        description: "Failed logins per account.",
      }),
    },
    { additionalProperties: false, default: {}, description: "Login rate limits." },
  ),
  rc_registration: ratelimit({
    default: { per_second: 0.17, burst_count: 3 },
    description: "Registrations per client IP.",
  }),
  rc_delayed_event_mgmt: ratelimit({
    default: { per_second: 1, burst_count: 20 },
    description:
      "Delayed-event management calls (restart, cancel, send), per user or per IP when unauthenticated. Clients restart every ~5 s.",
  }),
  rc_rtc_transports: ratelimit({
    default: { per_second: 1, burst_count: 10 },
    description: "RTC transport discovery (`rtc/transports`) per user. Clients call it once per call or cache it for a day.",
  }),
};
