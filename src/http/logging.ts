import pino, { type DestinationStream, type Logger } from "pino";

/** Where production log lines go: asynchronous writes to a file descriptor or path (stdout by default). */
export function logDestination(dest: number | string = 1): DestinationStream {
  return pino.destination({ dest, sync: false });
}

/** Pino JSON on stdout, or pretty lines when a person is watching a terminal. */
export function createLogger(level: string, destination?: NodeJS.WritableStream | DestinationStream): Logger {
  const options = {
    level,
    redact: { paths: ["req.headers.authorization", "*.access_token", "*.password"], censor: "[redacted]" },
  };
  if (!destination && process.stdout.isTTY) {
    return pino({ ...options, transport: { target: "pino-pretty", options: { translateTime: "SYS:standard" } } });
  }
  return pino(options, destination ?? logDestination());
}

/** Hides access tokens in a URL before it reaches a log line. */
export function redactUrl(url: string): string {
  // Nearly every URL has no token: skip the regular expression for those.
  if (!url.includes("access_token=")) return url;
  return url.replace(/([?&]access_token=)[^&]*/g, "$1[redacted]");
}

/**
 * The logger for the one line written per request. The line's fields are fixed
 * scalars that hold no secret (the URL goes through `redactUrl` first), so
 * redaction could never change it, yet with a wildcard path pino runs its
 * redactor on every field: that was about half the cost of the line. Hence a
 * child with redaction off, used for that line only. Anything added to the
 * request line must be safe to log as it is.
 */
export function requestLineLogger(logger: Logger): Logger {
  return logger.child({}, { redact: [] });
}
