import type { FastifyBaseLogger } from "fastify";
import pino, { type Bindings, type ChildLoggerOptions, type DestinationStream, type Level, type Logger } from "pino";

/** pino's own file-descriptor writer (SonicBoom). */
type Sink = ReturnType<typeof pino.destination>;

/**
 * Collects the lines logged during one turn of the event loop and hands them to the sink as
 * one write. Under load a turn answers many requests, each with its own log line; one write
 * per line cost more than formatting the line, and pino's asynchronous writer re-measured its
 * growing buffer on every line. The lines are handed over before the loop next waits for I/O,
 * so an idle server holds nothing back.
 */
export class TurnBatchedDestination implements DestinationStream {
  #lines: string[] = [];
  #scheduled = false;

  constructor(private readonly sink: Sink) {}

  write(line: string): boolean {
    this.#lines.push(line);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#endOfTurn);
    }
    return true;
  }

  /** pino's `logger.flush(cb)`. */
  flush(cb?: (err?: Error) => void): void {
    this.#drain();
    this.sink.flush(cb);
  }

  flushSync(): void {
    this.#drain();
    this.sink.flushSync();
  }

  readonly #endOfTurn = (): void => {
    this.#scheduled = false;
    this.#drain();
  };

  #drain(): void {
    if (this.#lines.length === 0) return;
    const chunk = this.#lines.length === 1 ? this.#lines[0]! : this.#lines.join("");
    this.#lines = [];
    this.sink.write(chunk);
  }
}

/**
 * Where production log lines go: a file descriptor or path (stdout by default), one
 * synchronous write per event-loop turn. Synchronous, as Node writes its own stdout to files,
 * terminals and Linux pipes: pino's asynchronous writer, with a write per turn, cost about 5 µs
 * more a request in the benchmark (each completion splits the next turn). The trade-off is the
 * same as Node's: a reader of stdout that stops reading stalls the server. When the process
 * exits (normally, by `process.exit`, or on an uncaught error) whatever is pending is written.
 */
export function logDestination(dest: number | string = 1): DestinationStream {
  const out = new TurnBatchedDestination(pino.destination({ dest, sync: true }));
  process.once("exit", () => out.flushSync());
  return out;
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

/** Query parameters that carry a secret: access tokens, and registration tokens being checked. */
const SECRET_PARAMS = new Set(["access_token", "token"]);
/** The admin API names a registration token in its path (`new` is the endpoint that makes one). */
const TOKEN_IN_PATH = /^(\/_synapse\/admin\/v1\/registration_tokens\/)(?!new(?:[/?]|$))[^/?]+/;

function paramName(raw: string): string {
  try {
    return decodeURIComponent(raw.replaceAll("+", " "));
  } catch {
    return raw;
  }
}

/**
 * Hides access and registration tokens in a URL before it reaches a log line. Parameter names
 * are compared decoded, as the query parser reads them: `?access%5Ftoken=` is an access token.
 */
export function redactUrl(url: string): string {
  // Nearly every URL has no token: skip the work for those.
  if (!url.includes("token") && !url.includes("%")) return url;
  const q = url.indexOf("?");
  const path = (q < 0 ? url : url.slice(0, q)).replace(TOKEN_IN_PATH, "$1[redacted]");
  if (q < 0) return path;
  const query = url
    .slice(q + 1)
    .split("&")
    .map((pair) => {
      const eq = pair.indexOf("=");
      if (eq < 0 || !SECRET_PARAMS.has(paramName(pair.slice(0, eq)))) return pair;
      return `${pair.slice(0, eq)}=[redacted]`;
    })
    .join("&");
  return `${path}?${query}`;
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

/**
 * The logger Fastify gives each request, bound to its id. Most requests never log through it
 * (their one line has a logger of its own), and a pino child costs about what formatting a
 * line does, so the child is made on first use.
 */
class LazyChildLogger implements FastifyBaseLogger {
  #child: Logger | undefined;

  constructor(
    private readonly parent: Logger,
    private readonly bindings: Bindings,
    private readonly options: ChildLoggerOptions,
  ) {}

  private get real(): Logger {
    return (this.#child ??= this.parent.child(this.bindings, this.options));
  }

  get level(): string {
    return this.#child?.level ?? this.options.level ?? this.parent.level;
  }

  set level(level: string) {
    this.real.level = level;
  }

  /** Whether a line at `level` would be written, without making the child to find out. */
  #enabled(level: Level): boolean {
    if (this.#child) return this.#child.isLevelEnabled(level);
    const values = this.parent.levels.values;
    return (values[level] ?? 0) >= (values[this.level] ?? Infinity);
  }

  fatal(obj: unknown, msg?: string, ...args: unknown[]): void {
    if (this.#enabled("fatal")) this.real.fatal(obj, msg, ...args);
  }
  error(obj: unknown, msg?: string, ...args: unknown[]): void {
    if (this.#enabled("error")) this.real.error(obj, msg, ...args);
  }
  warn(obj: unknown, msg?: string, ...args: unknown[]): void {
    if (this.#enabled("warn")) this.real.warn(obj, msg, ...args);
  }
  info(obj: unknown, msg?: string, ...args: unknown[]): void {
    if (this.#enabled("info")) this.real.info(obj, msg, ...args);
  }
  debug(obj: unknown, msg?: string, ...args: unknown[]): void {
    if (this.#enabled("debug")) this.real.debug(obj, msg, ...args);
  }
  trace(obj: unknown, msg?: string, ...args: unknown[]): void {
    if (this.#enabled("trace")) this.real.trace(obj, msg, ...args);
  }
  silent(): void {}

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.real.child(bindings, options);
  }
}

/** Fastify's `childLoggerFactory`. */
export function lazyChildLogger(logger: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions): FastifyBaseLogger {
  return new LazyChildLogger(logger as Logger, bindings, options);
}
