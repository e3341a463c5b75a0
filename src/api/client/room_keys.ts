/** Server-side key backup: `/room_keys/version` and `/room_keys/keys` in their three scopes. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { KeysBackup } from "../../services/e2ee/key_backup.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

const KeyBackupData = Type.Object({
  first_message_index: Type.Integer({ minimum: 0 }),
  forwarded_count: Type.Integer({ minimum: 0 }),
  is_verified: Type.Boolean(),
  session_data: Type.Record(Type.String(), Type.Unknown()),
});
const RoomKeys = Type.Object({ sessions: Type.Record(Type.String(), KeyBackupData) });
const AllKeys = Type.Object({ rooms: Type.Record(Type.String(), RoomKeys) });

const VersionBody = Type.Object({
  algorithm: Type.String({ minLength: 1 }),
  auth_data: Type.Record(Type.String(), Type.Unknown()),
  version: Type.Optional(Type.String()),
});

const VersionQuery = Type.Object({ version: Type.String() });
const VersionParams = Type.Object({ version: Type.String() });
const RoomParams = Type.Object({ roomId: Type.String() });
const SessionParams = Type.Object({ roomId: Type.String(), sessionId: Type.String() });

export function registerRoomKeyRoutes(app: App, services: Services): void {
  // Guests have no backup (as in Synapse).
  const onRequest = authHook(services.auth, "required");
  const backup = services.keyBackup;
  const userOf = (request: Parameters<typeof requester>[0]) => requester(request).userId;

  for (const url of clientPaths("/room_keys/version")) {
    app.post(url, { onRequest, schema: { body: VersionBody } }, async (request) => backup.createVersion(userOf(request), request.body));
    app.get(url, { onRequest }, async (request) => backup.getVersion(userOf(request)));
  }
  for (const url of clientPaths("/room_keys/version/:version")) {
    const schema = { params: VersionParams };
    app.get(url, { onRequest, schema }, async (request) => backup.getVersion(userOf(request), request.params.version));
    app.put(url, { onRequest, schema: { ...schema, body: VersionBody } }, async (request) =>
      backup.updateVersion(userOf(request), request.params.version, request.body),
    );
    app.delete(url, { onRequest, schema }, async (request) => backup.deleteVersion(userOf(request), request.params.version));
  }

  for (const url of clientPaths("/room_keys/keys")) {
    const schema = { querystring: VersionQuery };
    app.get(url, { onRequest, schema }, async (request) => backup.getKeys(userOf(request), request.query.version, {}));
    app.put(url, { onRequest, schema: { ...schema, body: AllKeys } }, async (request) =>
      backup.putKeys(userOf(request), request.query.version, request.body),
    );
    app.delete(url, { onRequest, schema }, async (request) => backup.deleteKeys(userOf(request), request.query.version, {}));
  }
  for (const url of clientPaths("/room_keys/keys/:roomId")) {
    const schema = { querystring: VersionQuery, params: RoomParams };
    app.get(url, { onRequest, schema }, async (request) =>
      backup.getKeys(userOf(request), request.query.version, { roomId: request.params.roomId }),
    );
    app.put(url, { onRequest, schema: { ...schema, body: RoomKeys } }, async (request) => {
      const keys: KeysBackup = { rooms: { [request.params.roomId]: request.body } };
      return backup.putKeys(userOf(request), request.query.version, keys);
    });
    app.delete(url, { onRequest, schema }, async (request) =>
      backup.deleteKeys(userOf(request), request.query.version, { roomId: request.params.roomId }),
    );
  }
  for (const url of clientPaths("/room_keys/keys/:roomId/:sessionId")) {
    const schema = { querystring: VersionQuery, params: SessionParams };
    app.get(url, { onRequest, schema }, async (request) => backup.getKeys(userOf(request), request.query.version, request.params));
    app.put(url, { onRequest, schema: { ...schema, body: KeyBackupData } }, async (request) => {
      const { roomId, sessionId } = request.params;
      const keys: KeysBackup = { rooms: { [roomId]: { sessions: { [sessionId]: request.body } } } };
      return backup.putKeys(userOf(request), request.query.version, keys);
    });
    app.delete(url, { onRequest, schema }, async (request) => backup.deleteKeys(userOf(request), request.query.version, request.params));
  }
}
