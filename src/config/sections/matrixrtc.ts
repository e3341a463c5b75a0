import { Type } from "../../json_schema.js";

export const matrixRtcFields = {
  matrix_rtc: Type.Object(
    {
      transports: Type.Array(
        Type.Object(
          {
            type: Type.String({
              minLength: 1,
              description: "Transport type: `livekit` (or `msc4195.livekit`); other types are served as written, with a warning.",
            }),
            // Left open here: other transport types are served as written, whatever these hold.
            // `resolveTransports` checks them for the LiveKit types.
            url: Type.Optional(
              Type.Unknown({
                "x-doc-type": "string",
                description:
                  "For `livekit` transports: the SFU's absolute `wss://` URL (MSC4195, Synapse 1.163), e.g. `wss://sfu.example.org`; clients that read it ask the homeserver for their LiveKit token. `ws://` only for loopback hosts. A `livekit` transport needs this, `livekit_service_url`, or both, with the same rules against credentials and secret-looking parameters.",
              }),
            ),
            livekit_service_url: Type.Optional(
              Type.Unknown({
                "x-doc-type": "string",
                description:
                  "For `livekit` transports (this, `url`, or both): the absolute `https://` URL of the LiveKit JWT service that clients ask for SFU tokens, e.g. `https://matrix.example.org/livekit/jwt`. `http://` only for loopback hosts. It may not carry a user name, a password or a secret-looking parameter in its query or fragment. Other keys are refused for `livekit` transports, and served as written for other types.",
              }),
            ),
          },
          { additionalProperties: true },
        ),
        {
          default: [],
          description:
            "RTC transports offered to clients, most preferred first, e.g. `{type: livekit, url: wss://…, livekit_service_url: https://…}`.",
        },
      ),
      advertise_in_well_known: Type.Boolean({
        default: true,
        description: "Also list the transports as `org.matrix.msc4143.rtc_foci` in `/.well-known/matrix/client`.",
      }),
    },
    { additionalProperties: false, default: {}, description: "MatrixRTC (calls)." },
  ),
};
