/** Reading a fetched response's body within a byte limit, decompressing it as it says (safe_fetch.ts). */
import type { IncomingMessage } from "node:http";
import { pipeline, type Readable } from "node:stream";
import zlib from "node:zlib";
import { SafeFetchError } from "./fetch_error.js";

/** The body, decompressed, refused once it passes `maxBytes`. */
export async function readBody(res: IncomingMessage, maxBytes: number, host: string): Promise<Buffer> {
  const tooLarge = () => new SafeFetchError("too_large", `The response is larger than ${maxBytes} bytes`, { host, headersReceived: true });
  const encoding = (res.headers["content-encoding"] ?? "identity").trim().toLowerCase();
  const declared = Number(res.headers["content-length"]);
  if ((encoding === "identity" || encoding === "") && declared > maxBytes) {
    res.destroy();
    throw tooLarge();
  }
  let stream: Readable = res;
  if (encoding !== "identity" && encoding !== "") {
    const decoder = decompressor(encoding);
    if (!decoder) {
      res.destroy();
      throw new SafeFetchError("bad_response", `Unsupported content encoding ${encoding}`, { host, headersReceived: true });
    }
    stream = pipeline(res, decoder, () => undefined);
  }
  try {
    return await collect(stream, maxBytes, tooLarge);
  } catch (err) {
    res.destroy();
    if (err instanceof SafeFetchError) throw err;
    const kind = (err as { code?: string }).code?.startsWith("Z_") ? "bad_response" : "network";
    throw new SafeFetchError(kind, `Reading the response from ${host} failed`, { host, headersReceived: true }, { cause: err });
  }
}

/**
 * A stream's bytes, failing past `maxBytes`. With `data` and `end` listeners rather than
 * `for await`: the async iterator's set-up and teardown cost more than a push gateway's whole
 * answer takes to read; and with `close` rather than `finished`, which listens for much more
 * than a response can do. A stream closed before its end (the connection dropped, or a
 * cancelled fetch destroyed the request and with it the response) is an error.
 */
function collect(stream: Readable, maxBytes: number, tooLarge: () => Error): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      reject(err);
    };
    stream.on("data", (chunk: Buffer) => {
      if (settled) return;
      size += chunk.length;
      if (size > maxBytes) {
        fail(tooLarge());
        stream.destroy();
        return;
      }
      chunks.push(chunk);
    });
    stream.once("end", () => {
      if (settled) return;
      settled = true;
      resolve(Buffer.concat(chunks, size));
    });
    // `on`, not `once`: a second error with no listener would be thrown at the process.
    stream.on("error", fail);
    // Every stream closes, most after their end: an Error (and its stack) only when it matters.
    stream.once("close", () => {
      if (!settled) fail(Object.assign(new Error("The response ended before its end"), { code: "ERR_STREAM_PREMATURE_CLOSE" }));
    });
  });
}

function decompressor(encoding: string): zlib.Gunzip | zlib.Inflate | zlib.BrotliDecompress | undefined {
  if (encoding === "gzip" || encoding === "x-gzip") return zlib.createGunzip();
  if (encoding === "deflate") return zlib.createInflate();
  if (encoding === "br") return zlib.createBrotliDecompress();
  return undefined;
}
