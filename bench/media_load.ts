/**
 * The client side of bench/media.ts: a fixed number of GETs of a large body over a few
 * keep-alive connections, and single uploads. Download bodies are counted, never gathered:
 * concatenating a megabyte in 64 KiB chunks per request would cost the generator, which shares
 * the machine's cores with the server it measures, more than the server spends sending it.
 */
import http from "node:http";
import net from "node:net";

export interface CountResult {
  /** Answers received in full. */
  requests: number;
  non2xx: number;
  /** Connections that failed, closed early, or answered with a body of the wrong length. */
  errors: number;
  /** Body bytes received. */
  bytes: number;
  /** Per answer, milliseconds. */
  latencies: number[];
  wallMs: number;
}

const END_OF_HEAD = Buffer.from("\r\n\r\n");

/**
 * `total` GETs of `path` shared out over `connections` keep-alive connections to `base`, each
 * sending the next request as soon as the last answer is complete. Every answer's body must be
 * `expectedLength` bytes long (checked against Content-Length and the bytes that arrive).
 */
export function fixedLoad(base: string, path: string, token: string, connections: number, total: number, expectedLength: number): Promise<CountResult> {
  const url = new URL(base);
  const request = Buffer.from(`GET ${path} HTTP/1.1\r\nhost: ${url.host}\r\nauthorization: Bearer ${token}\r\n\r\n`);
  const result: CountResult = { requests: 0, non2xx: 0, errors: 0, bytes: 0, latencies: [], wallMs: 0 };
  let started = 0;
  const t0 = performance.now();
  const connection = () =>
    new Promise<void>((resolve) => {
      const socket = net.connect(Number(url.port), url.hostname);
      socket.setNoDelay(true);
      /** The head so far, until it is complete; then undefined while the body arrives. */
      let head: Buffer | undefined;
      let remaining = 0;
      let sentAt = 0;
      let done = false;
      const next = () => {
        if (started >= total) {
          done = true;
          socket.end();
          return;
        }
        started++;
        head = Buffer.alloc(0);
        sentAt = performance.now();
        socket.write(request);
      };
      const fail = () => {
        if (!done) result.errors++;
        done = true;
        socket.destroy();
      };
      const body = (n: number) => {
        remaining -= n;
        result.bytes += n;
        // One request in flight per connection, so nothing may follow the answer.
        if (remaining < 0) return fail();
        if (remaining > 0) return;
        result.requests++;
        result.latencies.push(performance.now() - sentAt);
        next();
      };
      socket.on("connect", next);
      socket.on("data", (chunk: Buffer) => {
        if (!head) return body(chunk.length);
        head = head.length ? Buffer.concat([head, chunk]) : chunk;
        const end = head.indexOf(END_OF_HEAD);
        if (end < 0) return;
        const text = head.toString("latin1", 0, end);
        const length = /\r\ncontent-length: *(\d+)/i.exec(text);
        if (!length || Number(length[1]) !== expectedLength) return fail();
        if (text[9] !== "2") result.non2xx++;
        const rest = head.length - end - 4;
        head = undefined;
        remaining = expectedLength;
        body(rest);
      });
      socket.on("error", fail);
      socket.on("close", () => {
        if (!done) result.errors++;
        resolve();
      });
    });
  return Promise.all(Array.from({ length: Math.min(connections, total) }, connection)).then(() => {
    result.wallMs = performance.now() - t0;
    return result;
  });
}

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  ms: number;
}

const TIMEOUT_MS = 120_000;

/** One request over a fresh connection, its whole answer gathered (for small answers and checks). */
export function call(base: string, method: string, path: string, token: string, body?: Buffer, contentType?: string): Promise<Answer> {
  const headers: http.OutgoingHttpHeaders = { authorization: `Bearer ${token}` };
  if (body) Object.assign(headers, { "content-type": contentType ?? "application/octet-stream", "content-length": body.length });
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, base), { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), ms: performance.now() - t0 }));
      res.on("error", reject);
    });
    req.setTimeout(TIMEOUT_MS, () => req.destroy(new Error(`${method} ${path}: no answer within ${TIMEOUT_MS / 1000} s`)));
    req.on("error", reject);
    req.end(body);
  });
}

/** `POST /upload`: returns the `mxc://` URI, or throws with the answer. */
export async function upload(base: string, token: string, body: Buffer, contentType: string, filename: string): Promise<{ uri: string; ms: number }> {
  const res = await call(base, "POST", `/_matrix/media/v3/upload?filename=${encodeURIComponent(filename)}`, token, body, contentType);
  const uri = res.status === 200 ? (JSON.parse(res.body.toString("utf8")) as { content_uri?: string }).content_uri : undefined;
  if (!uri) throw new Error(`upload to ${base}: ${res.status} ${res.body.toString("utf8").slice(0, 300)}`);
  return { uri, ms: res.ms };
}
