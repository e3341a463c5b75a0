import { Type } from "../../json_schema.js";

export const pushFields = {
  ip_range_blacklist: Type.Array(Type.String({ minLength: 1 }), {
    default: [],
    description:
      "Address ranges (CIDR) the server never connects to when a user or another server chooses the destination (push gateways named by pushers, federation), added to the private, loopback, link-local and reserved ranges that are always refused.",
  }),
  ip_range_whitelist: Type.Array(Type.String({ minLength: 1 }), {
    default: [],
    description:
      "Address ranges (CIDR) allowed for those connections even though a blacklist, built-in or configured, covers them, e.g. a push gateway or a homeserver of a private federation on the local network.",
  }),
  push: Type.Object(
    {
      enabled: Type.Boolean({
        default: true,
        description:
          "Deliver push notifications to the push gateways of users' pushers. Off, pushers can still be set and notification counts still work, but nothing is sent; once it is on again, what notified meanwhile is sent, less what the users have read by then and what is more than a day old.",
      }),
      include_content: Type.Boolean({
        default: true,
        description:
          "Send the event's content to push gateways with each notification. Off, gateways still get the event's ID, room, type, sender and display names, but not its content. Pushers asking for `format: event_id_only` get only the event's ID and room in any case.",
      }),
    },
    { additionalProperties: false, default: {}, description: "Push notifications (HTTP pushers, the Push Gateway API)." },
  ),
};
