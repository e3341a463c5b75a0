/** MatrixRTC transport discovery (MSC4143): the one list clients are offered. */
import type { Config, RtcTransport } from "../config/config.js";

export class RtcService {
  readonly #transports: RtcTransport[];

  constructor(config: Config) {
    // Validated and rebuilt at config load; frozen so no request can alter it.
    const transports = structuredClone(config.matrixRtc.transports);
    // The bundled LiveKit service goes first, unless the operator already placed it somewhere in
    // the list: then their order stands. Only the public URL is served, never the credentials.
    const own = config.livekit?.serviceUrl;
    const strip = (u: unknown) => (typeof u === "string" ? u.replace(/\/+$/, "") : u);
    if (own !== undefined && !transports.some((t) => strip(t.livekit_service_url) === own)) {
      transports.unshift({ type: "livekit", livekit_service_url: own });
    }
    this.#transports = transports;
    Object.freeze(this.#transports);
  }

  transports(): RtcTransport[] {
    return this.#transports;
  }
}
