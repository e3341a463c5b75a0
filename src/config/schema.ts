/** The whole config file: one schema, composed from one module per section. */
import { Type, type Static } from "../json_schema.js";
import { databaseFields } from "./sections/database.js";
import { experimentalFields } from "./sections/experimental.js";
import { federationFields } from "./sections/federation.js";
import { keyFields } from "./sections/keys.js";
import { livekitFields } from "./sections/livekit.js";
import { matrixRtcFields } from "./sections/matrixrtc.js";
import { mediaFields } from "./sections/media.js";
import { pushFields } from "./sections/push.js";
import { ratelimitFields } from "./sections/ratelimiting.js";
import { registrationFields } from "./sections/registration.js";
import { serverFields } from "./sections/server.js";
import { voipFields } from "./sections/voip.js";
import { workerFields } from "./sections/workers.js";

export const SECTIONS = [
  { title: "Server", fields: serverFields },
  { title: "Database", fields: databaseFields },
  { title: "Worker processes", fields: workerFields },
  { title: "Signing key", fields: keyFields },
  { title: "Registration", fields: registrationFields },
  { title: "Rate limits", fields: ratelimitFields },
  { title: "Delayed events and experimental features", fields: experimentalFields },
  { title: "MatrixRTC", fields: matrixRtcFields },
  { title: "LiveKit authorisation service", fields: livekitFields },
  { title: "TURN (VoIP)", fields: voipFields },
  { title: "Media repository", fields: mediaFields },
  { title: "Push notifications and outgoing requests", fields: pushFields },
  { title: "Federation", fields: federationFields },
] as const;

export const ConfigSchema = Type.Object(
  {
    ...serverFields,
    ...databaseFields,
    ...workerFields,
    ...keyFields,
    ...registrationFields,
    ...ratelimitFields,
    ...experimentalFields,
    ...matrixRtcFields,
    ...livekitFields,
    ...voipFields,
    ...mediaFields,
    ...pushFields,
    ...federationFields,
  },
  { additionalProperties: false },
);

export type RawConfig = Static<typeof ConfigSchema>;
