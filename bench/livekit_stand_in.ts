/**
 * Benchmark child: the LiveKit SFU's room service (Twirp over HTTP) as far as `get_token` uses
 * it, CreateRoom answered at once. A process of its own, so that neither the load generator nor
 * either server shares its event loop. Tells the parent its URL (as the SFU's ws:// URL).
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { handleCommonMessages, type ReadyMessage } from "./protocol.js";

const server = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    const created = req.url === "/twirp/livekit.RoomService/CreateRoom";
    const body = created ? JSON.stringify({ sid: "RM_bench", name: "bench", emptyTimeout: 300 }) : JSON.stringify({ code: "bad_route", msg: "not here" });
    res.writeHead(created ? 200 : 404, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 60_000;

handleCommonMessages(() => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});

server.listen(0, "127.0.0.1", () => {
  process.send!({ type: "ready", url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}` } satisfies ReadyMessage);
});
