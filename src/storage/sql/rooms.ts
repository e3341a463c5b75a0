/** Rooms, events, state and memberships: one set of queries for both dialects (in room_queries.ts). */
import {
  HISTORY_FLOOR,
  type MembershipRecord,
  type NewEvent,
  type RoomRecord,
  type RoomStore,
  type RoomTip,
  type StateMap,
  type StoredEvent,
} from "../rooms.js";
import type { CurrentStateEntry } from "../room_dag.js";
import type { Executor, Transaction } from "./executor.js";
import { Q, toEvent, toMembership, toRoom, toStateMap, type EventRow, type MembershipRow, type RoomRow } from "./room_queries.js";


/**
 * Makes an event the room's current state for its key, and for a member event the member's
 * membership (with its history, which sync reads, and un-forgetting on a join or invite).
 */
export async function setCurrentStateEntry(tx: Executor, roomId: string, e: CurrentStateEntry): Promise<void> {
  await tx.run(Q.upsertState, [roomId, e.type, e.stateKey, e.eventId, e.streamOrdering]);
  if (e.type !== "m.room.member" || e.membership === null) return;
  await tx.run(Q.upsertMembership, [roomId, e.stateKey, e.membership, e.eventId, e.streamOrdering]);
  await tx.run(Q.insertMembershipHistory, [e.streamOrdering, roomId, e.stateKey, e.membership, e.eventId]);
  if (e.membership === "join" || e.membership === "invite") await tx.run(Q.unforget, [e.stateKey, roomId]);
}

export class SqlRoomStore implements RoomStore {
  constructor(private readonly db: Executor) {}

  async createRoom(room: RoomRecord): Promise<void> {
    await this.db.run("INSERT INTO rooms (room_id, room_version, creator, created_ts, is_public) VALUES (?, ?, ?, ?, ?)", [
      room.roomId,
      room.roomVersion,
      room.creator,
      room.createdTs,
      room.isPublic ? 1 : 0,
    ]);
  }

  async getRoom(roomId: string): Promise<RoomRecord | undefined> {
    const row = await this.db.get<RoomRow>("SELECT * FROM rooms WHERE room_id = ?", [roomId]);
    return row && toRoom(row);
  }

  async lockRoom(roomId: string): Promise<boolean> {
    return (await this.lockRoomVersion(roomId)) !== undefined;
  }

  async lockRoomVersion(roomId: string): Promise<string | undefined> {
    return (await this.db.get<{ room_version: string }>(Q.lockRoom, [roomId]))?.room_version;
  }

  async setRoomPublic(roomId: string, isPublic: boolean): Promise<void> {
    await this.db.run("UPDATE rooms SET is_public = ? WHERE room_id = ?", [isPublic ? 1 : 0, roomId]);
  }

  appendEvent(e: NewEvent): Promise<number> {
    return this.db.transaction((tx) => this.#append(tx, e));
  }

  async #append(tx: Transaction, e: NewEvent): Promise<number> {
    const ordering = await tx.nextPosition("events");
    await tx.run(Q.insertEvent, [
      ordering,
      e.eventId,
      e.roomId,
      e.type,
      e.stateKey,
      e.sender,
      e.originServerTs,
      e.depth,
      e.json,
      e.txn?.deviceId ?? null,
      e.txn?.txnId ?? null,
      e.stateGroup ?? null,
      e.outlier ? 1 : 0,
    ]);
    if (e.txn) await tx.run(Q.insertTxn, [e.txn.userId, e.txn.deviceId, e.txn.key ?? e.txn.txnId, e.eventId]);
    if (e.stickyUntil !== undefined) {
      await tx.run(Q.pruneSticky, [e.originServerTs]);
      await tx.run(Q.insertSticky, [ordering, e.roomId, e.stickyUntil]);
    }
    if (e.stateKey !== null && e.updatesCurrentState !== false) {
      await setCurrentStateEntry(tx, e.roomId, { type: e.type, stateKey: e.stateKey, eventId: e.eventId, streamOrdering: ordering, membership: e.membership });
    }
    return ordering;
  }

  async getTip(roomId: string): Promise<RoomTip | undefined> {
    const row = await this.db.get<{ event_id: string; depth: number; stream_ordering: number }>(Q.tip, [roomId]);
    return row && { eventId: row.event_id, depth: row.depth, streamOrdering: row.stream_ordering };
  }

  async getEvent(eventId: string): Promise<StoredEvent | undefined> {
    const row = await this.db.get<EventRow>(Q.event, [eventId]);
    return row && toEvent(row);
  }

