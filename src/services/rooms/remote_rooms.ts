/**
 * Rooms resident on other servers, as the room service sees them: the federation side it is
 * handed (`RemoteRooms`), and where a join or a leave must go through another server.
 */
import { pduOf, serverNameOf } from "../../events/index.js";
import type { Storage } from "../../storage/interfaces.js";

/** Rooms resident on other servers (federation), as the room service needs them. */
export interface RemoteRooms {
  /** A remote alias's room and the servers that know it; 404 when its server says so. */
  resolveAlias(alias: string): Promise<{ roomId: string; servers: string[] }>;
  /** True when one of our users is joined, so the room's state is here. */
  isResident(roomId: string): Promise<boolean>;
  join(userId: string, roomId: string, servers: readonly string[], content: Record<string, unknown>): Promise<string>;
  invite(inviter: string, roomId: string, target: string, content: Record<string, unknown>): Promise<string>;
  /** Knocks on a room resident elsewhere; the knock is kept here out of band. */
  knock(userId: string, roomId: string, servers: readonly string[], content: Record<string, unknown>): Promise<string>;
  leaveUnjoined(userId: string, roomId: string, servers: readonly string[]): Promise<void>;
}

/**
 * Where a join must go through federation: a room (or another server's alias) whose state is not
 * here. The servers to ask: those given, the alias's, the inviter's, and the room ID's own.
 */
export async function remoteJoinTarget(
  storage: Storage,
  remote: RemoteRooms,
  serverName: string,
  roomIdOrAlias: string,
  via: readonly string[],
): Promise<{ roomId: string; servers: string[]; resident: boolean } | undefined> {
  const servers = [...via];
  let roomId = roomIdOrAlias;
  if (roomIdOrAlias.startsWith("#")) {
    const local = await storage.rooms.getAlias(roomIdOrAlias);
    if (local || roomIdOrAlias.endsWith(`:${serverName}`)) return undefined;
    const found = await remote.resolveAlias(roomIdOrAlias);
    roomId = found.roomId;
    servers.push(...found.servers);
  } else if (!roomIdOrAlias.startsWith("!")) {
    return undefined;
  }
  if (await remote.isResident(roomId)) return { roomId, servers, resident: true };
  return { roomId, servers: [...new Set([...servers, ...(await serversKnowing(storage, roomId))])], resident: false };
}

/** Servers that know a room we are not in: the inviters', those of a knock's stripped state, and the one in a room ID that names one (before version 12). */
export async function serversKnowing(storage: Storage, roomId: string): Promise<string[]> {
  const out: string[] = [];
  for (const m of await storage.rooms.membersOf(roomId, "invite")) {
    const event = await storage.rooms.getEvent(m.eventId);
    const server = event ? serverNameOf(event.sender) : undefined;
    if (server) out.push(server);
  }
  // A knock keeps the stripped state it was answered with: their senders' servers are in the room (room version 12 IDs name none).
  for (const m of await storage.rooms.membersOf(roomId, "knock")) {
    const event = await storage.rooms.getEvent(m.eventId);
    const carried = event ? pduOf(event).unsigned?.knock_room_state : undefined;
    for (const e of Array.isArray(carried) ? carried : []) {
      const server = typeof e?.sender === "string" ? serverNameOf(e.sender) : undefined;
      if (server) out.push(server);
    }
  }
  const colon = roomId.indexOf(":");
  if (colon > 0) out.push(roomId.slice(colon + 1));
  return out;
}
