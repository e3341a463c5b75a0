/** `GET /_matrix/client/versions`: what this server speaks, and nothing it does not. */
import type { FastifyReply, FastifyRequest } from "fastify";
import type { App } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { authHook } from "../auth.js";

/**
 * Spec versions clients need to talk to this server at all. Clients gate features on these by
 * exact string: matrix-js-sdk, for one, uses `/relations` and server-side threads once "v1.3"
 * or "v1.4" is listed, and `/hierarchy` arrives with "v1.2", none of which Switchboard has
 * yet. So the list holds v1.1, and "v1.11" for authenticated media, which Element Web's
 * service worker and matrix-js-sdk look for by that string (Element X: any version from
 * v1.11). The later features that do work are announced one by one below.
 */
const SPEC_VERSIONS = ["r0.6.1", "v1.1"];

function specVersions(services: Services): string[] {
  return services.config.media.enabled ? [...SPEC_VERSIONS, "v1.11"] : SPEC_VERSIONS;
}

export function versionsBody(services: Services) {
  const { features } = services.config;
  return {
    versions: specVersions(services),
    unstable_features: {
      "org.matrix.msc4143": features.msc4143,
      "org.matrix.msc4140": services.delayedEvents.enabled,
      // MSC4140 was accepted: the stable endpoints (`/v3/…/delayed_event`, `/v1/delayed_events`) work.
      "org.matrix.msc4140.stable": services.delayedEvents.enabled,
      // Sticky events: sent with the query parameter, delivered in /sync's `msc4354_sticky` section.
      "org.matrix.msc4354": features.msc4354,
      // `state_after` on /sync (MSC4222), which matrix-js-sdk and Element Call use.
      "org.matrix.msc4222": true,
      // Simplified sliding sync (MSC4186, Synapse's dialect), which Element X requires.
      "org.matrix.simplified_msc3575": true,
      // Private read receipts (`m.read.private`), stable since v1.4.
      "org.matrix.msc2285.stable": true,
    },
  };
}

export function registerVersionsRoutes(app: App, services: Services): void {
  const body = JSON.stringify(versionsBody(services));
  const varyOnAuth = (_request: FastifyRequest, reply: FastifyReply, done: () => void) => {
    // Set before authentication so that a 401 for a bad token varies too.
    reply.header("vary", "Authorization");
    done();
  };
  const onRequest = [varyOnAuth, authHook(services.auth, "optional", { allowGuest: true })];
  // Synchronous throughout, as clients poll this, and returns the body for Fastify to send (see
  // `writeResponsesPerTurn`).
  app.get("/_matrix/client/versions", { onRequest }, (request, reply) => {
    reply.header("cache-control", request.requester ? "private, no-cache" : "public, max-age=600");
    reply.type("application/json");
    return body;
  });
  // Its CORS preflight as well, so that every answer on this path varies on the token.
  app.options("/_matrix/client/versions", { onRequest: varyOnAuth }, () => ({}));
}
