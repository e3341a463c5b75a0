/** Room creation, membership and aliases. */
import { Type } from "../../json_schema.js";
import { optionalBody } from "../../http/hooks.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

const StateEventInput = Type.Object({
  type: Type.String({ minLength: 1 }),
  state_key: Type.Optional(Type.String()),
  content: Type.Record(Type.String(), Type.Unknown()),
});

const CreateRoomBody = Type.Object({
  visibility: Type.Optional(Type.Union([Type.Literal("public"), Type.Literal("private")])),
  room_alias_name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  name: Type.Optional(Type.String()),
  topic: Type.Optional(Type.String()),
  invite: Type.Optional(Type.Array(Type.String())),
  invite_3pid: Type.Optional(Type.Array(Type.Unknown(), { maxItems: 0 })),
  room_version: Type.Optional(Type.String()),
  creation_content: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  initial_state: Type.Optional(Type.Array(StateEventInput)),
  preset: Type.Optional(
    Type.Union([Type.Literal("private_chat"), Type.Literal("public_chat"), Type.Literal("trusted_private_chat")]),
  ),
  is_direct: Type.Optional(Type.Boolean()),
  power_level_content_override: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
});

const RoomParams = Type.Object({ roomId: Type.String() });
const Reason = Type.Optional(Type.String({ maxLength: 4096 }));
const TargetBody = Type.Object({ user_id: Type.String(), reason: Reason });

export function registerRoomRoutes(app: App, services: Services): void {
  const onRequest = authHook(services.auth, "required");
  const { rooms } = services;

  for (const url of clientPaths("/createRoom")) {
    app.post(url, { onRequest, schema: { body: CreateRoomBody } }, async (request) => {
      const b = request.body;
      return rooms.createRoom(requester(request), {
        preset: b.preset,
        visibility: b.visibility,
        name: b.name,
        topic: b.topic,
        roomAliasName: b.room_alias_name,
        invite: b.invite ?? [],
        initialState: b.initial_state ?? [],
        powerLevelContentOverride: b.power_level_content_override,
        creationContent: b.creation_content,
        isDirect: b.is_direct ?? false,
        roomVersion: b.room_version,
      });
    });
  }

  const joinBody = { body: Type.Object({ reason: Reason }) };
  const preValidation = optionalBody;
  // `via` (spec v1.12) and its older name `server_name` list servers to join through; each may repeat.
  const Servers = Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())]));
  const serversOf = (...lists: (string | string[] | undefined)[]) => lists.flatMap((v) => (v === undefined ? [] : Array.isArray(v) ? v : [v]));
  // Joining and knocking take the same request: a room ID or alias, a reason, servers to go through.
  for (const action of ["join", "knock"] as const) {
    for (const url of clientPaths(`/${action}/:roomIdOrAlias`)) {
      app.post(
        url,
        {
          onRequest,
          preValidation,
          schema: { params: Type.Object({ roomIdOrAlias: Type.String() }), querystring: Type.Object({ via: Servers, server_name: Servers }), ...joinBody },
        },
        async (request) => ({
          room_id: await rooms[action](requester(request), request.params.roomIdOrAlias, request.body?.reason, serversOf(request.query.via, request.query.server_name)),
        }),
      );
    }
  }
  for (const url of clientPaths("/rooms/:roomId/join")) {
    app.post(url, { onRequest, preValidation, schema: { params: RoomParams, ...joinBody } }, async (request) => ({
      room_id: await rooms.join(requester(request), request.params.roomId, request.body?.reason),
    }));
  }
  for (const url of clientPaths("/rooms/:roomId/leave")) {
    app.post(url, { onRequest, preValidation, schema: { params: RoomParams, ...joinBody } }, async (request) => {
      await rooms.leave(requester(request), request.params.roomId, request.body?.reason);
      return {};
    });
  }
  for (const url of clientPaths("/rooms/:roomId/forget")) {
    app.post(url, { onRequest, preValidation, schema: { params: RoomParams } }, async (request) => {
      await rooms.forget(requester(request), request.params.roomId);
      return {};
    });
  }
  const targeted = {
    invite: rooms.invite.bind(rooms),
    kick: rooms.kick.bind(rooms),
    ban: rooms.ban.bind(rooms),
    unban: rooms.unban.bind(rooms),
  };
  for (const [action, run] of Object.entries(targeted)) {
    for (const url of clientPaths(`/rooms/:roomId/${action}`)) {
      app.post(url, { onRequest, schema: { params: RoomParams, body: TargetBody } }, async (request) => {
        await run(requester(request), request.params.roomId, request.body.user_id, request.body.reason);
        return {};
      });
    }
  }

  const AliasParams = Type.Object({ alias: Type.String() });
  for (const url of clientPaths("/directory/room/:alias")) {
    app.get(url, { schema: { params: AliasParams } }, async (request) => services.aliases.resolve(request.params.alias));
    app.put(
      url,
      { onRequest, schema: { params: AliasParams, body: Type.Object({ room_id: Type.String() }) } },
      async (request) => {
        await services.aliases.create(requester(request), request.params.alias, request.body.room_id);
        return {};
      },
    );
    app.delete(url, { onRequest, schema: { params: AliasParams } }, async (request) => {
      await services.aliases.delete(requester(request), request.params.alias);
      return {};
    });
  }
  for (const url of clientPaths("/directory/list/room/:roomId")) {
    app.get(url, { schema: { params: RoomParams } }, async (request) => services.aliases.visibility(request.params.roomId));
    app.put(
      url,
      {
        onRequest,
        schema: {
          params: RoomParams,
          body: Type.Object({ visibility: Type.Optional(Type.Union([Type.Literal("public"), Type.Literal("private")])) }),
        },
      },
      async (request) => {
        // The spec's default is "public".
        await services.aliases.setVisibility(requester(request), request.params.roomId, request.body.visibility ?? "public");
        return {};
      },
    );
  }
  for (const url of clientPaths("/rooms/:roomId/aliases")) {
    app.get(url, { onRequest, schema: { params: RoomParams } }, async (request) => ({
      aliases: await services.aliases.list(requester(request), request.params.roomId),
    }));
  }
  for (const url of clientPaths("/joined_rooms")) {
    app.get(url, { onRequest }, async (request) => ({ joined_rooms: await services.roomReads.joinedRooms(requester(request)) }));
  }
}
