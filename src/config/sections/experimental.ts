import { Type } from "../../json_schema.js";
import { duration } from "../types.js";

export const experimentalFields = {
  max_event_delay_duration: duration({
    default: "24h",
    description: "Longest delay a delayed event (MSC4140) may ask for.",
  }),
  experimental_features: Type.Object(
    {
      msc4143_enabled: Type.Boolean({ default: true, description: "MatrixRTC transport discovery: `rtc/transports`, and `rtc_foci` in `/.well-known/matrix/client`. When false, both are gone and `/versions` says `org.matrix.msc4143: false`." }),
      msc4140_enabled: Type.Boolean({ default: true, description: "Delayed events." }),
      msc4140_max_delayed_events_per_user: Type.Integer({
        minimum: 1,
        default: 100,
        description: "Pending delayed events one user may have.",
      }),
      msc4354_enabled: Type.Boolean({ default: true, description: "Sticky events." }),
      msc4075_call_rules: Type.Boolean({
        default: true,
        description:
          "Synapse's two MatrixRTC ringing push rules (`.org.matrix.msc4075.rule.rtc.invite_for_me` and `…invite_for_room`): a call notification that mentions the user, or the room from a sender allowed to notify it, rings.",
      }),
    },
    { additionalProperties: false, default: {}, description: "Switches for features whose MSC is not merged yet. All on by default." },
  ),
};
