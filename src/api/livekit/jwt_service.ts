/**
 * lk-jwt-service's HTTP contract, under `livekit.path`, so that its
 * `livekit_service_url` can point at Switchboard unchanged. Methods, CORS
 * headers, OPTIONS answers and empty 405 bodies are that service's; the
 * bodies are passed on raw, because it decodes JSON its own way.
 */
import type { FastifyReply } from "fastify";
import { MatrixError } from "../../errors.js";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import type { LiveKitService } from "../../services/livekit/service.js";

/** What lk-jwt-service sends on every response of its POST endpoints, OPTIONS included. */
export const LIVEKIT_CORS_HEADERS = {
  "content-type": "application/json",
  "access-control-allow-origin": "*",
  "access-control-allow-methods": "POST",
  "access-control-allow-headers": "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token",
} as const;

type Handler = (lk: LiveKitService, body: string | undefined) => Promise<unknown>;

const ENDPOINTS: Record<string, Handler> = {
  "/get_token": (lk, body) => lk.getToken(body),
  "/sfu/get": (lk, body) => lk.sfuGet(body),
  "/delegate_delayed_leave": (lk, body) => lk.delegateDelayedLeave(body),
};

const OTHER_METHODS = ["GET", "PUT", "DELETE", "PATCH"] as const;

/** Sets the status and headers, and returns the body for the handler to return. */
function json(reply: FastifyReply, status: number, body: unknown): string {
  reply.code(status).headers(LIVEKIT_CORS_HEADERS);
  return JSON.stringify(body);
}

export function registerLiveKitJwtRoutes(app: App, services: Services): void {
  const lk = services.livekit;
  if (!lk) return;
  const base = lk.settings.path;
  const log = app.log;

  void app.register(async (scope) => {
    // The raw text reaches the service, which decodes it as lk-jwt-service's Go decoder would.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser("*", { parseAs: "string" }, (_request, body, done) => done(null, body));

    // Set before the body is read, so that a refusal of the body itself (413) carries them too.
    const onRequest = (_request: unknown, reply: FastifyReply, done: () => void) => {
      reply.headers(LIVEKIT_CORS_HEADERS);
      done();
    };
    for (const [suffix, handle] of Object.entries(ENDPOINTS)) {
      const url = base + suffix;
      scope.post(url, { onRequest }, async (request, reply) => {
        try {
          return json(reply, 200, await handle(lk, request.body as string | undefined));
        } catch (err) {
          if (err instanceof MatrixError) return json(reply, err.status, err.body());
          log.error({ err }, "LiveKit service failed");
          return json(reply, 500, { errcode: "M_UNKNOWN", error: "Internal server error" });
        }
      });
      scope.options(url, (_request, reply) => {
        reply.code(200).headers(LIVEKIT_CORS_HEADERS).send();
      });
      scope.route({
        method: [...OTHER_METHODS],
        url,
        onRequest,
        handler: (_request, reply) => {
          reply.code(405).headers(LIVEKIT_CORS_HEADERS).send();
        },
      });
    }

    scope.get(`${base}/healthz`, (_request, reply) => {
      reply.code(200).send();
    });
    scope.route({
      method: ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"],
      url: `${base}/healthz`,
      handler: (_request, reply) => {
        reply.code(405).send();
      },
    });

    // LiveKit's participant webhooks. Like lk-jwt-service, always 200: a sender learns nothing from it.
    scope.post(`${base}/sfu_webhook`, async (request, reply) => {
      const auth = request.headers.authorization;
      await lk.webhook(request.body as string | undefined, typeof auth === "string" ? auth : undefined);
      return reply.code(200).send();
    });
  });
}
