/** How an outgoing fetch failed (safe_fetch.ts), in kinds callers map to their own errors. */

export type SafeFetchErrorKind =
  /** The URL does not parse, or is not http(s). */
  | "invalid_url"
  /** `allowHost` refused the host name. */
  | "blocked_host"
  /** The URL names an IP address the policy refuses. */
  | "blocked_address"
  /** The host name resolves to at least one address the policy refuses. */
  | "blocked_resolution"
  /** The host name does not resolve. */
  | "dns"
  /** Connecting, TLS, or the connection failing mid-response. */
  | "network"
  /** A response this client cannot read (an unknown or corrupt content encoding). */
  | "bad_response"
  | "timeout"
  | "too_large"
  | "too_many_redirects";

export class SafeFetchError extends Error {
  constructor(
    readonly kind: SafeFetchErrorKind,
    message: string,
    /** For logs. `headersReceived` tells a slow server (no answer) from a slow body. */
    readonly detail: { host?: string; headersReceived?: boolean } = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "SafeFetchError";
  }
}
