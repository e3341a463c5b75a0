/**
 * Builds one Fastify instance for one listener: Matrix errors, CORS, JSON
 * parsing, validation, 404/405, and a log line per request. It knows nothing
 * of the domain; routes are added by the caller.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyTypeProvider, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import FindMyWay, { type HTTPMethod } from "find-my-way";
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Logger } from "pino";
import { Errors, MatrixError } from "../errors.js";
import { UnstorableTextError } from "../storage/errors.js";
import { trackConnections } from "./connections.js";
import { MAX_JSON_NESTING, nestsDeeperThan } from "../json_nesting.js";
import { CORS_HEADERS } from "./cors.js";
import { lazyChildLogger, redactUrl, requestLineLogger } from "./logging.js";
import { writeResponsesPerTurn } from "./response_batching.js";
import type { Static, TSchema } from "../json_schema.js";
import { validationError, validatorCompiler } from "./validation.js";

/** Types a route's `request.body`, `params` and `query` by the schemas it declares. */
export interface SchemaTypeProvider extends FastifyTypeProvider {
  readonly validator: this["schema"] extends TSchema ? Static<this["schema"]> : unknown;
  readonly serializer: this["schema"] extends TSchema ? Static<this["schema"]> : unknown;
}

/** Requests log through `FastifyBaseLogger`: their loggers are made lazily (see `lazyChildLogger`). */
export type App = FastifyInstance<Server, IncomingMessage, ServerResponse, FastifyBaseLogger, SchemaTypeProvider>;

declare module "fastify" {
  interface FastifyRequest {
    /** Who made the request, for the request log line; set by authentication. */
    logUser?: string;
  }
}

export interface HttpOptions {
  logger: Logger;
  bodyLimit: number;
  trustProxy: boolean;
  /**
   * Requests under this path prefix get no CORS headers or OPTIONS answer from
   * here: their routes answer them, as the service they stand in for does (the
   * LiveKit endpoints, like lk-jwt-service).
   */
  ownCorsPrefix?: string;
}

const drains = new WeakMap<App, () => void>();

/**
 * Stopping begins: every response from now on, including those of requests already in
 * flight, ends its keep-alive connection (`Connection: close`), so closing the server need not
 * wait for clients to drop idle connections. Intake itself stops at `app.close()`.
 */
export function beginDraining(app: App): void {
  drains.get(app)?.();
}

const METHODS: HTTPMethod[] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"];

export function sendMatrixError(reply: FastifyReply, err: MatrixError): FastifyReply {
  const retry = err.extra.retry_after_ms;
  if (typeof retry === "number") reply.header("retry-after", String(Math.ceil(retry / 1000)));
  return reply.code(err.status).send(err.body());
}

function parseJson(_req: FastifyRequest, body: string, done: (err: Error | null, value?: unknown) => void): void {
  if (body.length === 0) return done(null, undefined);
  if (nestsDeeperThan(body, MAX_JSON_NESTING)) {
    return done(Errors.badJson(`JSON may nest at most ${MAX_JSON_NESTING} levels deep`));
  }
  try {
    done(null, JSON.parse(body));
  } catch {
    done(Errors.notJson("Content not JSON."));
  }
}

/** What a request Fastify refused before routing it is answered with. */
function frameworkError(error: FastifyError): MatrixError {
  if (error.code === "FST_ERR_MAX_PARAM_LENGTH") {
    return new MatrixError(414, "M_INVALID_PARAM", "A path segment is longer than 1,000 characters");
  }
  if (error.code === "FST_ERR_BAD_URL") return Errors.invalidParam("The path is not valid percent-encoding");
  return new MatrixError(error.statusCode ?? 400, "M_UNKNOWN", error.message);
}

/**
 * Requests Node's HTTP parser refuses before Fastify sees them (a raw non-ASCII byte in the
 * path, headers past Node's size limit, a malformed request line) are answered here, in the
 * Matrix envelope with CORS headers rather than Fastify's own body. The connection then ends, as
 * Node's would: what follows on it cannot be parsed.
 */
function clientError(err: Error & { code?: string; rawPacket?: unknown }, socket: Socket): void {
  if (err.code === "ECONNRESET" || socket.destroyed) return;
  const error =
    err.code === "HPE_HEADER_OVERFLOW"
      ? new MatrixError(431, "M_TOO_LARGE", "The request's headers are too large")
      : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
        ? new MatrixError(408, "M_UNKNOWN", "The request took too long to arrive")
        : new MatrixError(400, "M_UNKNOWN", "The request is not valid HTTP");
  if (socket.writable) {
    const body = JSON.stringify(error.body());
    // The answer to a HEAD has no body, or the client reads it as the start of another answer.
    const head = Buffer.isBuffer(err.rawPacket) && err.rawPacket.subarray(0, 5).toString("latin1") === "HEAD ";
    const cors = Object.entries(CORS_HEADERS).map(([k, v]) => `${k}: ${v}\r\n`).join("");
    socket.write(
      `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status]}\r\n${cors}content-type: application/json\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${head ? "" : body}`,
    );
  }
  socket.destroy(err);
}

