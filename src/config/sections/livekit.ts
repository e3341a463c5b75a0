import { Type } from "../../json_schema.js";
import { duration, secretString } from "../types.js";

/**
 * The bundled LiveKit authorisation service: Switchboard answers the
 * lk-jwt-service contract itself, so operators run only LiveKit next to it.
 */
export const livekitFields = {
  livekit: Type.Optional(
    Type.Object(
      {
        url: Type.String({
          pattern: "^wss?://[^/?#]+(/[^?#]*)?$",
          description:
            "WebSocket URL of the LiveKit SFU, as clients connect to it (lk-jwt-service's `LIVEKIT_URL`). Switchboard also calls LiveKit's server API at the same host (https/http) to create rooms.",
          allowed: "a wss:// URL (ws:// only for a loopback host)",
        }),
        api_key: Type.String({
          minLength: 1,
          description: "LiveKit API key (the `iss` of every token; not secret, every token shows it).",
        }),
        api_secret: Type.Optional(
          secretString({ description: "LiveKit API secret that signs the tokens. Set this or `api_secret_path`, not both." }),
        ),
        api_secret_path: Type.Optional(
          Type.String({
            minLength: 1,
            description:
              "File holding the LiveKit API secret (surrounding whitespace is ignored), read at start; relative to the config file. Set this or `api_secret`, not both.",
          }),
        ),
        full_access_homeservers: Type.Optional(
          Type.Array(Type.String({ minLength: 1 }), {
            description:
              "Server names whose users may have LiveKit rooms created and hand over their delayed leave. Others may only join rooms that exist. `[\"*\"]` means everyone.",
            docDefault: "`[<server_name>]`",
          }),
        ),
        path: Type.String({
          default: "/livekit/jwt",
          pattern: "^(/[A-Za-z0-9._~-]+)+$",
          description:
            "Where the lk-jwt-service endpoints (`/get_token`, `/sfu/get`, `/delegate_delayed_leave`, `/healthz`, `/sfu_webhook`) are served, on every listener with `client`. The advertised transport is `public_baseurl` + this path.",
          allowed: "an absolute path without a trailing slash, like /livekit/jwt",
        }),
        sanity_check_interval: duration({
          // lk-jwt-service defaults to off; on, a lost webhook cannot leave a ghost participant behind.
          default: "30s",
          description:
            "How often a handed-over leave re-checks with LiveKit that its participant is still connected, in case a webhook was lost (lk-jwt-service's `LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS`, which is off by default there). 0 turns the check off.",
        }),
        can_update_own_metadata: Type.Boolean({
          default: false,
          description:
            "Whether tokens from the homeserver flow (MSC4195 `rtc/livekit/get_token`) let participants change their own LiveKit name and metadata. MSC4195 says servers SHOULD leave it off, as no MatrixRTC application uses it; tokens from the lk-jwt-service endpoints keep that service's grant.",
        }),
        delegation_min_delay: duration({
          default: 0,
          description:
            "The shortest delayed leave `rtc/livekit/delegate_delayed_leave` accepts (400 `M_INVALID_PARAM` below it). MSC4195 asks clients for at least an hour and lets servers refuse less; 0 accepts any delay.",
        }),
        cs_api_url_overrides: Type.Record(Type.String(), Type.String({ pattern: "^https?://" }), {
          default: {},
          description:
            "Client-Server API base URLs of other homeservers, by server name, for servers whose `/.well-known/matrix/client` cannot be read (lk-jwt-service's `LIVEKIT_CS_API_URL_OVERRIDES`).",
        }),
      },
      {
        additionalProperties: false,
        description:
          "The bundled LiveKit authorisation service (MSC4195, lk-jwt-service's contract). When set, Switchboard issues LiveKit tokens itself and advertises itself as the first `livekit` transport.",
      },
    ),
  ),
};
