/**
 * The benchmark's side of federation (bench/federation.ts): requests signed as a server
 * (X-Matrix), joins through `make_join`/`send_join` as a user of a made-up server, and
 * stand-in destinations: HTTPS servers that serve their signing key, take
 * `PUT /_matrix/federation/v1/send/{txnId}` and note when each PDU arrived, and answer nothing
 * else (404). A stand-in's user is a real member of the room it joined (the resident server
 * checked the signed join); the stand-in only never processes what it receives, so that ten
 * destinations cost the machine ten counters rather than ten homeservers.
 */
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { encodeBase64, eventIdFor, getRoomVersion, hashAndSignEvent, isRecord, signJson, type Pdu } from "../src/events/index.js";
import { authorizationHeader } from "../src/services/federation/x_matrix.js";

export interface Signer {
  serverName: string;
  keyId: string;
  privateKey: KeyObject;
}

const enc = encodeURIComponent;

/** A federation request to `base` (a server's plain-HTTP listener), signed as `signer` for `destination`. */
export function signedRequest(
  base: string,
  agent: http.Agent | undefined,
  signer: Signer,
  destination: string,
  method: string,
  uri: string,
  body?: Record<string, unknown>,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: http.OutgoingHttpHeaders = { authorization: authorizationHeader(signer, method, uri, destination, body) };
  if (payload) Object.assign(headers, { "content-type": "application/json", "content-length": payload.length });
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(uri, base), { method, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        try {
          resolve({ status: res.statusCode ?? 0, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} });
        } catch {
          resolve({ status: res.statusCode ?? 0, json: { error: text.slice(0, 200) } });
        }
      });
      res.on("error", reject);
    });
    req.setTimeout(60_000, () => req.destroy(new Error(`${method} ${uri}: no answer within 60 s`)));
    req.on("error", reject);
    req.end(payload);
  });
}

/** Joins `userId` (of `signer`'s server) to `roomId` on the resident server at `base`, as a joining server does. */
export async function joinThroughFederation(base: string, resident: string, signer: Signer, roomId: string, userId: string): Promise<string> {
  const made = await signedRequest(base, undefined, signer, resident, "GET", `/_matrix/federation/v1/make_join/${enc(roomId)}/${enc(userId)}?ver=10&ver=11&ver=12`);
  if (made.status !== 200 || !isRecord(made.json.event)) throw new Error(`make_join for ${userId}: ${made.status} ${JSON.stringify(made.json)}`);
  const version = getRoomVersion(String(made.json.room_version ?? "1"));
  if (!version) throw new Error(`make_join: unknown room version ${String(made.json.room_version)}`);
  const { signatures: _s, hashes: _h, unsigned: _u, ...rest } = made.json.event;
  const draft = { ...rest, origin_server_ts: Date.now() } as unknown as Pdu;
  const pdu = hashAndSignEvent(draft, version, signer);
  const eventId = eventIdFor(pdu, version);
  const sent = await signedRequest(base, undefined, signer, resident, "PUT", `/_matrix/federation/v2/send_join/${enc(roomId)}/${enc(eventId)}`, pdu as unknown as Record<string, unknown>);
  if (sent.status !== 200) throw new Error(`send_join for ${userId}: ${sent.status} ${JSON.stringify(sent.json).slice(0, 300)}`);
  return eventId;
}

/** One PDU as a stand-in received it. */
export interface Arrival {
  body: string;
  /** Arrival (this process's Date.now()) minus the PDU's origin_server_ts: both clocks are this machine's. */
  latencyMs: number;
  at: number;
}

export interface StandIn {
  name: string;
  signer: Signer;
  arrivals: Arrival[];
  transactions: number;
  close(): Promise<void>;
}

/** A stand-in destination named `name`, its HTTPS front on `port` with the benchmark's certificate. */
export async function startStandIn(name: string, port: number, pki: { key: string; cert: string }): Promise<StandIn> {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const signer: Signer = { serverName: name, keyId: "ed25519:bench", privateKey };
  const publicRaw = publicKey.export({ format: "der", type: "spki" }).subarray(-32);
  const standIn: StandIn = { name, signer, arrivals: [], transactions: 0, close: async () => undefined };
  const server = https.createServer({ key: pki.key, cert: pki.cert, keepAlive: true }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const answer = (status: number, json: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(json));
      };
      const url = req.url ?? "/";
      if (req.method === "GET" && url.startsWith("/_matrix/key/v2/server")) {
        const keys = { server_name: name, verify_keys: { [signer.keyId]: { key: encodeBase64(publicRaw) } }, old_verify_keys: {}, valid_until_ts: Date.now() + 86_400_000 };
        return answer(200, signJson(keys, name, signer.keyId, privateKey));
      }
      if (req.method === "PUT" && url.startsWith("/_matrix/federation/v1/send/")) {
        const now = Date.now();
        standIn.transactions++;
        try {
          const txn = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { pdus?: Record<string, unknown>[] };
          for (const pdu of txn.pdus ?? []) {
            const content = pdu.content as { body?: unknown } | undefined;
            if (pdu.type === "m.room.message" && typeof content?.body === "string" && typeof pdu.origin_server_ts === "number") {
              standIn.arrivals.push({ body: content.body, latencyMs: now - pdu.origin_server_ts, at: now });
            }
          }
        } catch {
          return answer(400, { errcode: "M_BAD_JSON", error: "not JSON" });
        }
        // Every PDU accepted: an empty `pdus` map means no errors.
        return answer(200, { pdus: {} });
      }
      answer(404, { errcode: "M_UNRECOGNIZED", error: "a benchmark stand-in answers only key and /send requests" });
    });
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  if ((server.address() as AddressInfo).port !== port) throw new Error(`${name}: not on port ${port}`);
  standIn.close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return standIn;
}
