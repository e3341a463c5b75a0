/**
 * Sliding-sync connections (MSC4186): what each connection of a device has been sent, saved
 * per position so that a client retrying a `pos` gets an answer computed from the same state.
 * In the database, so that it survives restarts and any process on it can continue a connection.
 */

export interface ConnectionKey {
  userId: string;
  deviceId: string;
  connId: string;
}

export interface SlidingSyncStore {
  /**
   * The state saved at `position` of the connection, if the connection was used at or after
   * `usedSince`; marks the connection used at `now`.
   */
  load(key: ConnectionKey, position: string, usedSince: number, now: number): Promise<string | undefined>;
  /**
   * Saves `state` as a new position. Every other position of the connection goes, except `keep`
   * (the one the request came with); with `keep` null, the connection starts afresh.
   */
  save(key: ConnectionKey, position: string, state: string, keep: string | null, now: number): Promise<void>;
  /** Forgets every position of the connection except `keep`, and marks it used at `now`. */
  keepOnly(key: ConnectionKey, keep: string, now: number): Promise<void>;
  /** Deletes connections last used before `before`; returns how many went. */
  expire(before: number): Promise<number>;
}
