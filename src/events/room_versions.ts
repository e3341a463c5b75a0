/**
 * The room versions Switchboard supports, as feature flags the rest of `events/` reads.
 *
 * Sources: the spec's room version pages (content/rooms/v10.md, v11.md and v12.md in
 * matrix-org/matrix-spec) and MSC3757, whose unstable identifier is
 * `org.matrix.msc3757.<base version>`: the base version's rules plus MSC3757's rule 8.
 * Version 12 is 11 plus MSC4289 (privileged creators), MSC4291 (room IDs are create
 * event IDs), MSC4297 (state resolution v2.1) and MSC4307/MSC4311.
 */

export interface RoomVersion {
  /** The identifier used in `m.room.create` content and in `/capabilities`. */
  readonly id: string;
  /**
   * The event format, numbered as Synapse's `EventFormatVersions`: 3 is the format of room
   * versions 4 to 11 (the event ID is the reference hash and is not part of the PDU; room
   * IDs keep their `:domain`), 4 that of room version 12 (room ID derived from the create
   * event). All versions here use 3.
   */
  readonly eventFormat: 3 | 4;
  /**
   * State resolution algorithm: 2 (room versions 2 to 11), or 2.1 (MSC4297, room version 12:
   * the conflicted state subgraph joins the full conflicted set, and the first iterative auth
   * checks start from an empty state map).
   */
  readonly stateResolution: 2 | 2.1;
  readonly stability: "stable" | "unstable";
  /** Canonical JSON strictly enforced on events (room version 6+). */
  readonly strictCanonicalJson: boolean;
  /** `notifications` in power levels is subject to the power-level change rules (v6+). */
  readonly limitNotificationsPowerLevels: boolean;
  /** The `knock` join rule and `knock` membership exist (v7+). */
  readonly knockJoinRule: boolean;
  /** The `restricted` join rule exists (v8+). */
  readonly restrictedJoinRule: boolean;
  /** The `knock_restricted` join rule exists (v10+). */
  readonly knockRestrictedJoinRule: boolean;
  /** Power levels must be integers, never strings (v10+). */
  readonly enforceIntPowerLevels: boolean;
  /** v11: `m.room.create` has no `creator`; the create event's `sender` is the creator. */
  readonly implicitRoomCreator: boolean;
  /**
   * v11 redaction rules (MSC2174/MSC2176/MSC3821/MSC3989): `redacts` lives in content,
   * create keeps all content, power levels keep `invite`, `origin`/`membership`/
   * `prev_state` are no longer kept at the top level.
   */
  readonly updatedRedactionRules: boolean;
  /** `m.room.redaction` carries `redacts` in `content` instead of at the top level (v11+). */
  readonly redactsInContent: boolean;
  /**
   * MSC3757: a state key that starts with a user ID followed by `_` (or is exactly a user
   * ID) may be written by that user, or by anyone with a higher power level; state keys may
   * reach 511 bytes.
   */
  readonly msc3757OwnedStateKeys: boolean;
  /**
   * MSC4291 (v12): the room ID is the create event's ID with `!` for `$`; the create event
   * has no `room_id`, and no event cites it in `auth_events`.
   */
  readonly roomIdIsCreateEventId: boolean;
  /**
   * MSC4289 (v12): the create event's sender and `content.additional_creators` have an
   * infinite power level and may not be listed in power levels' `users`.
   */
  readonly privilegedCreators: boolean;
}

const V10: RoomVersion = Object.freeze({
  id: "10",
  eventFormat: 3,
  stateResolution: 2,
  stability: "stable",
  strictCanonicalJson: true,
  limitNotificationsPowerLevels: true,
  knockJoinRule: true,
  restrictedJoinRule: true,
  knockRestrictedJoinRule: true,
  enforceIntPowerLevels: true,
  implicitRoomCreator: false,
  updatedRedactionRules: false,
  redactsInContent: false,
  msc3757OwnedStateKeys: false,
  roomIdIsCreateEventId: false,
  privilegedCreators: false,
});

const V11: RoomVersion = Object.freeze({
  ...V10,
  id: "11",
  implicitRoomCreator: true,
  updatedRedactionRules: true,
  redactsInContent: true,
});

const V12: RoomVersion = Object.freeze({
  ...V11,
  id: "12",
  eventFormat: 4,
  stateResolution: 2.1,
  roomIdIsCreateEventId: true,
  privilegedCreators: true,
});

/** Exactly the versions that work here. Anything else is `M_UNSUPPORTED_ROOM_VERSION`. */
export const ROOM_VERSIONS: Readonly<Record<string, RoomVersion>> = Object.freeze({
  "10": V10,
  "11": V11,
  "12": V12,
  "org.matrix.msc3757.10": Object.freeze({
    ...V10,
    id: "org.matrix.msc3757.10",
    stability: "unstable",
    msc3757OwnedStateKeys: true,
  }),
  "org.matrix.msc3757.11": Object.freeze({
    ...V11,
    id: "org.matrix.msc3757.11",
    stability: "unstable",
    msc3757OwnedStateKeys: true,
  }),
});

export const DEFAULT_ROOM_VERSION = "11";

/** The version with that identifier, or `undefined` when it is not supported. */
export function getRoomVersion(id: string): RoomVersion | undefined {
  return Object.hasOwn(ROOM_VERSIONS, id) ? ROOM_VERSIONS[id] : undefined;
}

export function isSupportedRoomVersion(id: string): boolean {
  return getRoomVersion(id) !== undefined;
}

/** `"stable"` or `"unstable"`, as `/capabilities` reports it. Throws for an unsupported id. */
export function roomVersionStability(id: string): "stable" | "unstable" {
  const v = getRoomVersion(id);
  if (!v) throw new RangeError(`unsupported room version: ${id}`);
  return v.stability;
}
