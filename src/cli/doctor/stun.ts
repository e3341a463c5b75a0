/**
 * A minimal STUN/TURN client (RFC 8489, RFC 8656): just enough to make one Allocate with
 * long-term credentials over UDP, TCP or TLS, and read the answer. MESSAGE-INTEGRITY is
 * HMAC-SHA1 under MD5(username:realm:password); coturn's `use-auth-secret` mode checks that
 * password against HMAC-SHA1(secret, username), so a 401 after credentials means the secrets differ.
 */
import { createHash, createHmac, randomBytes } from "node:crypto";
import dgram from "node:dgram";
import net from "node:net";
import tls from "node:tls";
import { crc32 } from "node:zlib";

const MAGIC = 0x2112a442;
export const METHOD = { allocate: 0x003, refresh: 0x004 } as const;
const CLASS_SUCCESS = 0x100;
const CLASS_ERROR = 0x110;
const ATTR = {
  username: 0x0006,
  messageIntegrity: 0x0008,
  errorCode: 0x0009,
  lifetime: 0x000d,
  realm: 0x0014,
  nonce: 0x0015,
  xorRelayedAddress: 0x0016,
  requestedTransport: 0x0019,
  software: 0x8022,
  fingerprint: 0x8028,
} as const;

export interface StunReply {
  kind: "success" | "error";
  errorCode?: number;
  reason?: string;
  realm?: string;
  nonce?: string;
  relayed?: string;
}

export interface Credentials {
  username: string;
  password: string;
  realm: string;
  nonce: string;
}

function attribute(type: number, value: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt16BE(type, 0);
  header.writeUInt16BE(value.length, 2);
  const padding = Buffer.alloc((4 - (value.length % 4)) % 4);
  return Buffer.concat([header, value, padding]);
}

/** A request; with credentials it carries USERNAME, REALM, NONCE and MESSAGE-INTEGRITY; always a FINGERPRINT. */
export function encodeRequest(method: number, attrs: [number, Buffer][], creds?: Credentials): Buffer {
  const transactionId = randomBytes(12);
  let body = Buffer.concat(attrs.map(([t, v]) => attribute(t, v)));
  if (creds) {
    body = Buffer.concat([
      body,
      attribute(ATTR.username, Buffer.from(creds.username, "utf8")),
      attribute(ATTR.realm, Buffer.from(creds.realm, "utf8")),
      attribute(ATTR.nonce, Buffer.from(creds.nonce, "utf8")),
    ]);
  }
  const header = (length: number) => {
    const h = Buffer.alloc(20);
    h.writeUInt16BE(method & 0x3eef, 0); // class bits 0: a request
    h.writeUInt16BE(length, 2);
    h.writeUInt32BE(MAGIC, 4);
    transactionId.copy(h, 8);
    return h;
  };
  if (creds) {
    // The HMAC covers the message up to the integrity attribute, with a length that already counts it.
    const key = createHash("md5").update(`${creds.username}:${creds.realm}:${creds.password}`, "utf8").digest();
    const mac = createHmac("sha1", key).update(Buffer.concat([header(body.length + 24), body])).digest();
    body = Buffer.concat([body, attribute(ATTR.messageIntegrity, mac)]);
  }
  const fingerprint = Buffer.alloc(4);
  fingerprint.writeUInt32BE((crc32(Buffer.concat([header(body.length + 8), body])) ^ 0x5354554e) >>> 0, 0);
  body = Buffer.concat([body, attribute(ATTR.fingerprint, fingerprint)]);
  return Buffer.concat([header(body.length), body]);
}

export const requestedTransportUdp = (): [number, Buffer] => [ATTR.requestedTransport, Buffer.from([17, 0, 0, 0])];
export const lifetime = (seconds: number): [number, Buffer] => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(seconds, 0);
  return [ATTR.lifetime, b];
};

function xorAddress(value: Buffer): string | undefined {
  if (value.length < 8) return undefined;
  const family = value[1];
  const port = value.readUInt16BE(2) ^ (MAGIC >>> 16);
  if (family === 0x01) {
    const addr = (value.readUInt32BE(4) ^ MAGIC) >>> 0;
    return `${addr >>> 24}.${(addr >>> 16) & 255}.${(addr >>> 8) & 255}.${addr & 255}:${port}`;
  }
  return `IPv6 relay, port ${port}`;
}

/** Reads a response; undefined when the bytes are not a STUN response. */
export function decodeReply(msg: Buffer): StunReply | undefined {
  if (msg.length < 20 || msg.readUInt32BE(4) !== MAGIC) return undefined;
  const type = msg.readUInt16BE(0);
  const cls = type & 0x110;
  if (cls !== CLASS_SUCCESS && cls !== CLASS_ERROR) return undefined;
  const out: StunReply = { kind: cls === CLASS_SUCCESS ? "success" : "error" };
  const end = Math.min(msg.length, 20 + msg.readUInt16BE(2));
  for (let at = 20; at + 4 <= end; ) {
    const t = msg.readUInt16BE(at);
    const len = msg.readUInt16BE(at + 2);
    const value = msg.subarray(at + 4, at + 4 + len);
    if (t === ATTR.errorCode && len >= 4) {
      out.errorCode = (value[2]! & 7) * 100 + value[3]!;
      out.reason = value.subarray(4).toString("utf8");
    } else if (t === ATTR.realm) out.realm = value.toString("utf8");
    else if (t === ATTR.nonce) out.nonce = value.toString("utf8");
    else if (t === ATTR.xorRelayedAddress) out.relayed = xorAddress(value);
    at += 4 + len + ((4 - (len % 4)) % 4);
  }
  return out;
}

