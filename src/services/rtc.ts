/** MatrixRTC transport discovery (MSC4143): the one list clients are offered. */
import type { Config, RtcTransport } from "../config/config.js";

export class RtcService {
  readonly #transports: RtcTransport[];

  constructor(config: Config) {
    // Validated and rebuilt at config load; frozen so no request can alter it.
    const transports = structuredClone(config.matrixRtc.transports);
    // The bundled LiveKit service goes first, unless the operator already placed it somewhere in
    // the list: then their order stands. It carries both the SFU (`url`, for clients that ask the
    // homeserver for tokens, MSC4195) and the service (`livekit_service_url`, for those that use
    // OpenID), so every client finds its path. Only public URLs are served, never the credentials.
    const lk = config.livekit;
    if (lk !== undefined) {
      const strip = (u: unknown) => (typeof u === "string" ? u.replace(/\/+$/, "") : u);
      const own = transports.find((t) => strip(t.livekit_service_url) === lk.serviceUrl);
      if (own === undefined) transports.unshift({ type: "livekit", url: lk.url, livekit_service_url: lk.serviceUrl });
      else if (own.url === undefined) own.url = lk.url;
    }
    this.#transports = transports;
    Object.freeze(this.#transports);
  }

  transports(): RtcTransport[] {
    return this.#transports;
  }
}
