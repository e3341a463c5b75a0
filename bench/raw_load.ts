/**
 * A lean load generator for one authenticated GET, for bench/workers.ts: many keep-alive
 * connections, each sending the request again as soon as the answer to the last one is complete,
 * for a fixed time. There the generator shares a 2-core machine with the servers it measures, so
 * every microsecond it spends is taken from them: against whoami it cost 21 µs of CPU a request
 * where autocannon cost 33, in the same run. It reads only what it must (status and
 * Content-Length) from prebuilt request bytes, and keeps no histogram beyond the raw latencies.
 */
import net from "node:net";

export interface LoadResult {
  /** Answers received in full. */
  requests: number;
  /** Answers with a status other than 2xx. */
  non2xx: number;
  /** Connections that failed or closed before their time was up, or sent an answer this cannot read. */
  errors: number;
  /** Per answer, milliseconds, in no particular order (empty when the generator gives only percentiles). */
  latencies: number[];
  /** The generator's own percentiles in milliseconds, when it keeps no raw latencies (wrk). */
  percentiles?: { p50: number; p99: number };
  /** CPU of a generator in another process, in µs; absent when the generator is this process. */
  generatorUs?: number;
}

const END_OF_HEAD = Buffer.from("\r\n\r\n");

/**
 * `GET path` over `connections` connections to `base` for `seconds`, connection k sending
 * `Authorization: Bearer tokens[k % tokens.length]`.
 */
export function rawLoad(base: string, path: string, tokens: string[], connections: number, seconds: number): Promise<LoadResult> {
  const url = new URL(base);
  const deadline = performance.now() + seconds * 1000;
  const result: LoadResult = { requests: 0, non2xx: 0, errors: 0, latencies: [] };
  const connection = (k: number) =>
    new Promise<void>((resolve) => {
      const request = Buffer.from(`GET ${path} HTTP/1.1\r\nhost: ${url.host}\r\nauthorization: Bearer ${tokens[k % tokens.length]}\r\n\r\n`);
      const socket = net.connect(Number(url.port), url.hostname);
      socket.setNoDelay(true);
      let pending: Buffer | undefined;
      let sentAt = 0;
      let done = false;
      const send = () => {
        sentAt = performance.now();
        socket.write(request);
      };
      const fail = () => {
        if (!done) result.errors++;
        done = true;
        socket.destroy();
      };
      socket.on("connect", send);
      socket.on("data", (chunk: Buffer) => {
        pending = pending ? Buffer.concat([pending, chunk]) : chunk;
        const end = pending.indexOf(END_OF_HEAD);
        if (end < 0) return;
        const head = pending.toString("latin1", 0, end);
        const length = /\r\ncontent-length: *(\d+)/i.exec(head);
        if (!length) return fail();
        const total = end + 4 + Number(length[1]);
        if (pending.length < total) return;
        // One request in flight per connection, so nothing may follow the answer.
        if (pending.length > total) return fail();
        pending = undefined;
        result.requests++;
        result.latencies.push(performance.now() - sentAt);
        if (head[9] !== "2") result.non2xx++;
        if (performance.now() < deadline) return send();
        done = true;
        socket.end();
      });
      socket.on("error", fail);
      socket.on("close", () => {
        if (!done) result.errors++;
        resolve();
      });
    });
  return Promise.all(Array.from({ length: connections }, (_, k) => connection(k))).then(() => result);
}
