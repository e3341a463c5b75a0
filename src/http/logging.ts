import pino, { type Logger } from "pino";

/** Pino JSON on stdout, or pretty lines when a person is watching a terminal. */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  const options = {
    level,
    redact: { paths: ["req.headers.authorization", "*.access_token", "*.password"], censor: "[redacted]" },
  };
  if (!destination && process.stdout.isTTY) {
    return pino({ ...options, transport: { target: "pino-pretty", options: { translateTime: "SYS:standard" } } });
  }
  return pino(options, destination ?? pino.destination({ dest: 1, sync: false }));
}

/** Hides access tokens in a URL before it reaches a log line. */
export function redactUrl(url: string): string {
  return url.replace(/([?&]access_token=)[^&]*/g, "$1[redacted]");
}
