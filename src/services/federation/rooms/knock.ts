/**
 * The parts of knocking (spec: "Knocking on rooms") that both sides of federation share: the
 * stripped state the resident server answers `send_knock` with, so the knocker's server can show
 * the room it knocked on, and the checked copy of that answer the knocker's server keeps.
 */
import { isRecord } from "../../../events/index.js";
import type { Storage } from "../../../storage/interfaces.js";
import { stateKeyOf } from "../../../storage/rooms.js";
import { toStrippedState } from "../../rooms/client_format.js";

/** The state a knocker sees of a room before being let in (the spec's recommended set). */
const KNOCK_STATE = ["m.room.create", "m.room.name", "m.room.avatar", "m.room.topic", "m.room.join_rules", "m.room.canonical_alias", "m.room.encryption"];
/** More stripped events than any honest answer carries are not kept. */
const MAX_STRIPPED = 50;

export type StrippedEvent = { type: string; state_key: string; sender: string; content: Record<string, unknown> };

/** `knock_room_state` of a room resident here: its current stripped state. */
export async function knockRoomState(storage: Storage, roomId: string): Promise<StrippedEvent[]> {
  const state = await storage.rooms.currentState(roomId);
  return KNOCK_STATE.flatMap((type) => {
    const e = state.get(stateKeyOf(type, ""));
    return e ? [toStrippedState(e)] : [];
  });
}

/** The well-formed stripped events of another server's `knock_room_state`, at most a bounded number. */
export function strippedFrom(raw: unknown): StrippedEvent[] {
  if (!Array.isArray(raw)) return [];
  return raw
    .filter(isRecord)
    .filter((e) => typeof e.type === "string" && typeof e.state_key === "string" && typeof e.sender === "string" && isRecord(e.content))
    .slice(0, MAX_STRIPPED)
    .map((e) => ({ type: e.type as string, state_key: e.state_key as string, sender: e.sender as string, content: e.content as Record<string, unknown> }));
}
