/**
 * The Matrix error envelope. Services throw these; the HTTP layer renders them
 * as `{"errcode","error",...extra}` with the status the spec gives each case.
 */
export class MatrixError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = "MatrixError";
  }

  body(): Record<string, unknown> {
    return { errcode: this.errcode, error: this.message, ...this.extra };
  }
}

export const Errors = {
  forbidden: (msg: string) => new MatrixError(403, "M_FORBIDDEN", msg),
  notFound: (msg: string) => new MatrixError(404, "M_NOT_FOUND", msg),
  unrecognized: (msg = "Unrecognized request") => new MatrixError(404, "M_UNRECOGNIZED", msg),
  badJson: (msg: string) => new MatrixError(400, "M_BAD_JSON", msg),
  notJson: (msg = "Content not JSON.") => new MatrixError(400, "M_NOT_JSON", msg),
  missingParam: (msg: string) => new MatrixError(400, "M_MISSING_PARAM", msg),
  invalidParam: (msg: string) => new MatrixError(400, "M_INVALID_PARAM", msg),
  missingToken: () => new MatrixError(401, "M_MISSING_TOKEN", "Missing access token"),
  unknownToken: () => new MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown or expired access token", { soft_logout: false }),
  /** For endpoints outside the Client-Server API, where `soft_logout` means nothing. */
  unknownTokenPlain: () => new MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown or expired access token"),
  guestForbidden: () => new MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is not allowed here"),
  userInUse: () => new MatrixError(400, "M_USER_IN_USE", "User ID already taken."),
  invalidUsername: (msg: string) => new MatrixError(400, "M_INVALID_USERNAME", msg),
  limitExceeded: (retryAfterMs: number) =>
    new MatrixError(429, "M_LIMIT_EXCEEDED", "Too many requests", { retry_after_ms: retryAfterMs }),
  tooLarge: (msg = "Request body too large") => new MatrixError(413, "M_TOO_LARGE", msg),
  unknown: (msg: string, status = 400) => new MatrixError(status, "M_UNKNOWN", msg),
};
