/** `/devices` and `/delete_devices`. */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import type { AuthDict } from "../../services/uia.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

const AuthBody = Type.Optional(Type.Record(Type.String(), Type.Unknown()));
const DeviceParams = Type.Object({ deviceId: Type.String() });

export function registerDeviceRoutes(app: App, services: Services): void {
  const onRequest = authHook(services.auth, "required");
  const { sessions } = services;
  for (const url of clientPaths("/devices")) {
    app.get(url, { onRequest }, async (request) => ({ devices: await sessions.listDevices(requester(request)) }));
  }
  for (const url of clientPaths("/devices/:deviceId")) {
    app.get(url, { onRequest, schema: { params: DeviceParams } }, async (request) =>
      sessions.getDevice(requester(request), request.params.deviceId),
    );
    app.put(
      url,
      { onRequest, schema: { params: DeviceParams, body: Type.Object({ display_name: Type.Optional(Type.String({ maxLength: 1000 })) }) } },
      async (request) => {
        await sessions.renameDevice(requester(request), request.params.deviceId, request.body.display_name ?? null);
        return {};
      },
    );
    app.delete(url, { onRequest, schema: { params: DeviceParams } }, async (request) => {
      // The body is optional on DELETE; its absence starts UIA.
      const body = (request.body ?? {}) as { auth?: AuthDict };
      await sessions.deleteDevice(requester(request), request.params.deviceId, body.auth);
      return {};
    });
  }
  for (const url of clientPaths("/delete_devices")) {
    app.post(
      url,
      { onRequest, schema: { body: Type.Object({ devices: Type.Array(Type.String()), auth: AuthBody }) } },
      async (request) => {
        await sessions.deleteDevices(requester(request), request.body.devices, request.body.auth as AuthDict);
        return {};
      },
    );
  }
}
