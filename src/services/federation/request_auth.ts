/**
 * Who sent an incoming federation request: the `X-Matrix` Authorization header must name this
 * server as destination (when it names one), an origin `federation_domain_whitelist` allows,
 * and carry that origin's valid signature over the request, by a key valid now.
 */
import { MatrixError } from "../../errors.js";
import { isValidServerName } from "../../events/ids.js";
import type { Clock } from "../clock.js";
import type { KeyRing } from "./key_ring.js";
import { parseXMatrix, verifyRequestSignature } from "./x_matrix.js";

export interface IncomingRequest {
  method: string;
  /** Path and query exactly as received. */
  uri: string;
  authorization: string | undefined;
  /** The parsed JSON body, if the request has one. */
  content: unknown;
}

const unauthorized = (why: string) => new MatrixError(401, "M_UNAUTHORIZED", why);

export class RequestAuthenticator {
  constructor(
    private readonly serverName: string,
    private readonly keys: KeyRing,
    private readonly isAllowed: (serverName: string) => boolean,
    private readonly clock: Clock,
    /** Told of every origin that authenticated (the sender ends its backoff for it). */
    private readonly onAuthenticated?: (origin: string) => void,
  ) {}

  /** The origin server; 401 `M_UNAUTHORIZED` for a bad or missing signature, 403 for a refused origin. */
  async authenticate(req: IncomingRequest): Promise<string> {
    if (!req.authorization) throw unauthorized("Missing Authorization headers");
    const params = parseXMatrix(req.authorization);
    if (!params) throw unauthorized("The Authorization header is not a valid X-Matrix header");
    if (!isValidServerName(params.origin)) throw unauthorized("The origin is not a server name");
    if (params.destination !== undefined && params.destination !== this.serverName) {
      throw unauthorized(`The request is for ${params.destination}, not this server`);
    }
    if (params.origin === this.serverName) throw unauthorized("The request claims to come from this server");
    if (!this.isAllowed(params.origin)) throw new MatrixError(403, "M_FORBIDDEN", `Federation denied with ${params.origin}`);
    const key = await this.keys.verifyKey(params.origin, params.key, this.clock.now());
    if (!key) throw unauthorized(`No valid key ${params.key} of ${params.origin} could be found`);
    if (!verifyRequestSignature(params, req.method, req.uri, this.serverName, req.content, key)) {
      throw unauthorized(`The request's signature by ${params.origin} is not valid`);
    }
    this.onAuthenticated?.(params.origin);
    return params.origin;
  }
}
