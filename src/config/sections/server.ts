import { Type } from "../../json_schema.js";
import { DEFAULT_ROOM_VERSION, ROOM_VERSIONS } from "../../events/room_versions.js";
import { size } from "../types.js";

export const LISTENER_RESOURCES = ["client", "federation", "keys", "openid", "health", "media"] as const;
export type ListenerResource = (typeof LISTENER_RESOURCES)[number];

const listener = Type.Object(
  {
    port: Type.Integer({ minimum: 0, maximum: 65535, description: "TCP port to listen on; 0 picks a free one (for tests)." }),
    bind_addresses: Type.Array(Type.String({ minLength: 1 }), {
      minItems: 1,
      default: ["127.0.0.1"],
      description: "Addresses to bind. Use `::` for every IPv6 and IPv4 address, `0.0.0.0` for every IPv4 address.",
    }),
    type: Type.Literal("http", { default: "http", description: "Listener type. Only `http` exists." }),
    tls: Type.Literal(false, {
      default: false,
      description: "TLS termination is left to a reverse proxy; only `false` is accepted.",
    }),
    x_forwarded: Type.Boolean({
      default: false,
      description:
        "Trust `X-Forwarded-For` (and `-Proto`/`-Host`) on this listener. Enable only behind a reverse proxy that sets them.",
    }),
    resources: Type.Array(
      Type.Object(
        {
          names: Type.Array(Type.Union(LISTENER_RESOURCES.map((n) => Type.Literal(n))), {
            minItems: 1,
            description: "API areas served: `client`, `federation` (with the signing keys), `keys` (just `/_matrix/key/v2`), `openid` (just the OpenID userinfo endpoint), `health`, `media`.",
            allowed: `a list of: ${LISTENER_RESOURCES.join(", ")}`,
          }),
          compress: Type.Optional(Type.Boolean({ description: "Accepted for Synapse compatibility; ignored." })),
        },
        { additionalProperties: false },
      ),
      {
        default: [{ names: ["client", "federation"] }],
        description: "Which APIs this listener serves.",
      },
    ),
  },
  { additionalProperties: false },
);

export const serverFields = {
  server_name: Type.String({
    minLength: 1,
    pattern: "^[A-Za-z0-9.\\-]+(:[0-9]{1,5})?$|^\\[[0-9A-Fa-f:.]+\\](:[0-9]{1,5})?$",
    description: "The domain in user IDs (`@alice:server_name`). It cannot change once users exist.",
    allowed: "a host name, optionally with :port",
  }),
  public_baseurl: Type.Optional(
    Type.String({
      pattern: "^https?://[^/?#]+(/[^?#]*)?$",
      description: "The URL clients use to reach this server, as served in `.well-known`.",
      allowed: "an absolute http:// or https:// URL",
      docDefault: "`https://<server_name>/`",
    }),
  ),
  listeners: Type.Array(listener, {
    minItems: 1,
    default: [
      { port: 8008, bind_addresses: ["127.0.0.1"], type: "http", x_forwarded: false, resources: [{ names: ["client", "federation"] }] },
    ],
    description: "HTTP listeners. Each item: `port`, `bind_addresses`, `type`, `tls`, `x_forwarded`, `resources[].names`.",
  }),
  serve_server_wellknown: Type.Boolean({
    default: false,
    description: "Serve `/.well-known/matrix/server`, pointing federation at `public_baseurl`'s host (port 443 for https).",
  }),
  extra_well_known_client_content: Type.Record(Type.String(), Type.Unknown(), {
    default: {},
    description:
      "Extra keys merged into `/.well-known/matrix/client`. It cannot override `m.homeserver`. A hand-written `org.matrix.msc4143.rtc_foci` list in it must meet the rules of `matrix_rtc.transports`.",
  }),
  max_request_body_size: size({
    default: "1M",
    description: "Largest request body accepted; larger ones get 413 `M_TOO_LARGE`.",
  }),
  // YAML reads an unquoted `12` as a number; Synapse takes it, so this does too.
  default_room_version: Type.Union(
    [
      ...Object.keys(ROOM_VERSIONS).map((v) => Type.Literal(v)),
      ...Object.keys(ROOM_VERSIONS)
        .filter((v) => /^[0-9]+$/.test(v))
        .map((v) => Type.Literal(Number(v))),
    ],
    {
      default: DEFAULT_ROOM_VERSION,
      description:
        "The room version of rooms created without a `room_version` in the request, as `/capabilities` advertises it. " +
        "`12` gives creators unlimited power and room IDs derived from the create event.",
      allowed: `one of ${Object.keys(ROOM_VERSIONS).join(", ")}`,
    },
  ),
  log_level: Type.Union(
    ["trace", "debug", "info", "warn", "error", "fatal"].map((l) => Type.Literal(l)),
    {
      default: "info",
      description:
        "Minimum level of log lines. `info` gives one line per request: request id, method, path, status, " +
        "duration, user and client IP address, with access and registration tokens redacted. Lines are JSON on stdout, written together " +
        "at the end of each event-loop turn, or readable text when stdout is a terminal.",
      allowed: "one of trace, debug, info, warn, error, fatal",
    },
  ),
};