  async getEventByTxn(userId: string, deviceId: string, key: string): Promise<string | undefined> {
    return (await this.db.get<{ event_id: string }>(Q.txn, [userId, deviceId, key]))?.event_id;
  }

  async redactEvent(eventId: string, redactedJson: string, redactedBy: string): Promise<void> {
    await this.db.run(Q.redact, [redactedJson, redactedBy, eventId]);
  }

  async currentState(roomId: string): Promise<StateMap> {
    return toStateMap(await this.db.all<EventRow>(Q.currentState, [roomId]));
  }

  async currentStateEvents(roomId: string, keys: readonly (readonly [string, string])[]): Promise<StateMap> {
    if (keys.length === 0) return new Map();
    return toStateMap(await this.db.all<EventRow>(Q.currentStateEvents, [JSON.stringify(keys), roomId]));
  }

  async currentStateEvent(roomId: string, type: string, stateKey: string): Promise<StoredEvent | undefined> {
    const row = await this.db.get<EventRow>(Q.currentStateEvent, [roomId, type, stateKey]);
    return row && toEvent(row);
  }

  async stateAt(roomId: string, streamOrdering: number): Promise<StateMap> {
    return toStateMap(await this.db.all<EventRow>(Q.stateAt, [roomId, streamOrdering]));
  }

  async stateDelta(roomId: string, from: number, to: number): Promise<StateMap> {
    if (to <= from) return new Map();
    return toStateMap(await this.db.all<EventRow>(Q.stateDelta, [roomId, from, to]));
  }

  async eventsBetween(roomId: string, from: number, to: number, limit: number) {
    const rows = await this.db.all<EventRow>(Q.between, [roomId, from, to, limit + 1]);
    const limited = rows.length > limit;
    return { events: rows.slice(0, limit).reverse().map(toEvent), limited };
  }

  async eventsBetweenMany(roomIds: readonly string[], from: number, to: number, limit: number) {
    const out = new Map<string, { events: StoredEvent[]; limited: boolean }>();
    if (roomIds.length === 0) return out;
    let rows: EventRow[];
    if (this.db.dialect === "postgres") {
      rows = await this.db.all<EventRow>(Q.betweenMany, [JSON.stringify(roomIds), from, to, limit + 1]);
    } else {
      rows = [];
      for (const roomId of roomIds) rows.push(...(await this.db.all<EventRow>(Q.between, [roomId, from, to, limit + 1])));
    }
    const byRoom = new Map<string, EventRow[]>(roomIds.map((id) => [id, []]));
    for (const r of rows) byRoom.get(r.room_id)?.push(r);
    for (const [roomId, list] of byRoom) {
      list.sort((a, b) => b.stream_ordering - a.stream_ordering);
      out.set(roomId, { events: list.slice(0, limit).reverse().map(toEvent), limited: list.length > limit });
    }
    return out;
  }

  async paginate(roomId: string, from: number, dir: "b" | "f", limit: number, to?: number): Promise<StoredEvent[]> {
    const rows =
      dir === "b"
        ? await this.db.all<EventRow>(Q.back, [roomId, from, to ?? HISTORY_FLOOR, limit])
        : await this.db.all<EventRow>(Q.forward, [roomId, from, to ?? Number.MAX_SAFE_INTEGER, limit]);
    return rows.map(toEvent);
  }

  async liveStickyEvents(roomId: string, from: number, to: number, now: number): Promise<StoredEvent[]> {
    return (await this.db.all<EventRow>(Q.liveSticky, [roomId, from, to, now])).map(toEvent);
  }

  async liveStickyEventsMany(roomIds: readonly string[], from: number, to: number, now: number): Promise<StoredEvent[]> {
    if (roomIds.length === 0 || to <= from) return [];
    return (await this.db.all<EventRow>(Q.liveStickyMany, [JSON.stringify(roomIds), from, to, now])).map(toEvent);
  }

  async getEvents(eventIds: readonly string[]): Promise<StoredEvent[]> {
    if (eventIds.length === 0) return [];
    return (await this.db.all<EventRow>(Q.eventsByIds, [JSON.stringify(eventIds)])).map(toEvent);
  }

  async latestOfTypes(caps: readonly (readonly [string, number])[], types: readonly string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    if (caps.length === 0 || types.length === 0) return out;
    const rows = await this.db.all<{ room_id: string; position: number | string | null }>(Q.latestOfTypes, [
      JSON.stringify(types),
      JSON.stringify(caps),
    ]);
    // PostgreSQL answers BIGINT aggregates as text.
    for (const r of rows) if (r.position !== null) out.set(r.room_id, Number(r.position));
    return out;
  }

