/** Connection bookkeeping for a clean stop: nothing idle holds the close up, nothing in flight is cut. */
import type { ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { MatrixError } from "../errors.js";
import type { App } from "./server.js";

/**
 * Tracks the listener's connections, and returns the function that begins draining them.
 *
 * A connection on which no request has arrived yet (a browser's preconnect, or one a client
 * opened and then abandoned) is not "idle" to Node, so closing the server would wait for it
 * until the headers timeout, a minute or more. There is nothing in flight on it: it is dropped
 * when the close begins.
 *
 * Draining makes every response from then on, those of requests already in flight included,
 * end its keep-alive connection (`Connection: close`), so that closing need not wait for
 * clients to drop idle connections.
 */
export function trackConnections(app: App): () => void {
  const unused = new Set<Socket>();
  // Each connection's latest response, so that draining can reach the ones still in flight.
  const latest = new Map<Socket, ServerResponse>();
  let draining = false;
  let closing = false;

  app.server.on("connection", (socket: Socket) => {
    unused.add(socket);
    socket.once("close", () => {
      unused.delete(socket);
      latest.delete(socket);
    });
  });
  // A hook rather than a second listener for the server's "request" event: Node copies the
  // listener array on every event that has more than one. The few requests Fastify refuses
  // before any hook (a malformed URL) leave their connection counted as unused, and so it is
  // dropped when the close begins.
  app.addHook("onRequest", (request, reply, done) => {
    const socket = request.raw.socket;
    unused.delete(socket);
    latest.set(socket, reply.raw);
    if (draining || closing) reply.header("connection", "close");
    // Once the close has begun, new work is refused at once: a long-poll started now would hold
    // the close up for its whole timeout.
    if (closing) return done(new MatrixError(503, "M_UNKNOWN", "The server is shutting down; try again shortly"));
    done();
  });
  app.addHook("preClose", async () => {
    closing = true;
    for (const socket of unused) socket.destroy();
    unused.clear();
  });

  return () => {
    if (draining) return;
    draining = true;
    for (const [socket, res] of latest) {
      if (res.writableFinished) continue; // idle: closing the server closes it
      if (!res.headersSent) res.setHeader("connection", "close");
      else res.once("finish", () => socket.end());
    }
  };
}
