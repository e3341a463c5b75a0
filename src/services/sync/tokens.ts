/**
 * Stream positions as opaque tokens. A sync token carries one position per
 * stream; a room pagination token only the event stream. Both are accepted
 * wherever an event position is expected, as clients mix them.
 */
import { Errors } from "../../errors.js";
import type { StreamName, StreamPositions } from "../../storage/sql/streams.js";

export interface SyncPosition {
  events: number;
  accountData: number;
  receipts: number;
  typing: number;
  /** The to-device stream: messages up to here have reached the device (and are deleted when it syncs past them). */
  toDevice: number;
  /** The device-list change stream (users whose devices changed). */
  deviceLists: number;
}

/**
 * Where every stream is committed up to now (typing from its own clock): what a sync response
 * built from here covers. Read before anything else, so nothing below it can still appear.
 */
export function currentSyncPosition(streams: StreamPositions, typingPosition: number): SyncPosition {
  return {
    events: streams.current("events"),
    accountData: streams.current("account_data"),
    receipts: streams.current("receipts"),
    typing: typingPosition,
    toDevice: streams.current("to_device"),
    deviceLists: streams.current("device_lists"),
  };
}

/** Each stream a sync token carries, and its position there. */
export function streamPositionsOf(p: SyncPosition): [StreamName, number][] {
  return [
    ["events", p.events],
    ["account_data", p.accountData],
    ["receipts", p.receipts],
    ["typing", p.typing],
    ["to_device", p.toDevice],
    ["device_lists", p.deviceLists],
  ];
}

/** Whether no stream has moved past `since`: an incremental sync from there has nothing to send. */
export function nothingAfter(since: SyncPosition, upTo: SyncPosition): boolean {
  const seen = streamPositionsOf(since);
  return streamPositionsOf(upTo).every(([, p], i) => p <= seen[i]![1]);
}

export function formatSyncToken(p: SyncPosition): string {
  return `s${p.events}_${p.accountData}_${p.receipts}_${p.typing}_${p.toDevice}_${p.deviceLists}`;
}

export function parseSyncToken(token: string): SyncPosition {
  // Tokens made before the to-device and device-list streams existed have four positions: those two start at 0.
  const m = /^s([0-9]+)_([0-9]+)_([0-9]+)_([0-9]+)(?:_([0-9]+)_([0-9]+))?$/.exec(token);
  if (!m) throw Errors.invalidParam(`Invalid sync token: ${token}`);
  return {
    events: Number(m[1]),
    accountData: Number(m[2]),
    receipts: Number(m[3]),
    typing: Number(m[4]),
    toDevice: Number(m[5] ?? 0),
    deviceLists: Number(m[6] ?? 0),
  };
}

/**
 * A position in a room's timeline: everything at or before it has been seen. History fetched
 * from other servers sits below the stream, so a position may be negative (`t-12`).
 */
export function formatRoomToken(eventPosition: number): string {
  return `t${eventPosition}`;
}

/** The event-stream position of either kind of token. */
export function parseEventPosition(token: string): number {
  const room = /^t(-?[0-9]+)$/.exec(token);
  if (room) return Number(room[1]);
  return parseSyncToken(token).events;
}

/** How long a sync waits for this process to catch up with a token another process gave out. */
const CATCH_UP_MIN_MS = 1000;
const CATCH_UP_MAX_MS = 10_000;

/**
 * Waits until every stream here has reached the token's positions: a token from another process
 * on the database may be ahead of this one by a notification still on its way, and answering
 * from behind it would send again what the client has. Bounded by the request's timeout (within
 * 1–10 s); a token from the future (made up, or from before the database was restored) is
 * answered after the wait.
 */
export async function catchUp(streams: StreamPositions, since: SyncPosition, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const behind = streamPositionsOf(since).filter(([stream, p]) => streams.current(stream) < p);
  if (behind.length === 0) return;
  const ms = Math.max(CATCH_UP_MIN_MS, Math.min(timeoutMs, CATCH_UP_MAX_MS));
  const giveUp = AbortSignal.any([AbortSignal.timeout(ms), ...(signal ? [signal] : [])]);
  await Promise.all(behind.map(([stream, p]) => streams.waitFor(stream, p, giveUp)));
}