/** One request–response channel to a TURN server. */
export interface StunChannel {
  exchange(request: Buffer): Promise<StunReply>;
  close(): void;
}

export class StunTimeout extends Error {}

/** UDP, retransmitting as RFC 8489 says (500 ms, doubling) until `timeoutMs`. */
export async function udpChannel(host: string, port: number, timeoutMs: number): Promise<StunChannel> {
  const socket = dgram.createSocket(net.isIPv6(host) ? "udp6" : "udp4");
  socket.on("error", () => {});
  const pending = new Set<() => void>();
  return {
    exchange(request) {
      return new Promise((resolve, reject) => {
        const timers: NodeJS.Timeout[] = [];
        const finish = () => {
          for (const t of timers) clearTimeout(t);
          socket.off("message", onMessage);
          pending.delete(abort);
        };
        const abort = () => (finish(), reject(new StunTimeout("closed")));
        const onMessage = (msg: Buffer) => {
          if (Buffer.compare(msg.subarray(8, 20), request.subarray(8, 20)) !== 0) return;
          const reply = decodeReply(msg);
          if (!reply) return;
          finish();
          resolve(reply);
        };
        pending.add(abort);
        socket.on("message", onMessage);
        for (let delay = 0, step = 500; delay < timeoutMs; delay += step, step *= 2) {
          timers.push(setTimeout(() => socket.send(request, port, host), delay));
        }
        timers.push(setTimeout(() => (finish(), reject(new StunTimeout(`no answer over UDP within ${timeoutMs / 1000} s`))), timeoutMs));
      });
    },
    close: () => {
      for (const abort of [...pending]) abort();
      socket.close();
    },
  };
}

/** TCP, or TLS for `turns:`; messages are framed by their own length field. */
export async function streamChannel(host: string, port: number, timeoutMs: number, secure: { ca?: string[]; servername?: string } | undefined): Promise<StunChannel> {
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = secure
      ? tls.connect({ host, port, ca: secure.ca, servername: secure.servername ?? (net.isIP(host) ? undefined : host) }, () => resolve(s))
      : net.connect({ host, port }, () => resolve(s));
    s.setTimeout(timeoutMs, () => s.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
    s.once("error", reject);
  });
  let buffered = Buffer.alloc(0);
  let waiting: { resolve: (r: StunReply) => void; reject: (e: Error) => void } | undefined;
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 20) {
      const size = 20 + buffered.readUInt16BE(2);
      if (buffered.length < size) break;
      const reply = decodeReply(buffered.subarray(0, size));
      buffered = buffered.subarray(size);
      if (reply && waiting) {
        const w = waiting;
        waiting = undefined;
        w.resolve(reply);
      }
    }
  });
  socket.on("error", (err) => waiting?.reject(err));
  socket.on("close", () => waiting?.reject(new Error("the TURN server closed the connection")));
  return {
    exchange(request) {
      return new Promise((resolve, reject) => {
        waiting = { resolve, reject };
        socket.write(request);
      });
    },
    close: () => socket.destroy(),
  };
}

export type AllocateOutcome =
  | { ok: true; relayed?: string; realm?: string }
  | { ok: false; stage: "challenge" | "credentials"; errorCode?: number; reason?: string };

/** Allocate: unauthenticated first (for the realm and nonce), then with the credentials; frees it again. */
export async function allocate(channel: StunChannel, username: string, password: string): Promise<AllocateOutcome> {
  const first = await channel.exchange(encodeRequest(METHOD.allocate, [requestedTransportUdp()]));
  if (first.kind === "success") return { ok: true, relayed: first.relayed };
  if (first.errorCode !== 401 || !first.realm || !first.nonce) return { ok: false, stage: "challenge", errorCode: first.errorCode, reason: first.reason };
  let creds: Credentials = { username, password, realm: first.realm, nonce: first.nonce };
  let reply = await channel.exchange(encodeRequest(METHOD.allocate, [requestedTransportUdp()], creds));
  if (reply.kind === "error" && reply.errorCode === 438 && reply.nonce) {
    creds = { ...creds, nonce: reply.nonce }; // stale nonce: once more with the new one
    reply = await channel.exchange(encodeRequest(METHOD.allocate, [requestedTransportUdp()], creds));
  }
  if (reply.kind === "error") return { ok: false, stage: "credentials", errorCode: reply.errorCode, reason: reply.reason };
  // Release the relay at once; its answer does not matter.
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    channel.exchange(encodeRequest(METHOD.refresh, [lifetime(0)], creds)).catch(() => undefined),
    new Promise((r) => (timer = setTimeout(r, 1000))),
  ]);
  clearTimeout(timer);
  return { ok: true, relayed: reply.relayed, realm: creds.realm };
}
