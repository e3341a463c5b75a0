/**
 * Room aliases across servers: answering `/_matrix/federation/v1/query/directory` for ours, and
 * asking an alias's server about it (what `GET /_matrix/client/v3/directory/room/{alias}` and
 * joins by alias need for a remote alias). As Synapse: another server's alias here is 400, an
 * unknown one 404 `M_NOT_FOUND`; asking, a 404 there is 404 here and an unreachable server 502.
 */
import { Errors, MatrixError } from "../../errors.js";
import { isValidServerName, serverNameOf, utf8Length } from "../../events/ids.js";
import type { RoomStore } from "../../storage/rooms.js";
import { FederationError, type FederationClient } from "./client.js";

export type AliasAnswer = { room_id: string; servers: string[] };

const MAX_SERVERS = 100;

/** The server of a well-formed alias (`#localpart:server`, at most 255 bytes), or undefined. */
export function aliasServer(alias: string): string | undefined {
  const server = serverNameOf(alias);
  if (!alias.startsWith("#") || alias.indexOf(":") < 2 || utf8Length(alias) > 255 || server === undefined || !isValidServerName(server)) return undefined;
  return server;
}

export class DirectoryQueries {
  constructor(
    private readonly serverName: string,
    private readonly rooms: Pick<RoomStore, "getAlias" | "membersOf">,
    private readonly client: FederationClient,
  ) {}

  /** This server's answer for one of its aliases: the room, and the servers that can help join it, ours first. */
  async serve(alias: string): Promise<AliasAnswer> {
    const server = aliasServer(alias);
    if (server === undefined) throw Errors.invalidParam("`room_alias` is not a room alias");
    if (server !== this.serverName) throw Errors.invalidParam("Room alias is not hosted on this homeserver");
    const found = await this.rooms.getAlias(alias);
    if (!found) throw Errors.notFound(`Room alias ${alias} not found`);
    return { room_id: found.roomId, servers: await this.#withJoinedServers(found.roomId, [this.serverName]) };
  }

  /** Another server's alias, from that server. */
  async fetch(alias: string): Promise<AliasAnswer> {
    const server = aliasServer(alias);
    if (server === undefined) throw Errors.invalidParam(`Invalid room alias: ${alias}`);
    let res;
    try {
      res = await this.client.request(server, { method: "GET", path: "/_matrix/federation/v1/query/directory", query: { room_alias: alias }, maxBytes: 64 * 1024 });
    } catch (err) {
      if (err instanceof FederationError) throw new MatrixError(502, "M_UNKNOWN", "Failed to fetch alias");
      throw err;
    }
    if (res.status === 404) throw Errors.notFound(`Room alias ${alias} not found`);
    const { room_id: roomId, servers } = res.json;
    if (res.status !== 200 || typeof roomId !== "string" || !roomId.startsWith("!") || !Array.isArray(servers)) {
      throw new MatrixError(502, "M_UNKNOWN", "Failed to fetch alias");
    }
    const named = servers.filter((s): s is string => typeof s === "string" && isValidServerName(s)).slice(0, MAX_SERVERS);
    // The alias's own server answered for the room, so it can help join it too.
    return { room_id: roomId, servers: await this.#withJoinedServers(roomId, named.length ? named : [server]) };
  }

  /** `first`, then the servers of the room's joined members here (for a room we are in), once each. */
  async #withJoinedServers(roomId: string, first: string[]): Promise<string[]> {
    const servers = new Set(first);
    for (const m of await this.rooms.membersOf(roomId, "join")) {
      const s = serverNameOf(m.userId);
      if (s !== undefined) servers.add(s);
    }
    return [...servers];
  }
}
