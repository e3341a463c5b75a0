/** What `createRoom` writes, in the order the spec gives: pure planning, no I/O. */

export type Preset = "private_chat" | "trusted_private_chat" | "public_chat";

export interface CreateRoomRequest {
  preset?: Preset;
  visibility?: "public" | "private";
  name?: string;
  topic?: string;
  roomAliasName?: string;
  invite: string[];
  initialState: { type: string; state_key?: string; content: Record<string, unknown> }[];
  powerLevelContentOverride?: Record<string, unknown>;
  creationContent?: Record<string, unknown>;
  isDirect: boolean;
}

export interface PlannedState {
  type: string;
  stateKey: string;
  content: Record<string, unknown>;
}

/**
 * Power levels for a new room. Members may publish their own MatrixRTC
 * membership, so calls work in new rooms without an admin step, as Element
 * sets it when it creates rooms.
 *
 * With `privilegedCreators` (room version 12, MSC4289) the creators are not listed (the
 * rules forbid it: their level is infinite), trusted_private_chat invitees are expected
 * among `additional_creators` instead, and `m.room.tombstone` needs 150, above every
 * default level, so that by default only creators can upgrade the room, as MSC4289 asks.
 */
export function defaultPowerLevels(
  creator: string,
  preset: Preset,
  invitees: string[],
  privilegedCreators = false,
): Record<string, unknown> {
  const users: Record<string, number> = privilegedCreators ? {} : { [creator]: 100 };
  if (preset === "trusted_private_chat" && !privilegedCreators) for (const u of invitees) users[u] = 100;
  return {
    users,
    users_default: 0,
    events: {
      "m.room.name": 50,
      "m.room.power_levels": 100,
      "m.room.history_visibility": 100,
      "m.room.canonical_alias": 50,
      "m.room.avatar": 50,
      "m.room.tombstone": privilegedCreators ? 150 : 100,
      "m.room.server_acl": 100,
      "m.room.encryption": 100,
      "org.matrix.msc3401.call.member": 0,
    },
    events_default: 0,
    state_default: 50,
    ban: 50,
    kick: 50,
    redact: 50,
    invite: preset === "public_chat" ? 50 : 0,
    historical: 100,
  };
}

/** The preset a request asks for, explicitly or through its visibility. */
export function presetOf(req: Pick<CreateRoomRequest, "preset" | "visibility">): Preset {
  return req.preset ?? (req.visibility === "public" ? "public_chat" : "private_chat");
}

/**
 * Room version 12 (MSC4289): the create event's `additional_creators`, from
 * `creation_content`, plus, for a trusted_private_chat, the invitees, without duplicates.
 * `undefined` when there are none; throws a message for a value that is not a list of strings.
 */
export function planAdditionalCreators(req: CreateRoomRequest): string[] | undefined {
  const given = req.creationContent?.additional_creators;
  if (given !== undefined && (!Array.isArray(given) || !given.every((u) => typeof u === "string"))) {
    throw new TypeError("creation_content.additional_creators must be a list of user IDs");
  }
  const all = [...((given as string[] | undefined) ?? []), ...(presetOf(req) === "trusted_private_chat" ? req.invite : [])];
  return all.length === 0 ? undefined : [...new Set(all)];
}

/**
 * The state events that follow the creator's join, in order. `privilegedCreators`: the
 * room version's creators have infinite power (version 12).
 */
export function planInitialState(
  req: CreateRoomRequest,
  creator: string,
  alias: string | undefined,
  privilegedCreators = false,
): PlannedState[] {
  const preset = presetOf(req);
  const planned: PlannedState[] = [];
  const pl = { ...defaultPowerLevels(creator, preset, req.invite, privilegedCreators), ...(req.powerLevelContentOverride ?? {}) };
  planned.push({ type: "m.room.power_levels", stateKey: "", content: pl });
  if (alias) planned.push({ type: "m.room.canonical_alias", stateKey: "", content: { alias } });
  planned.push({ type: "m.room.join_rules", stateKey: "", content: { join_rule: preset === "public_chat" ? "public" : "invite" } });
  planned.push({ type: "m.room.history_visibility", stateKey: "", content: { history_visibility: "shared" } });
  planned.push({
    type: "m.room.guest_access",
    stateKey: "",
    content: { guest_access: preset === "public_chat" ? "forbidden" : "can_join" },
  });
  // initial_state overrides the preset's events of the same key.
  for (const s of req.initialState) {
    const stateKey = s.state_key ?? "";
    const at = planned.findIndex((p) => p.type === s.type && p.stateKey === stateKey);
    const entry = { type: s.type, stateKey, content: s.content };
    if (at >= 0) planned[at] = entry;
    else planned.push(entry);
  }
  if (req.name !== undefined) planned.push({ type: "m.room.name", stateKey: "", content: { name: req.name } });
  if (req.topic !== undefined) {
    // With the text/plain `m.topic` block that the spec (v1.15) asks `createRoom` to send.
    const content = { topic: req.topic, "m.topic": { "m.text": [{ mimetype: "text/plain", body: req.topic }] } };
    planned.push({ type: "m.room.topic", stateKey: "", content });
  }
  return planned;
}
