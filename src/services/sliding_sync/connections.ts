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
import { trimOldest } from "../bounded_map.js";

/** Connections unused this long are forgotten (as Synapse's). */
export const CONNECTION_TTL_MS = 7 * 24 * 3600_000;
const cacheKey = (k: ConnectionKey) => JSON.stringify([k.userId, k.deviceId, k.connId]);

/** How often one process looks for expired connections. */
const CLEANUP_EVERY_MS = 3600_000;

export interface Opened {
  key: ConnectionKey;
  /** The position the request came with; null for a new connection. */
  position: string | null;
  /** The stream positions the previous response covered. */
  since?: SyncPosition;
  /** The state saved at `position` (empty for a new connection). Never changed: each attempt at a response works on a copy. */
  saved: ConnectionState;
}

/** States this process saved or read lately, by connection: the next request's position is usually the last one. */
const RECENT_MAX = 1024;
/**
 * How often an unchanged connection's position is made its only one again (older positions
 * deleted, the connection marked used). Both are housekeeping (a leftover position only lets a
 * retry answer from it; expiry counts in days), so a connection answered many times a minute
 * with nothing new needs no write each time.
 */
const REAFFIRM_EVERY_MS = 30_000;

interface Recent {
  position: string;
  state: ConnectionState;
  /** When this process last made `position` the connection's only one. */
  reaffirmed?: number;
}

export class Connections {
  #lastCleanup = 0;
  /**
   * The state at a connection's latest position, as this process last saved or parsed it: a
   * position's state never changes once saved, so the next request skips parsing it again. The
   * database is still asked, as it decides whether the position exists and has not expired.
   * Bounded: the connection saved longest ago goes first.
   */
  readonly #recent = new Map<string, Recent>();

  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
  ) {}

  async open(key: ConnectionKey, pos: string | undefined): Promise<Opened> {
    const now = this.clock.now();
    await this.#cleanup(now);
    if (pos === undefined) return { key, position: null, saved: new ConnectionState() };
    const m = /^([0-9a-f]{1,32})\/(s[0-9_]+)$/.exec(pos);
    if (!m) throw unknownPos();
    let since: SyncPosition;
    try {
      since = parseSyncToken(m[2]!);
    } catch {
      throw unknownPos();
    }
    const position = m[1]!;
    const json = await this.storage.slidingSync.load(key, position, now - CONNECTION_TTL_MS, now);
    if (json === undefined) throw unknownPos();
    const recent = this.#recent.get(cacheKey(key));
    if (recent?.position === position) return { key, position, since, saved: recent.state };
    const saved = ConnectionState.parse(json);
    this.#remember(key, { position, state: saved });
    return { key, position, since, saved };
  }

  /** Saves `state` under a new position if it changed; resolves to the position the response names. */
  async commit(opened: Opened, state: ConnectionState): Promise<string> {
    const now = this.clock.now();
    if (opened.position !== null && !state.changed()) {
      const recent = this.#recent.get(cacheKey(opened.key));
      if (recent?.position === opened.position && recent.reaffirmed !== undefined && now - recent.reaffirmed < REAFFIRM_EVERY_MS) {
        return opened.position;
      }
      await this.storage.slidingSync.keepOnly(opened.key, opened.position, now);
      this.#remember(opened.key, { position: opened.position, state: opened.saved, reaffirmed: now });
      return opened.position;
    }
    const position = randomBytes(6).toString("hex");
    await this.storage.slidingSync.save(opened.key, position, state.serialize(), opened.position, now);
    this.#remember(opened.key, { position, state });
    return position;
  }

  #remember(key: ConnectionKey, recent: Recent): void {
    // Least recently saved first out: re-inserting moves a connection to the end.
    const k = cacheKey(key);
    this.#recent.delete(k);
    this.#recent.set(k, recent);
    trimOldest(this.#recent, RECENT_MAX);
  }

  async #cleanup(now: number): Promise<void> {
    if (now - this.#lastCleanup < CLEANUP_EVERY_MS) return;
    this.#lastCleanup = now;
    await this.storage.slidingSync.expire(now - CONNECTION_TTL_MS);
  }
}
