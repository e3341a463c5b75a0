/** Server-Server request authentication for routes: which server is calling, or a 401/403. */
import type { FastifyRequest } from "fastify";
import type { FederationService } from "../../services/federation/service.js";

const origins = new WeakMap<FastifyRequest, string>();

/**
 * A `preValidation` hook: it runs once the body is parsed (the signature covers it) and before
 * the body's shape is judged, so an unauthenticated caller learns nothing about the endpoint.
 */
export function federationAuthHook(federation: FederationService) {
  return async (request: FastifyRequest): Promise<void> => {
    const origin = await federation.auth.authenticate({
      method: request.method,
      uri: request.raw.url ?? request.url,
      authorization: request.headers.authorization,
      content: request.body,
    });
    origins.set(request, origin);
    request.logUser = origin;
  };
}

/** The authenticated origin server of a request that passed `federationAuthHook`. */
export function originOf(request: FastifyRequest): string {
  const origin = origins.get(request);
  if (origin === undefined) throw new Error("federationAuthHook did not run for this route");
  return origin;
}
