/**
 * MSC4195 across servers, the asking side: a user of ours wants a LiveKit token for an SFU that
 * another homeserver runs (`server_name` in their `get_token` request), so we ask that server at
 * `POST /_matrix/federation/v1/rtc/livekit/get_token` (or the unstable `io.element.msc4195` form),
 * signed as ourselves, vouching for the user. Its 400 and 403 answers reach the client as they
 * are; anything else is 502 `M_UNKNOWN`.
 */
import type { Logger } from "pino";
import { MatrixError } from "../../errors.js";
import { isValidServerName } from "../../events/ids.js";
import { FederationError, type FederationAnswer, type FederationClient } from "./client.js";

const STABLE = "/_matrix/federation/v1/rtc/livekit/get_token";
const UNSTABLE = "/_matrix/federation/unstable/io.element.msc4195/rtc/livekit/get_token";

export interface RelayedTokenRequest {
  serverName: string;
  userId: string;
  deviceId: string;
  url?: string;
  roomId: string;
  slotId: string;
  memberId: string;
}

const failed = (why: string) => new MatrixError(502, "M_UNKNOWN", why);

export class RtcRelay {
  constructor(
    private readonly client: FederationClient,
    private readonly logger: Pick<Logger, "info" | "warn">,
  ) {}

  async getToken(req: RelayedTokenRequest): Promise<{ jwt: string }> {
    if (!isValidServerName(req.serverName)) throw new MatrixError(400, "M_INVALID_PARAM", "`server_name` is not a server name");
    // The newest body, plus the older `member` object so the SFU's server can name the participant by device.
    const body: Record<string, unknown> = {
      room_id: req.roomId,
      slot_id: req.slotId,
      member_id: req.memberId,
      member: { id: req.memberId, claimed_device_id: req.deviceId },
      user_id: req.userId,
    };
    if (req.url !== undefined) body.url = req.url;
    let res: FederationAnswer;
    try {
      res = await this.client.request(req.serverName, { method: "POST", path: STABLE, body });
      // A server that has only the unstable endpoint answers the stable one 404 M_UNRECOGNIZED.
      if (res.status === 404 && res.json.errcode === "M_UNRECOGNIZED") res = await this.client.request(req.serverName, { method: "POST", path: UNSTABLE, body });
    } catch (err) {
      if (!(err instanceof FederationError)) throw err;
      this.logger.info({ server: req.serverName, err: err.message }, "could not relay a LiveKit token request");
      throw failed(`Unable to ask ${req.serverName} for a LiveKit token`);
    }
    if (res.status === 200 && typeof res.json.jwt === "string" && res.json.jwt !== "") return { jwt: res.json.jwt };
    if ((res.status === 400 || res.status === 403) && typeof res.json.errcode === "string") {
      throw new MatrixError(res.status, res.json.errcode, typeof res.json.error === "string" ? res.json.error : `${req.serverName} refused the request`);
    }
    this.logger.info({ server: req.serverName, status: res.status, errcode: res.json.errcode }, "a remote server did not issue a LiveKit token");
    throw failed(`${req.serverName} did not issue a LiveKit token (${res.status})`);
  }
}
