/**
 * `required_state` of sliding sync: which state events a room config asks for. A pair is
 * `[type, state_key]`; `*` as a state key means every key of the type, `*` as the type means
 * all state (Synapse answers any `["*", k]` with all state, which the MSC allows), `$ME` is the
 * requester's user ID, and `["m.room.member", "$LAZY"]` asks for the members the timeline needs.
 */
import { stateKeyOf, type StoredEvent } from "../../storage/rooms.js";
import type { RoomConfig, StatePair } from "./request.js";

export const LAZY = "$LAZY";
const ME = "$ME";
const ANY = "*";

export class StateSelection {
  readonly all: boolean;
  /** Types asked for with every state key. */
  readonly types = new Set<string>();
  /** Exact `stateKeyOf` keys. */
  readonly keys = new Set<string>();
  readonly pairs: [string, string][] = [];
  readonly lazyMembers: boolean;

  constructor(requiredState: readonly StatePair[], userId: string) {
    let all = false;
    let lazy = false;
    for (const [type, key] of requiredState) {
      if (type === ANY) all = true;
      else if (key === ANY) this.types.add(type);
      else if (key === LAZY) lazy ||= type === "m.room.member";
      else {
        const stateKey = key === ME ? userId : key;
        this.keys.add(stateKeyOf(type, stateKey));
        this.pairs.push([type, stateKey]);
      }
    }
    this.all = all;
    this.lazyMembers = lazy;
  }

  matches(e: { type: string; stateKey: string | null }): boolean {
    return this.all || this.types.has(e.type) || this.keys.has(stateKeyOf(e.type, e.stateKey ?? ""));
  }

  /** Nothing asked for (besides, perhaps, lazy members). */
  get empty(): boolean {
    return !this.all && this.types.size === 0 && this.keys.size === 0;
  }
}

/** A list's config combined alone, per config object: every room in the list's ranges has the same one. */
const combinedAlone = new WeakMap<RoomConfig, RoomConfig>();

/** Combines the configs a room gets from several lists and subscriptions: the longest timeline, every state pair. */
export function combineConfigs(configs: RoomConfig[]): RoomConfig {
  if (configs.length === 1) {
    const only = configs[0]!;
    let combined = combinedAlone.get(only);
    if (!combined) combinedAlone.set(only, (combined = combine(configs)));
    return combined;
  }
  return combine(configs);
}

function combine(configs: RoomConfig[]): RoomConfig {
  const seen = new Set<string>();
  const requiredState: StatePair[] = [];
  for (const c of configs) {
    for (const pair of c.requiredState) {
      const k = JSON.stringify(pair);
      if (!seen.has(k)) {
        seen.add(k);
        requiredState.push(pair);
      }
    }
  }
  requiredState.sort((a, b) => (a[0] === b[0] ? (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0) : a[0] < b[0] ? -1 : 1));
  return { timelineLimit: Math.max(0, ...configs.map((c) => c.timelineLimit)), requiredState };
}

/** Whether `next` asks for state pairs `previous` did not: the newly covered state is then sent. */
export function asksForMoreState(previous: RoomConfig, next: RoomConfig): boolean {
  // Usually the same pairs as last time (both sorted by combineConfigs): no sets to build.
  const [a, b] = [previous.requiredState, next.requiredState];
  if (a.length === b.length && a.every((p, i) => p[0] === b[i]![0] && p[1] === b[i]![1])) return false;
  const had = new Set(previous.requiredState.map((p) => JSON.stringify(p)));
  return next.requiredState.some((p) => !had.has(JSON.stringify(p)));
}

/** The members a timeline needs: its senders and the targets of its member events. */
export function timelineMembers(timeline: readonly StoredEvent[]): Set<string> {
  const out = new Set<string>();
  for (const e of timeline) {
    out.add(e.sender);
    if (e.type === "m.room.member" && e.stateKey !== null) out.add(e.stateKey);
  }
  return out;
}
