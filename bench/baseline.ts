/**
 * Benchmark child: a bare node:http server that answers each known request
 * with the bytes Switchboard answered it with (status line, headers in the
 * same order and case, body), and does nothing else. The yardstick for
 * Switchboard's overhead. Configured with `putReply`, it also answers any other PUT, once
 * its body has been read, with that JSON: the yardstick for sends.
 */
import http from "node:http";
import { handleCommonMessages, isMessage, routeKey, type ConfigureMessage, type ReadyMessage } from "./protocol.js";

interface Canned {
  status: number;
  statusMessage: string;
  headers: string[];
  body: Buffer;
}

const routes = new Map<string, Canned>();
let putReply: Buffer | undefined;

const server = http.createServer((req, res) => {
  const canned = routes.get(routeKey(req.method ?? "", req.url ?? "", req.headers.authorization));
  if (!canned && putReply && req.method === "PUT") {
    const reply = putReply;
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      let ok = true;
      try {
        JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        ok = false;
      }
      res.writeHead(ok ? 200 : 400, { "content-type": "application/json", "content-length": ok ? reply.length : 2 });
      res.end(ok ? reply : "{}");
    });
    return;
  }
  if (!canned) {
    res.writeHead(404, { "content-length": "0" });
    res.end();
    return;
  }
  res.writeHead(canned.status, canned.statusMessage, canned.headers);
  res.end(canned.body);
});

function listen(): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const addr = server.address();
      if (typeof addr !== "object" || !addr) return reject(new Error("no address"));
      resolve(`http://127.0.0.1:${addr.port}`);
    });
  });
}

let stopping = false;
function stop(): void {
  if (stopping) return;
  stopping = true;
  server.close(() => process.exit(0));
  server.closeAllConnections();
}

process.on("message", (m: unknown) => {
  if (isMessage<ConfigureMessage>(m, "configure")) {
    server.keepAliveTimeout = m.keepAliveTimeoutMs;
    if (m.putReply !== undefined) putReply = Buffer.from(m.putReply);
    for (const r of m.responses) {
      routes.set(r.key, {
        status: r.status,
        statusMessage: r.statusMessage,
        headers: r.headers,
        body: Buffer.from(r.bodyBase64, "base64"),
      });
    }
    listen().then(
      (url) => process.send!({ type: "ready", url } satisfies ReadyMessage),
      (err: unknown) => {
        console.error(err);
        process.exit(1);
      },
    );
  }
});
handleCommonMessages(stop);
