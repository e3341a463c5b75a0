/** MatrixRTC transport discovery (MSC4143): the one list clients are offered. */
import type { Config, RtcTransport } from "../config/config.js";

export class RtcService {
  readonly #transports: RtcTransport[];

  constructor(config: Config) {
    // Validated and rebuilt at config load; frozen so no request can alter it.
    this.#transports = structuredClone(config.matrixRtc.transports);
    Object.freeze(this.#transports);
  }

  transports(): RtcTransport[] {
    return this.#transports;
  }
}
