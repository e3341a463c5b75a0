/**
 * What another server may see of a room's events: the spec's history visibility as it applies to
 * servers (Synapse's `filter_events_for_server`), on every path that hands events over (`/event`,
 * `/get_missing_events`, `/backfill`). Each event is judged on the state after it, as Synapse
 * does: under `joined`, it is visible when one of the server's users was joined then; under
 * `invited`, joined or invited. `shared` and `world_readable` events are visible: the server asking
 * has a member joined now (`requireServerInRoom`), which is after the event. An event whose state
 * is not known here (state received with a join, history fetched from others) counts as `shared`,
 * as in Synapse. What may not be seen is handed over redacted, not left out: the other server
 * still needs the DAG's shape and the keys the auth rules read, which redaction keeps.
 */
import { redact, serverNameOf, type Pdu, type RoomVersion } from "../../../events/index.js";
import type { Stores } from "../../../storage/interfaces.js";
import { stateKeyOf } from "../../../storage/rooms.js";
import type { RoomDag, StateIds } from "../../rooms/dag.js";
import { visibilityOf, type Visibility } from "../../rooms/visibility.js";

const VISIBILITY_KEY = stateKeyOf("m.room.history_visibility", "");
const MEMBER_PREFIX = stateKeyOf("m.room.member", "");

/** `events` as `origin` may see them, in the same order: unchanged, or redacted by `version`'s rules. */
export async function filterEventsForServer(
  tx: Stores,
  dag: RoomDag,
  origin: string,
  version: RoomVersion,
  events: readonly { eventId: string; pdu: Pdu }[],
): Promise<Pdu[]> {
  if (events.length === 0) return [];
  const states = await dag.stateAfter(tx, events.map((e) => e.eventId));
  const visibilityIds = new Set<string>();
  for (const { state } of states.values()) {
    const id = state.get(VISIBILITY_KEY);
    if (id) visibilityIds.add(id);
  }
  const visibilityEvents = await dag.pdus(tx, [...visibilityIds]);
  const settingOf = (state: StateIds): Visibility => {
    const id = state.get(VISIBILITY_KEY);
    return visibilityOf(id ? visibilityEvents.get(id)?.content : undefined);
  };

  // The origin's users' member events in each state that needs them; states are shared between
  // events (cached groups), so each is read once.
  const memberIdsByState = new Map<StateIds, string[]>();
  for (const { state } of states.values()) {
    const setting = settingOf(state);
    if ((setting !== "joined" && setting !== "invited") || memberIdsByState.has(state)) continue;
    const ids: string[] = [];
    for (const [key, id] of state) {
      if (key.startsWith(MEMBER_PREFIX) && serverNameOf(key.slice(MEMBER_PREFIX.length)) === origin) ids.push(id);
    }
    memberIdsByState.set(state, ids);
  }
  const memberEvents = await dag.pdus(tx, [...new Set([...memberIdsByState.values()].flat())]);

  const verdicts = new Map<StateIds, boolean>();
  const visible = (state: StateIds): boolean => {
    const known = verdicts.get(state);
    if (known !== undefined) return known;
    const setting = settingOf(state);
    const ok =
      (setting !== "joined" && setting !== "invited") ||
      (memberIdsByState.get(state) ?? []).some((id) => {
        const membership = memberEvents.get(id)?.content.membership;
        return membership === "join" || (setting === "invited" && membership === "invite");
      });
    verdicts.set(state, ok);
    return ok;
  };

  return events.map(({ eventId, pdu }) => {
    const at = states.get(eventId);
    return !at || visible(at.state) ? pdu : redact(pdu, version);
  });
}