  async currentStateMany(
    roomIds: readonly string[],
    types: readonly string[],
    keys: readonly (readonly [string, string])[],
  ): Promise<StoredEvent[]> {
    if (roomIds.length === 0 || (types.length === 0 && keys.length === 0)) return [];
    const params = [JSON.stringify(roomIds), JSON.stringify(types), JSON.stringify(keys)];
    return (await this.db.all<EventRow>(Q.currentStateMany, params)).map(toEvent);
  }

  async forgottenRooms(userId: string): Promise<string[]> {
    return (await this.db.all<{ room_id: string }>("SELECT room_id FROM forgotten_rooms WHERE user_id = ?", [userId])).map((r) => r.room_id);
  }

  async membershipsIn(roomIds: readonly string[]): Promise<MembershipRecord[]> {
    if (roomIds.length === 0) return [];
    return (await this.db.all<MembershipRow>(Q.membershipsIn, [JSON.stringify(roomIds)])).map(toMembership);
  }

  async membership(roomId: string, userId: string): Promise<MembershipRecord | undefined> {
    const row = await this.db.get<MembershipRow>(Q.membership, [roomId, userId]);
    return row && toMembership(row);
  }

  async membershipsOf(userId: string): Promise<MembershipRecord[]> {
    return (await this.db.all<MembershipRow>(Q.membershipsOf, [userId])).map(toMembership);
  }

  async membersOf(roomId: string, membership: string): Promise<MembershipRecord[]> {
    return (await this.db.all<MembershipRow>(Q.membersOf, [roomId, membership])).map(toMembership);
  }

  async membershipChangesAround(userId: string, roomIds: readonly string[], from: number, to: number): Promise<MembershipRecord[]> {
    if (to <= from) return [];
    return (await this.db.all<MembershipRow>(Q.membershipChangesAround, [from, to, userId, JSON.stringify(roomIds)])).map(toMembership);
  }

  async joinedAmong(userIds: readonly string[], roomIds: readonly string[]): Promise<MembershipRecord[]> {
    if (userIds.length === 0 || roomIds.length === 0) return [];
    return (await this.db.all<MembershipRow>(Q.joinedAmong, [JSON.stringify(userIds), JSON.stringify(roomIds)])).map(toMembership);
  }

  async membershipChanges(userId: string, from: number, to: number): Promise<MembershipRecord[]> {
    if (to <= from) return [];
    return (await this.db.all<MembershipRow>(Q.membershipChanges, [userId, from, to])).map(toMembership);
  }

  async everJoined(userId: string, roomId: string, upTo: number): Promise<boolean> {
    return (await this.db.get(Q.everJoined, [userId, roomId, upTo])) !== undefined;
  }

  async roomsWithEventsBetween(roomIds: string[], from: number, to: number): Promise<string[]> {
    if (roomIds.length === 0 || to <= from) return [];
    return (await this.db.all<{ room_id: string }>(Q.roomsWithEvents, [JSON.stringify(roomIds), from, to])).map((r) => r.room_id);
  }

  async forgetRoom(userId: string, roomId: string): Promise<void> {
    await this.db.run("INSERT INTO forgotten_rooms (user_id, room_id) VALUES (?, ?) ON CONFLICT DO NOTHING", [userId, roomId]);
  }

  async isForgotten(userId: string, roomId: string): Promise<boolean> {
    return (await this.db.get("SELECT 1 AS one FROM forgotten_rooms WHERE user_id = ? AND room_id = ?", [userId, roomId])) !== undefined;
  }

  async setAlias(alias: string, roomId: string, creator: string): Promise<boolean> {
    const n = await this.db.run("INSERT INTO room_aliases (alias, room_id, creator) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [
      alias,
      roomId,
      creator,
    ]);
    return n > 0;
  }

  async getAlias(alias: string) {
    const row = await this.db.get<{ room_id: string; creator: string }>("SELECT room_id, creator FROM room_aliases WHERE alias = ?", [
      alias,
    ]);
    return row && { roomId: row.room_id, creator: row.creator };
  }

  async deleteAlias(alias: string): Promise<boolean> {
    return (await this.db.run("DELETE FROM room_aliases WHERE alias = ?", [alias])) > 0;
  }

  async aliasesOf(roomId: string): Promise<string[]> {
    return (await this.db.all<{ alias: string }>("SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY alias", [roomId])).map(
      (r) => r.alias,
    );
  }
}
