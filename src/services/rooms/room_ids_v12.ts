/**
 * Room version 12 room creation (MSC4291, MSC4289): the room ID is the create event's ID,
 * so it is worked out before the room's events are built; `additional_creators` is checked
 * as the auth rules will check it.
 */
import { MatrixError } from "../../errors.js";
import {
  BuildEventError,
  CanonicalJsonError,
  isValidUserId,
  previewEventId,
  roomIdOfCreateEventId,
  type RoomVersion,
} from "../../events/index.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Clock } from "../clock.js";
import { planAdditionalCreators, type CreateRoomRequest } from "./create_room.js";

/** `additional_creators` for the create event, or 400 M_BAD_JSON for a value the rules would refuse. */
export function additionalCreatorsFor(req: CreateRoomRequest): string[] | undefined {
  let extra: string[] | undefined;
  try {
    extra = planAdditionalCreators(req);
  } catch (err) {
    throw new MatrixError(400, "M_BAD_JSON", (err as Error).message);
  }
  const bad = extra?.find((u) => !isValidUserId(u));
  if (bad !== undefined) throw new MatrixError(400, "M_BAD_JSON", `additional_creators: ${bad} is not a valid user ID`);
  return extra;
}

/**
 * Hands out room version 12 room IDs. The create event's timestamp is fixed when the ID is;
 * two identical create events in one millisecond would name the same room, so the timestamp
 * moves on until the ID is neither stored nor claimed by a creation still under way in this
 * process (claimed before any await, so concurrent requests see it).
 */
export class RoomIdClaims {
  readonly #claimed = new Set<string>();

  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
  ) {}

  async claim(sender: string, content: Record<string, unknown>, version: RoomVersion): Promise<{ roomId: string; createTs: number }> {
    for (let ts = this.clock.now(); ; ts++) {
      // As the persister builds a room's first event: depth 1, no prev or auth events.
      const roomId = roomIdOfCreateEventId(
        previewCreateId({
          version,
          roomId: "",
          sender,
          type: "m.room.create",
          stateKey: "",
          content,
          prevEvents: [],
          authEvents: [],
          depth: 1,
          originServerTs: ts,
        }),
      );
      if (this.#claimed.has(roomId)) continue;
      this.#claimed.add(roomId);
      if (!(await this.storage.rooms.getRoom(roomId))) return { roomId, createTs: ts };
      this.#claimed.delete(roomId);
    }
  }

  /** Once the room is stored, or its creation failed. */
  release(roomId: string): void {
    this.#claimed.delete(roomId);
  }
}

/** {@link previewEventId}, with content that cannot be an event refused as the persister refuses it. */
function previewCreateId(input: Parameters<typeof previewEventId>[0]): string {
  try {
    return previewEventId(input);
  } catch (err) {
    if (err instanceof CanonicalJsonError) throw new MatrixError(400, "M_BAD_JSON", `Content is not canonical JSON: ${err.message}`);
    if (err instanceof BuildEventError) throw new MatrixError(400, "M_BAD_JSON", err.message);
    throw err;
  }
}
