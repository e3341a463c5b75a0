/** Types shared by the authorisation rules. */
import type { PowerLevels } from "./power_levels.js";
import type { RoomVersion } from "./room_versions.js";
import type { Pdu, StateLookup } from "./types.js";

/** The event is not allowed. `message` says why; `rule` is the spec's rule number (e.g. "4.3.2"). */
export class AuthError extends Error {
  constructor(
    message: string,
    readonly rule: string,
  ) {
    super(message);
    this.name = "AuthError";
  }
}

export interface AuthOptions {
  /**
   * Checks that `pdu` carries a valid signature from `serverName` (rule 4.2, for
   * `join_authorised_via_users_server`). Without it, an event with that key is refused,
   * since the rule cannot be checked.
   */
  verifyServerSignature?: (pdu: Pdu, serverName: string) => boolean;
}

/** What the membership rules need; built once per check. */
export interface AuthContext {
  pdu: Pdu;
  version: RoomVersion;
  state: StateLookup;
  create: Pdu;
  levels: PowerLevels;
  options: AuthOptions;
  /** The event ID of the create event, computed only if a rule needs it. */
  createEventId: () => string;
}
