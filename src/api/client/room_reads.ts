/** Reading rooms: state, members, events, `/messages`, `/context`. */
import { Type } from "../../json_schema.js";
import { Errors } from "../../errors.js";
import { MAX_JSON_NESTING, nestsDeeperThan } from "../../json_nesting.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { parseFilter, type RoomEventFilter } from "../../services/sync/filters.js";
import { authHook, requester } from "../auth.js";
import { clientPaths } from "../paths.js";

const RoomParams = Type.Object({ roomId: Type.String() });
const Membership = Type.Union(["join", "invite", "knock", "leave", "ban"].map((m) => Type.Literal(m)));

function roomEventFilter(raw: string | undefined): RoomEventFilter | undefined {
  if (raw === undefined) return undefined;
  if (nestsDeeperThan(raw, MAX_JSON_NESTING)) throw Errors.invalidParam(`filter may nest at most ${MAX_JSON_NESTING} levels deep`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw Errors.invalidParam("filter is not valid JSON");
  }
  // A RoomEventFilter has the same fields as the `room.timeline` part of a filter.
  return parseFilter({ room: { timeline: parsed } }).room?.timeline;
}

export function registerRoomReadRoutes(app: App, services: Services): void {
  const onRequest = authHook(services.auth, "required");
  const reads = services.roomReads;

  for (const url of clientPaths("/rooms/:roomId/state")) {
    app.get(url, { onRequest, schema: { params: RoomParams } }, async (request) => reads.state(requester(request), request.params.roomId));
  }
  for (const url of clientPaths("/rooms/:roomId/members")) {
    app.get(
      url,
      {
        onRequest,
        schema: {
          params: RoomParams,
          querystring: Type.Object({
            at: Type.Optional(Type.String()),
            membership: Type.Optional(Membership),
            not_membership: Type.Optional(Membership),
          }),
        },
      },
      async (request) => ({
        chunk: await reads.members(requester(request), request.params.roomId, {
          at: request.query.at,
          membership: request.query.membership,
          notMembership: request.query.not_membership,
        }),
      }),
    );
  }
  for (const url of clientPaths("/rooms/:roomId/joined_members")) {
    app.get(url, { onRequest, schema: { params: RoomParams } }, async (request) => reads.joinedMembers(requester(request), request.params.roomId));
  }
  const EventParams = Type.Object({ roomId: Type.String(), eventId: Type.String() });
  for (const url of clientPaths("/rooms/:roomId/event/:eventId")) {
    app.get(url, { onRequest, schema: { params: EventParams } }, async (request) =>
      reads.event(requester(request), request.params.roomId, request.params.eventId),
    );
  }
  for (const url of clientPaths("/rooms/:roomId/messages")) {
    app.get(
      url,
      {
        onRequest,
        schema: {
          params: RoomParams,
          querystring: Type.Object({
            from: Type.Optional(Type.String()),
            to: Type.Optional(Type.String()),
            dir: Type.Union([Type.Literal("b"), Type.Literal("f")]),
            limit: Type.Optional(Type.Integer({ minimum: 0 })),
            filter: Type.Optional(Type.String()),
          }),
        },
      },
      async (request) => {
        const q = request.query;
        return reads.messages(requester(request), request.params.roomId, {
          from: q.from,
          to: q.to,
          dir: q.dir,
          limit: q.limit ?? 10,
          filter: roomEventFilter(q.filter),
        });
      },
    );
  }
  for (const url of clientPaths("/rooms/:roomId/context/:eventId")) {
    app.get(
      url,
      {
        onRequest,
        schema: {
          params: EventParams,
          querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 0 })), filter: Type.Optional(Type.String()) }),
        },
      },
      async (request) =>
        reads.context(requester(request), request.params.roomId, request.params.eventId, request.query.limit ?? 10, roomEventFilter(request.query.filter)),
    );
  }
}
