import { Type } from "../../json_schema.js";
import { secretString } from "../types.js";

export const registrationFields = {
  enable_registration: Type.Boolean({ default: false, description: "Let anyone register through `/register`." }),
  enable_registration_without_verification: Type.Boolean({
    default: false,
    description:
      "Confirms open registration with no verification step (no email, no token). Required alongside `enable_registration` unless `registration_requires_token` is set, as in Synapse.",
  }),
  registration_requires_token: Type.Boolean({
    default: false,
    description: "Registration needs a token (`m.login.registration_token`), made with the admin API.",
  }),
  registration_shared_secret: Type.Optional(
    secretString({
      description:
        "Enables `POST /_synapse/admin/v1/register` (as used by `register_new_matrix_user`) for whoever knows it.",
    }),
  ),
  allow_guest_access: Type.Boolean({ default: false, description: "Allow guest accounts (`/register?kind=guest`)." }),
};
