/**
 * A room's history from before what this server has of it (it joined late), fetched from the
 * room's other servers with `/backfill` when a client pages back past the start. Each event is
 * checked like any other from federation (format, signatures, hashes) and against its own auth
 * events, then stored below the events stream (history, not news: no sync sees it, current
 * state is untouched).
 */
import { getRoomVersion, pduOf, roomIdOfEvent, serverNameOf, type Pdu, type RoomVersion } from "../../../events/index.js";
import { newEventOf, type RemoteEvent } from "../../rooms/remote_persister.js";
import type { RemoteHistory } from "../../rooms/reads.js";
import { applyRedactions } from "../../rooms/redactions.js";
import { checkAll, type FederatedRoomDeps } from "./types.js";
import { checkAgainstAuthEvents } from "./auth_events.js";

const enc = encodeURIComponent;
/** Events asked for at once (Synapse's own backfill asks for 100 at most). */
const MAX_BACKFILL = 100;

export class RemoteBackfill implements RemoteHistory {
  /** One fetch per room at a time in this process; concurrent readers share it. */
  readonly #inFlight = new Map<string, Promise<number>>();

  constructor(private readonly deps: FederatedRoomDeps) {}

  backfill(roomId: string, limit: number): Promise<number> {
    const running = this.#inFlight.get(roomId);
    if (running) return running;
    const work = this.#backfill(roomId, Math.min(Math.max(limit, 10), MAX_BACKFILL)).finally(() => this.#inFlight.delete(roomId));
    this.#inFlight.set(roomId, work);
    return work;
  }

  async #backfill(roomId: string, limit: number): Promise<number> {
    const { storage, serverName } = this.deps;
    const room = await storage.rooms.getRoom(roomId);
    const version = room && getRoomVersion(room.roomVersion);
    if (!version) return 0;
    // Cheapest first: a room whose beginning is here (every local room) stops at the first read.
    const oldest = await storage.roomDag.oldestTimelineEvent(roomId);
    if (!oldest) return 0;
    const start = pduOf(oldest);
    const known = await storage.roomDag.getPdus(start.prev_events);
    const gaps = start.prev_events.filter((id) => !known.get(id)?.inTimeline);
    if (gaps.length === 0) return 0;
    const servers = [...new Set((await storage.roomDag.remoteJoinedMembers(roomId, serverName)).map((u) => serverNameOf(u)!))];
    if (servers.length === 0) return 0;
    for (const server of servers) {
      try {
        const query = [...gaps.map((id) => `v=${enc(id)}`), `limit=${limit}`].join("&");
        const res = await this.deps.client.request(server, { method: "GET", path: `/_matrix/federation/v1/backfill/${enc(roomId)}?${query}` });
        if (res.status !== 200 || !Array.isArray(res.json.pdus)) continue;
        const checked = (await checkAll(this.deps.checkPdu, res.json.pdus.slice(0, MAX_BACKFILL), version)).filter(
          (e) => roomIdOfEvent(e.pdu, e.eventId) === roomId && e.pdu.depth <= start.depth,
        );
        const create = await storage.rooms.currentStateEvent(roomId, "m.room.create", "");
        // An event soft-failed here stays out of the timeline, whoever sends it again.
        const softFailed = await storage.roomDag.softFailedGroups(checked.map((e) => e.eventId));
        const accepted = await this.#authorised(checked.filter((e) => !softFailed.has(e.eventId)), version, create && pduOf(create));
        if (accepted.length === 0) continue;
        // Newest first, so each is stored below the one before.
        accepted.sort((a, b) => b.pdu.depth - a.pdu.depth || b.pdu.origin_server_ts - a.pdu.origin_server_ts);
        return await storage.transaction(async (tx) => {
          // Under the room's lock, as every write of its events is: a redaction sent at the same
          // time either sees its target stored here, or is stored first and waits for it below.
          await tx.roomDag.lockRoomDag(roomId);
          const stored = await tx.roomDag.insertBackfilled(accepted.map((e) => newEventOf(e.eventId, roomId, e.pdu, {})));
          // Once all are in, so a redaction finds its event wherever the batch put it; one whose
          // event is in an older batch waits for it, and is applied when that batch comes.
          for (const e of accepted) await applyRedactions(tx, e, version, this.deps.clock.now());
          return stored;
        });
      } catch {
        // That server could not help: try the next.
      }
    }
    return 0;
  }

  /** The events that pass the auth rules against their own auth events (known here, or in the batch), oldest first. */
  async #authorised(events: RemoteEvent[], version: RoomVersion, roomCreate: Pdu | undefined): Promise<RemoteEvent[]> {
    const inBatch = new Set(events.map((e) => e.eventId));
    const wanted = [...new Set(events.flatMap((e) => e.pdu.auth_events))].filter((id) => !inBatch.has(id));
    const available = new Map<string, Pdu>();
    for (const [id, s] of await this.deps.storage.roomDag.getPdus(wanted)) if (s.rejected === null) available.set(id, pduOf(s));
    // Room version 12 leaves the create event out of auth_events: the room's own is used.
    const create = roomCreate ?? [...available.values(), ...events.map((e) => e.pdu)].find((p) => p.type === "m.room.create" && p.state_key === "");
    const { passed } = checkAgainstAuthEvents(events, { version, available, create });
    return [...passed].map(([eventId, pdu]) => ({ eventId, pdu }));
  }
}
