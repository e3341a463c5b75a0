/**
 * Benchmark child for bench/media.ts: a bare node:http server that does the least a media
 * repository must. A known GET is answered with Switchboard's headers for it and the same bytes,
 * streamed from a file on disk with fs.createReadStream (no database, no auth). Any POST has its
 * body streamed to a new file and fsync'd, as Switchboard makes an upload durable before it
 * answers, then is answered with a `content_uri` of Switchboard's length. It does not hash the
 * body or rename the file into place, which Switchboard also does: that is part of its cost.
 */
import { createReadStream, createWriteStream } from "node:fs";
import { open } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { handleCommonMessages, isMessage, type ReadyMessage } from "./protocol.js";

/** One download the baseline answers. */
export interface MediaRoute {
  /** The request's path and query, exactly as sent. */
  url: string;
  file: string;
  /** Switchboard's response headers, less those node:http adds itself (Date, Connection, Keep-Alive). */
  headers: Record<string, string>;
}

/** The driver tells the baseline what to serve and where to put uploads. */
export interface MediaConfigureMessage {
  type: "media-configure";
  routes: MediaRoute[];
  uploadDir: string;
}

const routes = new Map<string, MediaRoute>();
let uploadDir = "";
let uploads = 0;
const REPLY = Buffer.from(JSON.stringify({ content_uri: `mxc://localhost/${"x".repeat(24)}` }));

async function receive(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const file = path.join(uploadDir, `upload.${++uploads}`);
  await pipeline(req, createWriteStream(file, { flags: "wx", mode: 0o600 }));
  const handle = await open(file, "r+");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
  res.writeHead(200, { "content-type": "application/json", "content-length": REPLY.length });
  res.end(REPLY);
}

const server = http.createServer((req, res) => {
  if (req.method === "POST") {
    receive(req, res).catch((err: unknown) => {
      console.error(err);
      res.destroy();
    });
    return;
  }
  const route = routes.get(req.url ?? "");
  if (!route) {
    res.writeHead(404, { "content-length": "0" });
    res.end();
    return;
  }
  res.writeHead(200, route.headers);
  createReadStream(route.file).pipe(res);
});

let stopping = false;
function stop(): void {
  if (stopping) return;
  stopping = true;
  server.close(() => process.exit(0));
  server.closeAllConnections();
}

process.on("message", (m: unknown) => {
  if (!isMessage<MediaConfigureMessage>(m, "media-configure")) return;
  for (const r of m.routes) routes.set(r.url, r);
  uploadDir = m.uploadDir;
  server.listen(0, "127.0.0.1", () => {
    const addr = server.address();
    if (typeof addr !== "object" || !addr) throw new Error("no address");
    process.send!({ type: "ready", url: `http://127.0.0.1:${addr.port}` } satisfies ReadyMessage);
  });
});
handleCommonMessages(stop);
