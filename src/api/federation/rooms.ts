/**
 * The Server-Server room endpoints: joining, leaving and knocking through this server (send_*),
 * invites to our users (v2), and reading a room's DAG (events, state, auth chains, gaps,
 * history). Thin: each parses and hands to `services.federatedRooms`.
 */
import { Type } from "../../json_schema.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { federationAuthHook, originOf } from "./auth.js";

const F = "/_matrix/federation";
const RoomUser = Type.Object({ roomId: Type.String(), userId: Type.String() });
const RoomEvent = Type.Object({ roomId: Type.String(), eventId: Type.String() });
const AtEvent = Type.Object({ event_id: Type.String() });
/** A query parameter that may repeat: one value parses as a string, several as a list. */
const Repeated = Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())]));
const list = (v: string | string[] | undefined) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
/** send_join answers carry a room's whole state; the event sent is one PDU. */
const PDU_BYTES = 65_536 * 2;

export function registerFederationRoomRoutes(app: App, services: Services): void {
  const rooms = services.federatedRooms;
  const preValidation = federationAuthHook(services.federation);

  app.get(`${F}/v1/make_join/:roomId/:userId`, { preValidation, schema: { params: RoomUser, querystring: Type.Object({ ver: Repeated }) } }, async (request) =>
    rooms.resident.makeMembership(originOf(request), request.params.roomId, request.params.userId, "join", list(request.query.ver)),
  );
  app.get(`${F}/v1/make_leave/:roomId/:userId`, { preValidation, schema: { params: RoomUser } }, async (request) =>
    rooms.resident.makeMembership(originOf(request), request.params.roomId, request.params.userId, "leave"),
  );
  app.put(`${F}/v2/send_join/:roomId/:eventId`, { preValidation, bodyLimit: PDU_BYTES, schema: { params: RoomEvent } }, async (request) =>
    rooms.resident.sendMembership(originOf(request), request.params.roomId, request.params.eventId, request.body, "join"),
  );
  app.put(`${F}/v2/send_leave/:roomId/:eventId`, { preValidation, bodyLimit: PDU_BYTES, schema: { params: RoomEvent } }, async (request) =>
    rooms.resident.sendMembership(originOf(request), request.params.roomId, request.params.eventId, request.body, "leave"),
  );
  app.get(`${F}/v1/make_knock/:roomId/:userId`, { preValidation, schema: { params: RoomUser, querystring: Type.Object({ ver: Repeated }) } }, async (request) =>
    rooms.resident.makeMembership(originOf(request), request.params.roomId, request.params.userId, "knock", list(request.query.ver)),
  );
  app.put(`${F}/v1/send_knock/:roomId/:eventId`, { preValidation, bodyLimit: PDU_BYTES, schema: { params: RoomEvent } }, async (request) =>
    rooms.resident.sendMembership(originOf(request), request.params.roomId, request.params.eventId, request.body, "knock"),
  );
  app.put(
    `${F}/v2/invite/:roomId/:eventId`,
    {
      preValidation,
      bodyLimit: PDU_BYTES * 4,
      schema: {
        params: RoomEvent,
        body: Type.Object({ event: Type.Record(Type.String(), Type.Unknown()), room_version: Type.String(), invite_room_state: Type.Optional(Type.Array(Type.Unknown())) }),
      },
    },
    async (request) => rooms.resident.receiveInvite(originOf(request), request.params.roomId, request.params.eventId, request.body),
  );

  app.get(`${F}/v1/event/:eventId`, { preValidation, schema: { params: Type.Object({ eventId: Type.String() }) } }, async (request) =>
    rooms.source.event(originOf(request), request.params.eventId),
  );
  app.get(`${F}/v1/state_ids/:roomId`, { preValidation, schema: { params: Type.Object({ roomId: Type.String() }), querystring: AtEvent } }, async (request) =>
    rooms.source.stateIds(originOf(request), request.params.roomId, request.query.event_id),
  );
  app.get(`${F}/v1/state/:roomId`, { preValidation, schema: { params: Type.Object({ roomId: Type.String() }), querystring: AtEvent } }, async (request) =>
    rooms.source.state(originOf(request), request.params.roomId, request.query.event_id),
  );
  app.get(`${F}/v1/event_auth/:roomId/:eventId`, { preValidation, schema: { params: RoomEvent } }, async (request) =>
    rooms.source.eventAuth(originOf(request), request.params.roomId, request.params.eventId),
  );
  app.post(
    `${F}/v1/get_missing_events/:roomId`,
    {
      preValidation,
      schema: {
        params: Type.Object({ roomId: Type.String() }),
        body: Type.Object({
          earliest_events: Type.Array(Type.String(), { maxItems: 100 }),
          latest_events: Type.Array(Type.String(), { maxItems: 100 }),
          limit: Type.Optional(Type.Integer({ minimum: 0 })),
          min_depth: Type.Optional(Type.Integer({ minimum: 0 })),
        }),
      },
    },
    async (request) =>
      rooms.source.missingEvents(
        originOf(request),
        request.params.roomId,
        request.body.earliest_events,
        request.body.latest_events,
        request.body.limit ?? 10,
        request.body.min_depth ?? 0,
      ),
  );
  app.get(
    `${F}/v1/backfill/:roomId`,
    { preValidation, schema: { params: Type.Object({ roomId: Type.String() }), querystring: Type.Object({ v: Repeated, limit: Type.Integer({ minimum: 0 }) }) } },
    async (request) => rooms.source.backfill(originOf(request), request.params.roomId, list(request.query.v), request.query.limit),
  );
}
