/** Access-token authentication for routes: who is calling, or a 401. */
import type { FastifyReply, FastifyRequest } from "fastify";
import { Errors } from "../errors.js";
import type { App } from "../http/server.js";
import type { AuthService, Requester } from "../services/auth.js";

declare module "fastify" {
  interface FastifyRequest {
    requester: Requester | null;
  }
}

/**
 * Every request starts with `requester: null`, so that authentication fills in a property the
 * object already has rather than changing its shape on the hot path.
 */
export function declareRequester(app: App): void {
  app.decorateRequest("requester", null);
}

/** The token from `Authorization: Bearer` or `?access_token=`; undefined when none was sent. */
export function tokenFrom(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  const query = (request.query as Record<string, unknown> | undefined)?.access_token;
  if (header !== undefined && query !== undefined) {
    throw Errors.missingToken();
  }
  if (header !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) throw Errors.missingToken();
    return match[1];
  }
  return typeof query === "string" && query !== "" ? query : undefined;
}

export type AuthMode = "required" | "optional";

export interface AuthRouteOptions {
  /** Guests are refused unless the route says otherwise, as in Synapse. */
  allowGuest?: boolean;
}

/**
 * Callback-style rather than async: a cached token is resolved without a promise or a
 * microtask hop, which matters on every authenticated request.
 */
export function authHook(auth: AuthService, mode: AuthMode, opts: AuthRouteOptions = {}) {
  return (request: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void): void => {
    const finish = (requester: Requester | undefined) => {
      if (!requester) return done(Errors.unknownToken());
      if (requester.isGuest && !opts.allowGuest) return done(Errors.guestForbidden());
      request.requester = requester;
      request.logUser = requester.userId;
      done();
    };
    let token: string | undefined;
    try {
      token = tokenFrom(request);
    } catch (err) {
      return done(err as Error);
    }
    if (token === undefined) return mode === "required" ? done(Errors.missingToken()) : done();
    const cached = auth.cachedOwner(token);
    if (cached) return finish(cached);
    auth.authenticate(token).then(finish, (err: unknown) => done(err as Error));
  };
}

/** The authenticated caller; only valid on routes with a required auth hook. */
export function requester(request: FastifyRequest): Requester {
  if (!request.requester) throw Errors.missingToken();
  return request.requester;
}
