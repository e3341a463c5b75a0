/**
 * Builds one Fastify instance for one listener: Matrix errors, CORS, JSON
 * parsing, validation, 404/405, and a log line per request. It knows nothing
 * of the domain; routes are added by the caller.
 */
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import FindMyWay, { type HTTPMethod } from "find-my-way";
import type { Logger } from "pino";
import { Errors, MatrixError } from "../errors.js";
import { applyCors } from "./cors.js";
import { redactUrl, requestLineLogger } from "./logging.js";
import { validationError, validatorCompiler } from "./validation.js";

export type App = FastifyInstance<
  import("node:http").Server,
  import("node:http").IncomingMessage,
  import("node:http").ServerResponse,
  Logger,
  TypeBoxTypeProvider
>;

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

const METHODS: HTTPMethod[] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"];

export function sendMatrixError(reply: FastifyReply, err: MatrixError): FastifyReply {
  const retry = err.extra.retry_after_ms;
  if (typeof retry === "number") reply.header("retry-after", String(Math.ceil(retry / 1000)));
  return reply.code(err.status).send(err.body());
}

function parseJson(_req: FastifyRequest, body: string, done: (err: Error | null, value?: unknown) => void): void {
  if (body.length === 0) return done(null, undefined);
  try {
    done(null, JSON.parse(body));
  } catch {
    done(Errors.notJson("Content not JSON."));
  }
}

export function createHttpApp(opts: HttpOptions): App {
  const app = Fastify({
    loggerInstance: opts.logger,
    // One line per request comes from the onResponse hook below, not two from Fastify.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: opts.bodyLimit,
    trustProxy: opts.trustProxy,
    return503OnClosing: true,
    forceCloseConnections: "idle",
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 1000 },
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as App;

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

  // The two hooks every request runs are callback-style rather than async: an async hook costs
  // Fastify a promise and a microtask hop per request, which the benchmark shows.
  app.addHook("onRequest", (request, reply, done) => {
    if (opts.ownCorsPrefix !== undefined && request.url.startsWith(opts.ownCorsPrefix)) return done();
    applyCors(reply);
    if (request.method === "OPTIONS") {
      reply.code(200).send({});
      return;
    }
    done();
  });

  const requestLine = requestLineLogger(opts.logger);
  app.addHook("onResponse", (request, reply, done) => {
    // `reqId` first, as the binding of `request.log` would put it: the line is unchanged.
    requestLine.info(
      {
        reqId: request.id,
        method: request.method,
        path: redactUrl(request.url),
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime * 10) / 10,
        user: request.logUser,
        ip: request.ip,
      },
      "request",
    );
    done();
  });

  app.setNotFoundHandler(async (request, reply) => {
    const path = request.url.split("?")[0]!;
    const other = METHODS.some((m) => m !== request.method && shadow.find(m, path));
    if (other) return sendMatrixError(reply, new MatrixError(405, "M_UNRECOGNIZED", "Unrecognized request"));
    return sendMatrixError(reply, Errors.unrecognized());
  });

  app.setErrorHandler(async (error: FastifyError | MatrixError, request, reply) => {
    if (error instanceof MatrixError) return sendMatrixError(reply, error);
    if (error.validation) {
      return sendMatrixError(reply, validationError(error.validation, error.validationContext ?? "body", request.body));
    }
    if (error.code === "FST_ERR_CTP_BODY_TOO_LARGE") return sendMatrixError(reply, Errors.tooLarge());
    if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
      return sendMatrixError(reply, new MatrixError(error.statusCode, "M_UNKNOWN", error.message));
    }
    request.log.error({ err: error }, "unhandled error");
    return sendMatrixError(reply, new MatrixError(500, "M_UNKNOWN", "Internal server error"));
  });

  // A connection on which no request has arrived yet (a browser's preconnect, or one a client
  // opened and then abandoned) is not "idle" to Node, so closing the server would wait for it
  // until the headers timeout, a minute or more. There is nothing in flight on it: drop it.
  const unused = new Set<import("node:net").Socket>();
  app.server.on("connection", (socket: import("node:net").Socket) => {
    unused.add(socket);
    socket.once("close", () => unused.delete(socket));
  });
  app.server.on("request", (req: import("node:http").IncomingMessage) => unused.delete(req.socket));
  app.addHook("preClose", async () => {
    for (const socket of unused) socket.destroy();
    unused.clear();
  });

  return app;
}
