/**
 * What one sliding-sync connection has told its client, as of one position: per room whether
 * it was sent and is up to date (live), sent but missed updates while out of every range
 * (previously, with where it was left), or never sent; the room config last applied to it;
 * the lazily loaded members already sent; each list's last count.
 *
 * The state is saved as JSON under a new position whenever it changes (see connections.ts);
 * a request carrying a position is answered from the state saved there, so retrying a `pos`
 * answers from the same state.
 */
import { MatrixError } from "../../errors.js";
import type { RoomConfig, StatePair } from "./request.js";

export type RoomStatus = { kind: "never" } | { kind: "live" } | { kind: "previously"; token: string };

interface SavedRoom {
  /** Previously: the sync token its missed updates start after. Absent: live. */
  p?: string;
  /** Index into `configs`. */
  c: number;
}

interface Saved {
  rooms: Record<string, SavedRoom>;
  configs: { l: number; r: StatePair[] }[];
  lazy: Record<string, string[]>;
  counts: Record<string, number>;
}

export const unknownPos = () => new MatrixError(400, "M_UNKNOWN_POS", "Unknown or expired position; start the connection again");

/** Keys by config object: the rooms of one list share theirs. */
const configKeys = new WeakMap<RoomConfig, string>();
const configKey = (c: RoomConfig) => {
  let key = configKeys.get(c);
  if (key === undefined) configKeys.set(c, (key = JSON.stringify([c.timelineLimit, c.requiredState])));
  return key;
};

export class ConnectionState {
  readonly #rooms = new Map<string, { previously?: string; config: RoomConfig }>();
  readonly #lazy = new Map<string, Set<string>>();
  readonly #counts = new Map<string, number>();
  /**
   * Whether anything changed since the state was parsed or copied (a new state counts as
   * changed): an unchanged state keeps its position, without serialising it to find out.
   * Conservative: a change undone later still counts.
   */
  #changed = true;

  changed(): boolean {
    return this.#changed;
  }

  /** An independent copy, unchanged so far, for one attempt at a response (attempts mutate their state). */
  copy(): ConnectionState {
    const c = new ConnectionState();
    for (const [roomId, r] of this.#rooms) c.#rooms.set(roomId, { ...r });
    for (const [roomId, users] of this.#lazy) c.#lazy.set(roomId, new Set(users));
    for (const [list, n] of this.#counts) c.#counts.set(list, n);
    c.#changed = false;
    return c;
  }

  static parse(json: string): ConnectionState {
    let saved: Saved;
    try {
      saved = JSON.parse(json) as Saved;
    } catch {
      throw unknownPos();
    }
    const state = new ConnectionState();
    // One object per saved config, shared by its rooms as when it was saved.
    const configs = saved.configs.map((c): RoomConfig => ({ timelineLimit: c.l, requiredState: c.r }));
    for (const [roomId, r] of Object.entries(saved.rooms)) state.#rooms.set(roomId, { previously: r.p, config: configs[r.c]! });
    for (const [roomId, users] of Object.entries(saved.lazy)) state.#lazy.set(roomId, new Set(users));
    for (const [list, count] of Object.entries(saved.counts)) state.#counts.set(list, count);
    state.#changed = false;
    return state;
  }

  serialize(): string {
    const configs: Saved["configs"] = [];
    const index = new Map<string, number>();
    const rooms: Record<string, SavedRoom> = {};
    for (const roomId of [...this.#rooms.keys()].sort()) {
      const r = this.#rooms.get(roomId)!;
      const key = configKey(r.config);
      let c = index.get(key);
      if (c === undefined) {
        c = configs.push({ l: r.config.timelineLimit, r: r.config.requiredState }) - 1;
        index.set(key, c);
      }
      rooms[roomId] = r.previously === undefined ? { c } : { p: r.previously, c };
    }
    const lazy: Record<string, string[]> = {};
    for (const roomId of [...this.#lazy.keys()].sort()) lazy[roomId] = [...this.#lazy.get(roomId)!].sort();
    const counts: Record<string, number> = {};
    for (const list of [...this.#counts.keys()].sort()) counts[list] = this.#counts.get(list)!;
    return JSON.stringify({ rooms, configs, lazy, counts } satisfies Saved);
  }

  status(roomId: string): RoomStatus {
    const r = this.#rooms.get(roomId);
    if (!r) return { kind: "never" };
    return r.previously === undefined ? { kind: "live" } : { kind: "previously", token: r.previously };
  }

  /** The config last applied to the room on this connection. */
  config(roomId: string): RoomConfig | undefined {
    return this.#rooms.get(roomId)?.config;
  }

  /** The room is up to date on the client, under this config. */
  markLive(roomId: string, config: RoomConfig): void {
    const r = this.#rooms.get(roomId);
    if (r && r.previously === undefined && (r.config === config || configKey(r.config) === configKey(config))) return;
    this.#rooms.set(roomId, { config });
    this.#changed = true;
  }

  /** A live room left every range: updates from `token` on are not on the client. */
  markMissed(roomId: string, token: string): void {
    const r = this.#rooms.get(roomId);
    if (r && r.previously === undefined) {
      r.previously = token;
      this.#changed = true;
    }
  }

  /** The room is no longer one the connection can speak of (the user left it and was told). */
  forget(roomId: string): void {
    if (this.#rooms.delete(roomId)) this.#changed = true;
    if (this.#lazy.delete(roomId)) this.#changed = true;
  }

  rooms(): string[] {
    return [...this.#rooms.keys()];
  }

  liveRooms(): string[] {
    return [...this.#rooms].filter(([, r]) => r.previously === undefined).map(([id]) => id);
  }

  lazyMembersSent(roomId: string): ReadonlySet<string> {
    return this.#lazy.get(roomId) ?? new Set();
  }

  /** `reset`: the room was sent afresh, so the client holds only the members just sent. */
  addLazyMembers(roomId: string, userIds: Iterable<string>, reset: boolean): void {
    const before = this.#lazy.get(roomId);
    const set = reset ? new Set<string>() : (before ?? new Set<string>());
    const sizeBefore = reset ? -1 : set.size;
    for (const u of userIds) set.add(u);
    if (set.size === sizeBefore) return;
    if (reset && before !== undefined && set.size === before.size && [...set].every((u) => before.has(u))) return;
    if (set.size > 0) this.#lazy.set(roomId, set);
    else if (this.#lazy.delete(roomId) === false) return;
    this.#changed = true;
  }

  count(list: string): number | undefined {
    return this.#counts.get(list);
  }

  setCounts(counts: Map<string, number>): void {
    if (counts.size === this.#counts.size && [...counts].every(([list, n]) => this.#counts.get(list) === n)) return;
    this.#counts.clear();
    for (const [list, n] of counts) this.#counts.set(list, n);
    this.#changed = true;
  }
}
