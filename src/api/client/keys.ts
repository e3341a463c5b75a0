/** End-to-end encryption keys: `/keys/upload`, `/keys/query`, `/keys/claim`, `/keys/changes`. */
import { Type } from "typebox";
import type { App } from "../../http/server.js";
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

export function registerKeyRoutes(app: App, services: Services): void {
  // Guests may take part in encrypted rooms (spec: "Guest Access" lists the key endpoints).
  const onRequest = authHook(services.auth, "required", { allowGuest: true });
  const keys = services.deviceKeys;

  for (const url of clientPaths("/keys/upload")) {
    app.post(url, { onRequest, schema: { body: UploadBody } }, async (request) => keys.upload(requester(request), request.body));
  }
  for (const url of clientPaths("/keys/query")) {
    app.post(url, { onRequest, schema: { body: QueryBody } }, async (request) => keys.query(request.body));
  }
  for (const url of clientPaths("/keys/claim")) {
    app.post(url, { onRequest, schema: { body: ClaimBody } }, async (request) => keys.claim(request.body));
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
