import { Type } from "../../json_schema.js";
import { duration, secretString } from "../types.js";

export const voipFields = {
  turn_uris: Type.Array(Type.String({ pattern: "^turns?:" , allowed: "a turn: or turns: URI" }), {
    default: [],
    description: "TURN server URIs handed to clients, e.g. `turn:turn.example.com:3478?transport=udp`.",
  }),
  turn_shared_secret: Type.Optional(
    secretString({ description: "Shared secret of the TURN server (coturn `static-auth-secret`)." }),
  ),
  turn_username: Type.Optional(Type.String({ description: "Static TURN username, when no shared secret is used." })),
  turn_password: Type.Optional(secretString({ description: "Static TURN password." })),
  turn_user_lifetime: duration({ default: "1h", description: "Lifetime of minted TURN credentials." }),
  turn_allow_guests: Type.Boolean({ default: true, description: "Give TURN credentials to guests too." }),
};
