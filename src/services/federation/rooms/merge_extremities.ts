/**
 * A room whose forward extremities pile up (a server sending many sibling events, or forks
 * after outages) makes every event from federation resolve state over all of them. As Synapse
 * does, a local user of the room then sends an `org.matrix.dummy_event`: like any local event it
 * takes the deepest extremities as prev_events (10 at most) and the room's resolved current
 * state as its state, and becomes the room's only extremity here; other servers merge the same
 * extremities when it reaches them. Clients ignore the type.
 */
import { serverNameOf, type RoomVersion } from "../../../events/index.js";
import { MatrixError } from "../../../errors.js";
import type { FederatedRoomDeps } from "./types.js";

const DUMMY_EVENT_TYPE = "org.matrix.dummy_event";
/** Local members tried per merge; each refusal costs a transaction. */
const MAX_SENDERS = 5;
/** A room where none of them may send is left alone this long (Synapse waits an hour). */
const RETRY_AFTER_MS = 60 * 60 * 1000;

export class ExtremityMerger {
  /** One merge per room at a time: a transaction of 50 siblings asks once. */
  readonly #running = new Set<string>();
  /** Rooms where no local member could send, until when they are left alone. */
  readonly #refused = new Map<string, number>();

  constructor(private readonly deps: FederatedRoomDeps) {}

  /** Sends the dummy event in the background; failures leave the extremities for the next crowded batch. */
  merge(roomId: string, version: RoomVersion): void {
    if (this.#running.has(roomId) || (this.#refused.get(roomId) ?? 0) > this.deps.clock.now()) return;
    this.#refused.delete(roomId);
    this.#running.add(roomId);
    void this.#send(roomId, version)
      .catch(() => undefined)
      .finally(() => this.#running.delete(roomId));
  }

  async #send(roomId: string, version: RoomVersion): Promise<void> {
    const members = await this.deps.storage.rooms.membersOf(roomId, "join");
    const local = members.filter((m) => serverNameOf(m.userId) === this.deps.serverName).slice(0, MAX_SENDERS);
    for (const { userId } of local) {
      try {
        await this.deps.persister.persist({ roomId, sender: userId, type: DUMMY_EVENT_TYPE, content: {} }, version);
        return;
      } catch (err) {
        // This member may not send events here (power levels): the next one may.
        if (!(err instanceof MatrixError)) throw err;
      }
    }
    // Bounded: only rooms this server is in get here.
    this.#refused.set(roomId, this.deps.clock.now() + RETRY_AFTER_MS);
  }
}
