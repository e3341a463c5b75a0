/**
 * End-to-end encryption keys: `/keys/upload`, `/keys/query`, `/keys/claim`, `/keys/changes`, and
 * cross-signing's `/keys/device_signing/upload` and `/keys/signatures/upload`.
 */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { DeviceSigningUploadBody } from "../../services/e2ee/cross_signing.js";
import type { Services } from "../../services/index.js";
import { parseSyncToken } from "../../services/sync/tokens.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

const KeyMap = Type.Record(Type.String(), Type.Unknown());

const UploadBody = Type.Object({
  device_keys: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  one_time_keys: Type.Optional(KeyMap),
  fallback_keys: Type.Optional(KeyMap),
  "org.matrix.msc2732.fallback_keys": Type.Optional(KeyMap),
});

const QueryBody = Type.Object({
  device_keys: Type.Record(Type.String(), Type.Array(Type.String())),
  timeout: Type.Optional(Type.Integer({ minimum: 0 })),
  token: Type.Optional(Type.String()),
});

const ClaimBody = Type.Object({
  one_time_keys: Type.Record(Type.String(), Type.Record(Type.String(), Type.String())),
  timeout: Type.Optional(Type.Integer({ minimum: 0 })),
});

const SigningKey = Type.Record(Type.String(), Type.Unknown());

const DeviceSigningBody = Type.Object({
  master_key: Type.Optional(SigningKey),
  self_signing_key: Type.Optional(SigningKey),
  user_signing_key: Type.Optional(SigningKey),
  auth: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
});

/** `{user_id: {device_id or key: signed object}}`. */
const SignaturesBody = Type.Record(Type.String(), Type.Record(Type.String(), Type.Record(Type.String(), Type.Unknown())));

export function registerKeyRoutes(app: App, services: Services): void {
  // Guests may take part in encrypted rooms (spec: "Guest Access" lists the key endpoints).
  const onRequest = authHook(services.auth, "required", { allowGuest: true });
  const keys = services.deviceKeys;

  for (const url of clientPaths("/keys/upload")) {
    app.post(url, { onRequest, schema: { body: UploadBody } }, async (request) => keys.upload(requester(request), request.body));
  }
  for (const url of clientPaths("/keys/query")) {
    app.post(url, { onRequest, schema: { body: QueryBody } }, async (request) => services.federatedKeys.query(requester(request), request.body));
  }
  for (const url of clientPaths("/keys/claim")) {
    app.post(url, { onRequest, schema: { body: ClaimBody } }, async (request) => services.federatedKeys.claim(request.body));
  }
  // Cross-signing belongs to accounts, not guests (as in Synapse).
  const accountOnly = authHook(services.auth, "required");
  for (const url of clientPaths("/keys/device_signing/upload")) {
    app.post(url, { onRequest: accountOnly, schema: { body: DeviceSigningBody } }, async (request) =>
      services.crossSigning.uploadKeys(requester(request), request.body as DeviceSigningUploadBody),
    );
  }
  for (const url of clientPaths("/keys/signatures/upload")) {
    app.post(url, { onRequest: accountOnly, schema: { body: SignaturesBody } }, async (request) =>
      services.crossSigning.uploadSignatures(requester(request), request.body),
    );
  }
  for (const url of clientPaths("/keys/changes")) {
    app.get(
      url,
      { onRequest, schema: { querystring: Type.Object({ from: Type.String(), to: Type.String() }) } },
      async (request) => {
        const from = parseSyncToken(request.query.from).deviceLists;
        const to = parseSyncToken(request.query.to).deviceLists;
        return keys.changes(requester(request), from, to);
      },
    );
  }
}
