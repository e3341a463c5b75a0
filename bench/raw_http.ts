/** Raw HTTP/1.1 exchanges, so the benchmark can capture Switchboard's exact bytes and check the baseline replays them. */
import net from "node:net";
import type { CannedResponse } from "./protocol.js";

/** One HTTP/1.1 keep-alive request over a fresh socket; resolves to the whole response as received. */
export function rawRequest(base: string, method: string, target: string, headers: Record<string, string>, body?: string): Promise<Buffer> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname);
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (err: Error | null, value?: Buffer) => {
      if (done) return;
      done = true;
      socket.destroy();
      if (err) reject(err);
      else resolve(value!);
    };
    socket.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = buf.subarray(0, end).toString("latin1");
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      if (!length) return finish(new Error(`no content-length in response to ${method} ${target}:\n${head}`));
      const total = end + 4 + Number(length[1]);
      if (buf.length >= total) finish(null, buf.subarray(0, total));
    });
    socket.on("error", (err) => finish(err));
    socket.on("close", () => finish(new Error(`connection closed before the response to ${method} ${target} was complete`)));
    const lines = [`${method} ${target} HTTP/1.1`, `host: ${url.host}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
    if (body !== undefined) lines.push(`content-length: ${Buffer.byteLength(body)}`);
    socket.write(`${lines.join("\r\n")}\r\n\r\n${body ?? ""}`);
  });
}

export interface RawResponse {
  status: number;
  statusMessage: string;
  /** [name, value] in wire order and case. */
  headers: [string, string][];
  body: Buffer;
}

export function parseRaw(raw: Buffer): RawResponse {
  const end = raw.indexOf("\r\n\r\n");
  const [statusLine, ...headerLines] = raw.subarray(0, end).toString("latin1").split("\r\n");
  const m = /^HTTP\/1\.1 (\d{3}) ?(.*)$/.exec(statusLine ?? "");
  if (!m) throw new Error(`bad status line: ${statusLine}`);
  const headers = headerLines.map((line): [string, string] => {
    const i = line.indexOf(":");
    return [line.slice(0, i), line.slice(i + 1).trim()];
  });
  return { status: Number(m[1]), statusMessage: m[2] ?? "", headers, body: raw.subarray(end + 4) };
}

/** The Date header differs from second to second; everything else must be identical. */
export function normalise(raw: Buffer): string {
  return raw.toString("latin1").replace(/\r\ndate: [^\r]*/i, "\r\ndate: *");
}

/** Headers node:http writes by itself; the baseline lets it, rather than replaying stale values. */
const NODE_OWN_HEADERS = new Set(["date", "connection", "keep-alive", "transfer-encoding"]);

export function canned(key: string, r: RawResponse): CannedResponse {
  return {
    key,
    status: r.status,
    statusMessage: r.statusMessage,
    headers: r.headers.filter(([name]) => !NODE_OWN_HEADERS.has(name.toLowerCase())).flat(),
    bodyBase64: r.body.toString("base64"),
  };
}
