/**
 * MSC4195 across servers, the SFU's side: another homeserver asks, signed as itself, for a token
 * on our SFU for one of its users (`POST /_matrix/federation/v1/rtc/livekit/get_token`). The user
 * must belong to that server and be joined to the room; remote users may subscribe but never
 * publish here (each participant publishes to an SFU of their own server), and never create rooms.
 */
import type { Logger } from "pino";
import type { LiveKitConfig } from "../../config/config.js";
import { Errors, MatrixError } from "../../errors.js";
import { isValidUserId, serverNameOf } from "../../events/ids.js";
import type { Storage } from "../../storage/interfaces.js";
import { livekitIdentity, livekitRoomAlias } from "./naming.js";
import type { SfuApi } from "./sfu.js";

/** The body, after the route's schema check. */
export interface FederatedTokenRequest {
  user_id: string;
  url?: string;
  room_id: string;
  slot_id: string;
  member_id?: string;
  member?: { id: string; claimed_device_id?: string };
}

const stripSlash = (u: string) => u.replace(/\/+$/, "");

export class FederatedTokens {
  constructor(
    private readonly settings: LiveKitConfig,
    private readonly sfu: SfuApi,
    private readonly storage: Storage,
    private readonly logger: Pick<Logger, "info">,
  ) {}

  async getToken(origin: string, req: FederatedTokenRequest): Promise<{ jwt: string }> {
    if (!isValidUserId(req.user_id)) throw Errors.invalidParam("`user_id` is not a user ID");
    if (serverNameOf(req.user_id) !== origin) throw Errors.forbidden(`${origin} may only ask for tokens for its own users`);
    const memberId = req.member?.id ?? req.member_id;
    if (memberId === undefined) throw Errors.missingParam("Missing parameter: member_id");
    // The participant identity is made from the device, as clients compute it from the membership.
    const deviceId = req.member?.claimed_device_id;
    if (deviceId === undefined) throw Errors.missingParam("Missing parameter: member.claimed_device_id");
    if (req.url !== undefined && stripSlash(req.url) !== stripSlash(this.settings.url)) {
      throw Errors.invalidParam("`url` is not one of this homeserver's LiveKit SFUs");
    }
    const membership = await this.storage.rooms.membership(req.room_id, req.user_id);
    if (membership?.membership !== "join") throw new MatrixError(403, "M_FORBIDDEN", "The user is not joined to this room");
    const room = livekitRoomAlias(req.room_id, req.slot_id);
    const identity = livekitIdentity(req.user_id, deviceId, memberId);
    const jwt = await this.sfu.mintToken(room, identity, { canPublish: false, canUpdateOwnMetadata: false });
    this.logger.info({ user: req.user_id, origin, lk_room: room, lk_identity: identity }, "issued a LiveKit token to a remote user (MSC4195 federation)");
    return { jwt };
  }
}