/** The Matrix error a failed request is answered with; the cause of a 500 is logged here. */
function matrixErrorFor(error: FastifyError | MatrixError, request: FastifyRequest): MatrixError {
  if (error instanceof MatrixError) return error;
  if (error.validation) return validationError(error.validation, error.validationContext ?? "body", request.body);
  if (error.code === "FST_ERR_CTP_BODY_TOO_LARGE") return Errors.tooLarge();
  if (error instanceof UnstorableTextError) return Errors.badJson(error.message);
  if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
    return new MatrixError(error.statusCode, "M_UNKNOWN", error.message);
  }
  request.log.error({ err: error }, "unhandled error");
  return new MatrixError(500, "M_UNKNOWN", "Internal server error");
}

export function createHttpApp(opts: HttpOptions): App {
  const requestLine = requestLineLogger(opts.logger);
  const logRequestLine = (request: FastifyRequest, reply: FastifyReply, ms: number) => {
    // `reqId` first, as the binding of `request.log` would put it: the line is unchanged.
    requestLine.info(
      {
        reqId: request.id,
        method: request.method,
        path: redactUrl(request.url),
        status: reply.statusCode,
        ms: Math.round(ms * 10) / 10,
        user: request.logUser,
        ip: request.ip,
      },
      "request",
    );
  };
  const ownCors = (url: string) => opts.ownCorsPrefix !== undefined && url.startsWith(opts.ownCorsPrefix);
  const app = Fastify({
    loggerInstance: opts.logger,
    // One line per request comes from the onResponse hook below, not two from Fastify.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: lazyChildLogger,
    bodyLimit: opts.bodyLimit,
    trustProxy: opts.trustProxy,
    // Answered by `trackConnections` instead, in a Matrix envelope with CORS headers.
    return503OnClosing: false,
    clientErrorHandler: clientError,
    // Requests Fastify refuses before routing, also in a Matrix envelope with CORS headers.
    frameworkErrors: (error, request, reply) => {
      // No onResponse hook runs for these: their request line is written here.
      const start = performance.now();
      reply.raw.once("finish", () => logRequestLine(request, reply, performance.now() - start));
      if (!ownCors(request.url)) reply.headers(CORS_HEADERS);
      sendMatrixError(reply, frameworkError(error));
    },
    forceCloseConnections: "idle",
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 1000 },
  }).withTypeProvider<SchemaTypeProvider>() as unknown as App;

  // Declared up front, so that setting it does not change the request object's shape.
  app.decorateRequest("logUser", undefined);
  app.setValidatorCompiler(validatorCompiler);
  // Matrix clients do not always send a JSON content type; Synapse parses the body regardless.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "string" }, parseJson);

  // A second router that mirrors the real one, only to tell 405 from 404.
  const shadow = FindMyWay({ ignoreTrailingSlash: false, maxParamLength: 1000 });
  app.addHook("onRoute", (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const m of methods) if (m !== "OPTIONS" && m !== "HEAD") shadow.on(m as HTTPMethod, route.url, () => {});
  });

  // Into Fastify's header object rather than onto the raw response ahead of Fastify: headers
  // set that way send every header of the response through Node's slower setHeader path.
  app.addHook("onRequest", (request, reply, done) => {
    if (ownCors(request.url)) return done();
    reply.headers(CORS_HEADERS);
    // No identifier, token or name in a path or query string holds a NUL, and PostgreSQL cannot
    // take one in a text parameter: refused here rather than failing as a 500 in a query.
    if (request.url.includes("%00")) return done(Errors.invalidParam("Parameters may not contain NUL characters"));
    done();
  });
  // A CORS preflight is answered for any path.
  app.options("*", (request, reply) => {
    if (ownCors(request.url)) notFound(request, reply);
    else reply.send({});
  });

  writeResponsesPerTurn(app);

  // Callback-style rather than async: an async hook costs Fastify a promise and a microtask hop
  // per request, which the benchmark shows.
  app.addHook("onResponse", (request, reply, done) => {
    logRequestLine(request, reply, reply.elapsedTime);
    done();
  });

  const notFound = (request: FastifyRequest, reply: FastifyReply): void => {
    const path = request.url.split("?")[0]!;
    const other = METHODS.some((m) => m !== request.method && shadow.find(m, path));
    sendMatrixError(reply, other ? new MatrixError(405, "M_UNRECOGNIZED", "Unrecognized request") : Errors.unrecognized());
  };
  app.setNotFoundHandler(notFound);

  // Synchronous and returning nothing: a returned reply is a thenable that Fastify would wait on.
  app.setErrorHandler((error: FastifyError | MatrixError, request, reply) => {
    sendMatrixError(reply, matrixErrorFor(error, request));
  });

  drains.set(app, trackConnections(app));

  return app;
}
