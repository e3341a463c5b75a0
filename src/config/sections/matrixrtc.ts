import { Type } from "typebox";

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
          },
          { additionalProperties: true },
        ),
        {
          default: [],
          description:
            "RTC transports offered to clients, most preferred first, e.g. `{type: livekit, livekit_service_url: https://…}`.",
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
