/**
 * Stream positions as opaque tokens. A sync token carries one position per
 * stream; a room pagination token only the event stream. Both are accepted
 * wherever an event position is expected, as clients mix them.
 */
import { Errors } from "../../errors.js";
import type { StreamName } from "../../storage/sql/streams.js";

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

/** A position in a room's timeline: everything at or before it has been seen. */
export function formatRoomToken(eventPosition: number): string {
  return `t${eventPosition}`;
}

/** The event-stream position of either kind of token. */
export function parseEventPosition(token: string): number {
  const room = /^t([0-9]+)$/.exec(token);
  if (room) return Number(room[1]);
  return parseSyncToken(token).events;
}
