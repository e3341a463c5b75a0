import { Type } from "../../json_schema.js";

export const keyFields = {
  signing_key_path: Type.Optional(
    Type.String({
      minLength: 1,
      description: "The server's ed25519 signing key, in Synapse's key-file format. Generated at first start when missing.",
      docDefault: "`data/<server_name>.signing.key`",
    }),
  ),
};
