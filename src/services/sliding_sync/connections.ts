/**
 * Where connection state lives: in the database, per (user, device, conn_id) and position, so
 * that it survives restarts and any process can answer the next request of a connection.
 *
 * A `pos` is `<position>/<sync token>`: the position names the saved connection state, the sync
 * token the stream positions the previous response covered. A request with a position keeps
 * that one and the new one it creates; every other position of the connection goes, so a
 * client that retries a request gets an answer from the same state.
 */
import { randomBytes } from "node:crypto";
import type { Storage } from "../../storage/interfaces.js";
import type { ConnectionKey } from "../../storage/sliding_sync.js";
import type { Clock } from "../clock.js";
import { parseSyncToken, type SyncPosition } from "../sync/tokens.js";
import { ConnectionState, unknownPos } from "./connection.js";

/** Connections unused this long are forgotten (as Synapse's). */
export const CONNECTION_TTL_MS = 7 * 24 * 3600_000;
/** How often one process looks for expired connections. */
const CLEANUP_EVERY_MS = 3600_000;

export interface Opened {
  key: ConnectionKey;
  state: ConnectionState;
  /** The position the request came with; null for a new connection. */
  position: string | null;
  /** The stream positions the previous response covered. */
  since?: SyncPosition;
  /** The state as loaded, to tell whether it changed. */
  loaded: string;
}

export class Connections {
  #lastCleanup = 0;

  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
  ) {}

  async open(key: ConnectionKey, pos: string | undefined): Promise<Opened> {
    const now = this.clock.now();
    await this.#cleanup(now);
    if (pos === undefined) {
      const state = new ConnectionState();
      return { key, state, position: null, loaded: "" };
    }
    const m = /^([0-9a-f]{1,32})\/(s[0-9_]+)$/.exec(pos);
    if (!m) throw unknownPos();
    let since: SyncPosition;
    try {
      since = parseSyncToken(m[2]!);
    } catch {
      throw unknownPos();
    }
    const json = await this.storage.slidingSync.load(key, m[1]!, now - CONNECTION_TTL_MS, now);
    if (json === undefined) throw unknownPos();
    return { key, state: ConnectionState.parse(json), position: m[1]!, since, loaded: json };
  }

  /** Saves the state if it changed; resolves to the position the response names. */
  async commit(opened: Opened): Promise<string> {
    const now = this.clock.now();
    const json = opened.state.serialize();
    if (opened.position !== null && json === opened.loaded) {
      await this.storage.slidingSync.keepOnly(opened.key, opened.position, now);
      return opened.position;
    }
    const position = randomBytes(6).toString("hex");
    await this.storage.slidingSync.save(opened.key, position, json, opened.position, now);
    return position;
  }

  async #cleanup(now: number): Promise<void> {
    if (now - this.#lastCleanup < CLEANUP_EVERY_MS) return;
    this.#lastCleanup = now;
    await this.storage.slidingSync.expire(now - CONNECTION_TTL_MS);
  }
}
