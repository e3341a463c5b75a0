/**
 * Fronts for the `switchboard doctor` tests: a plain-HTTP proxy that can rewrite JSON answers and
 * hold requests until the test lets them through, and an HTTPS front (a test CA's certificate)
 * that can answer `/.well-known/matrix/server` itself, as a reverse proxy in front of a
 * homeserver does.
 */
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";

export interface TestProxy {
  /** `127.0.0.1:PORT`. */
  name: string;
  /** Resolves with the path of the first request held (see `hold`). */
  firstHeld: Promise<string>;
  /** Lets every held request through. */
  release(): void;
  close(): Promise<void>;
}

type Listener = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** A JSON answer to change: the one at `path`, with `json` making the new body from the old. */
export interface Rewrite {
  path: string;
  json: (body: unknown) => unknown;
}

/** Passes a request on to `target()`, with `rewrite` applied to the answer it names. */
function forwarder(target: () => string, rewrite?: Rewrite): Listener {
  return (req, res) => {
    const upstream = http.request(target() + (req.url ?? "/"), { method: req.method, headers: req.headers }, (up) => {
      if (!rewrite || (req.url ?? "/").split("?")[0] !== rewrite.path || !/json/.test(String(up.headers["content-type"]))) {
        res.writeHead(up.statusCode ?? 502, up.headers);
        return void up.pipe(res);
      }
      const chunks: Buffer[] = [];
      up.on("data", (c: Buffer) => chunks.push(c));
      up.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          return void res.writeHead(up.statusCode ?? 502, up.headers).end(text);
        }
        const out = JSON.stringify(rewrite.json(body));
        const headers = { ...up.headers, "content-length": String(Buffer.byteLength(out)) };
        delete headers["transfer-encoding"];
        res.writeHead(up.statusCode ?? 502, headers).end(out);
      });
    });
    upstream.on("error", () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
    req.pipe(upstream);
  };
}

function closer(server: http.Server): () => Promise<void> {
  return () =>
    new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
}

/**
 * A reverse proxy in front of `target()`, changing the answer `rewrite` names; `hold(method, url)`
 * keeps a request waiting until `release()`.
 */
export async function testProxy(target: () => string, opts: { rewrite?: Rewrite; hold?: (method: string, url: string) => boolean } = {}): Promise<TestProxy> {
  const forward = forwarder(target, opts.rewrite);
  const waiting: (() => void)[] = [];
  let released = false;
  let heldFirst: (path: string) => void = () => {};
  const firstHeld = new Promise<string>((resolve) => (heldFirst = resolve));
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0]!;
    if (!released && opts.hold?.(req.method ?? "GET", req.url ?? "/")) {
      waiting.push(() => forward(req, res));
      heldFirst(path);
      return;
    }
    forward(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const release = () => {
    released = true;
    for (const go of waiting.splice(0)) go();
  };
  const close = closer(server);
  return {
    name: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    firstHeld,
    release,
    close: async () => {
      release();
      await close();
    },
  };
}

export interface DoctorFront {
  port: number;
  /** The plain-HTTP homeserver behind it; set once it runs. */
  target: string;
  /** What `/.well-known/matrix/server` answers: passed on to the homeserver (undefined), or 404 here. */
  serverWellKnown?: 404;
  close(): Promise<void>;
}

/** An HTTPS front with `tls`'s certificate, passing requests on to `front.target`. */
export async function doctorFront(tls: { key: string; cert: string }): Promise<DoctorFront> {
  const front: DoctorFront = { port: 0, target: "", close: async () => undefined };
  const forward = forwarder(() => front.target);
  const server = https.createServer(tls, (req, res) => {
    if (front.serverWellKnown === 404 && (req.url ?? "").startsWith("/.well-known/matrix/server")) {
      return void res.writeHead(404, { "content-type": "text/html" }).end("<h1>404 Not Found</h1>");
    }
    forward(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  front.port = (server.address() as AddressInfo).port;
  front.close = closer(server);
  return front;
}
