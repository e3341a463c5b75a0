/**
 * End-to-end encryption keys across servers (Server-Server API "End-to-End Encryption"):
 * - for clients, `/keys/query` and `/keys/claim` ask each other server named in the request,
 *   once and in parallel (20 at a time), within the request's `timeout` (default 10 s); a server that
 *   fails is listed in `failures` and the rest still answers. What comes back is checked
 *   (`device_key_checks.ts`): only the users and devices asked for, each device self-signed,
 *   the self-signing key signed by the master key; anything else is dropped;
 * - for other servers, `/user/devices/{userId}`, `/user/keys/query` and `/user/keys/claim`,
 *   for this server's users only (Synapse's answer for others: 400, or for a claim nothing).
 */
import type { Logger } from "pino";
import { Errors } from "../../errors.js";
import { isValidUserId, serverNameOf } from "../../events/ids.js";
import { isRecord } from "../../events/types.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import { FederationError, type FederationClient } from "../federation/client.js";
import type { CrossSigningService } from "./cross_signing.js";
import { crossSigningKeyProblem, crossSigningPublicKey, deviceKeysProblem } from "./device_key_checks.js";
import type { DeviceKeyService, KeysClaimBody, KeysQueryBody } from "./keys.js";
import { dict } from "../../records.js";

export const DEFAULT_KEY_TIMEOUT_MS = 10_000;
/** However long a client is willing to wait, a request never holds on longer than this. */
const MAX_KEY_TIMEOUT_MS = 60_000;
const MAX_ANSWER_BYTES = 8 * 1024 * 1024;

type Json = Record<string, unknown>;
/** One server's failure, as Synapse reports it: the status, and the Matrix error if there was one. */
export type KeyFailure = { status: number; message: string; errcode?: string };

export interface FederatedKeysDeps {
  serverName: string;
  storage: Storage;
  deviceKeys: DeviceKeyService;
  /** Built alongside this service, and federation after it: both are looked up when first used. */
  crossSigning: () => CrossSigningService;
  client: () => FederationClient;
  logger: Pick<Logger, "info">;
}

/** Servers asked at once for one client request: one naming a thousand servers must not open a thousand connections. */
const MAX_PARALLEL_SERVERS = 20;

/** When the client stops waiting: its `timeout` from now, within bounds. */
function deadlineOf(ms: number | undefined): number {
  return Date.now() + Math.min(Math.max(ms ?? DEFAULT_KEY_TIMEOUT_MS, 1), MAX_KEY_TIMEOUT_MS);
}

/** `run` on every item, at most `limit` at a time, results in order. */
async function pooled<T, R>(items: T[], limit: number, run: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await run(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Splits users by server: this server's, and each other server's; user IDs that are not are dropped (as if they had no keys). */
function byServer<T>(users: Record<string, T>, ours: string): { local: Record<string, T>; remote: Map<string, Record<string, T>> } {
  const local: Record<string, T> = {};
  const remote = new Map<string, Record<string, T>>();
  for (const [userId, value] of Object.entries(users)) {
    if (!isValidUserId(userId)) continue;
    const server = serverNameOf(userId)!;
    if (server === ours) local[userId] = value;
    else {
      let forServer = remote.get(server);
      if (!forServer) remote.set(server, (forServer = {}));
      forServer[userId] = value;
    }
  }
  return { local, remote };
}

export class FederatedKeys {
  constructor(private readonly deps: FederatedKeysDeps) {}

  /** `POST /_matrix/client/v3/keys/query`. */
  async query(requester: Requester, body: KeysQueryBody & { timeout?: number }) {
    const { local, remote } = byServer(body.device_keys, this.deps.serverName);
    const deadline = deadlineOf(body.timeout);
    const [mine, theirs] = await Promise.all([
      this.deps.crossSigning().query(requester, { device_keys: local }),
      pooled([...remote], MAX_PARALLEL_SERVERS, ([server, users]) => this.#queryServer(server, users, deadline)),
    ]);
    const failures: Record<string, KeyFailure> = {};
    for (const answer of theirs) {
      if (answer.failure) failures[answer.server] = answer.failure;
      Object.assign(mine.device_keys, answer.deviceKeys);
      Object.assign(mine.master_keys, answer.masterKeys);
      Object.assign(mine.self_signing_keys, answer.selfSigningKeys);
    }
    return { ...mine, failures };
  }

  /** `POST /_matrix/client/v3/keys/claim`. */
  async claim(body: KeysClaimBody & { timeout?: number }) {
    const { local, remote } = byServer(body.one_time_keys, this.deps.serverName);
    const deadline = deadlineOf(body.timeout);
    const [mine, theirs] = await Promise.all([
      this.deps.deviceKeys.claim({ one_time_keys: local }),
      pooled([...remote], MAX_PARALLEL_SERVERS, ([server, users]) => this.#claimFromServer(server, users, deadline)),
    ]);
    const failures: Record<string, KeyFailure> = {};
    const oneTimeKeys: Record<string, unknown> = mine.one_time_keys;
    for (const answer of theirs) {
      if (answer.failure) failures[answer.server] = answer.failure;
      Object.assign(oneTimeKeys, answer.keys);
    }
    return { one_time_keys: oneTimeKeys, failures };
  }

  /** `GET /_matrix/federation/v1/user/devices/{userId}`. */
  async userDevices(userId: string) {
    this.#mustBeLocal([userId]);
    const answer = await this.deps.crossSigning().queryAs(null, { device_keys: { [userId]: [] } });
    const devices = Object.entries(answer.device_keys[userId] ?? {}).map(([deviceId, keys]) => {
      const { unsigned, ...signed } = keys as Json;
      const name = isRecord(unsigned) ? unsigned.device_display_name : undefined;
      return typeof name === "string" ? { device_id: deviceId, keys: signed, device_display_name: name } : { device_id: deviceId, keys: signed };
    });
    // The position of the user's latest device change: other servers order m.device_list_update EDUs by it.
    const [streamId] = await this.deps.storage.federationQueue.deviceListStreamIds(userId, 1);
    const out: Json = { user_id: userId, stream_id: streamId ?? 0, devices };
    if (answer.master_keys[userId]) out.master_key = answer.master_keys[userId];
    if (answer.self_signing_keys[userId]) out.self_signing_key = answer.self_signing_keys[userId];
    return out;
  }

  /** `POST /_matrix/federation/v1/user/keys/query`. */
  async serveQuery(body: KeysQueryBody) {
    this.#mustBeLocal(Object.keys(body.device_keys));
    const { device_keys, master_keys, self_signing_keys } = await this.deps.crossSigning().queryAs(null, body);
    return { device_keys, master_keys, self_signing_keys };
  }

  /** `POST /_matrix/federation/v1/user/keys/claim`: keys of other servers' users are not ours to give; they are left out. */
  async serveClaim(body: KeysClaimBody) {
    const { local } = byServer(body.one_time_keys, this.deps.serverName);
    const { one_time_keys } = await this.deps.deviceKeys.claim({ one_time_keys: local });
    return { one_time_keys };
  }

  #mustBeLocal(userIds: string[]): void {
    for (const userId of userIds) {
      if (!isValidUserId(userId) || serverNameOf(userId) !== this.deps.serverName) throw Errors.invalidParam("User is not hosted on this homeserver");
    }
  }

  /** POSTs to another server before `deadline` (discovery included); a failure as `KeyFailure`. */
  async #ask(server: string, path: string, body: Json, deadline: number): Promise<{ json: Json } | { failure: KeyFailure }> {
    const timeoutMs = deadline - Date.now();
    // Servers queued behind others may find the client's time already spent.
    if (timeoutMs <= 0) return { failure: { status: 503, message: `no time was left to ask ${server}` } };
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new FederationError("unreachable", `no answer from ${server} within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const res = await Promise.race([this.deps.client().request(server, { method: "POST", path, body, timeoutMs, maxBytes: MAX_ANSWER_BYTES }), expired]);
      if (res.status === 200) return { json: res.json };
      const failure: KeyFailure = { status: res.status, message: typeof res.json.error === "string" ? res.json.error : `${server} answered ${res.status}` };
      if (typeof res.json.errcode === "string") failure.errcode = res.json.errcode;
      return { failure };
    } catch (err) {
      if (!(err instanceof FederationError)) throw err;
      this.deps.logger.info({ server, path, err: err.message }, "a server did not answer a key request");
      return { failure: err.kind === "forbidden_destination" ? { status: 403, message: "Federation denied" } : { status: 503, message: err.message } };
    } finally {
      clearTimeout(timer);
    }
  }

  async #queryServer(server: string, users: Record<string, string[]>, deadline: number) {
    const deviceKeys: Record<string, Json> = {};
    const masterKeys: Record<string, Json> = {};
    const selfSigningKeys: Record<string, Json> = {};
    const answer = await this.#ask(server, "/_matrix/federation/v1/user/keys/query", { device_keys: users }, deadline);
    if ("failure" in answer) return { server, failure: answer.failure, deviceKeys, masterKeys, selfSigningKeys };
    const { json } = answer;
    const sent = isRecord(json.device_keys) ? json.device_keys : {};
    const masters = isRecord(json.master_keys) ? json.master_keys : {};
    const selfSigning = isRecord(json.self_signing_keys) ? json.self_signing_keys : {};
    const dropped: string[] = [];
    for (const [userId, asked] of Object.entries(users)) {
      const devices: Json = {};
      for (const [deviceId, keys] of Object.entries(isRecord(sent[userId]) ? sent[userId] : {})) {
        if (asked.length > 0 && !asked.includes(deviceId)) continue;
        const problem = deviceKeysProblem(keys, userId, deviceId);
        if (problem) dropped.push(`${userId} ${deviceId}: ${problem}`);
        else devices[deviceId] = keys;
      }
      deviceKeys[userId] = devices;
      const master = masters[userId];
      if (master === undefined) continue;
      const masterProblem = crossSigningKeyProblem(master, userId, "master");
      if (masterProblem) {
        dropped.push(`${userId} master key: ${masterProblem}`);
        continue;
      }
      masterKeys[userId] = master as Json;
      const ssk = selfSigning[userId];
      if (ssk === undefined) continue;
      const sskProblem = crossSigningKeyProblem(ssk, userId, "self_signing", crossSigningPublicKey(master as Json));
      if (sskProblem) dropped.push(`${userId} self-signing key: ${sskProblem}`);
      else selfSigningKeys[userId] = ssk as Json;
    }
    if (dropped.length) this.deps.logger.info({ server, dropped: dropped.slice(0, 20) }, "dropped keys another server sent that do not check");
    return { server, failure: undefined, deviceKeys, masterKeys, selfSigningKeys };
  }

  async #claimFromServer(server: string, users: Record<string, Record<string, string>>, deadline: number) {
    const keys = dict<Record<string, Json>>();
    const answer = await this.#ask(server, "/_matrix/federation/v1/user/keys/claim", { one_time_keys: users }, deadline);
    if ("failure" in answer) return { server, failure: answer.failure, keys };
    const sent = isRecord(answer.json.one_time_keys) ? answer.json.one_time_keys : {};
    // Only what was asked: the devices named, and keys of the algorithm named for each.
    for (const [userId, devices] of Object.entries(users)) {
      const forUser = isRecord(sent[userId]) ? sent[userId] : {};
      for (const [deviceId, algorithm] of Object.entries(devices)) {
        const claimed = isRecord(forUser[deviceId]) ? forUser[deviceId] : {};
        for (const [keyId, key] of Object.entries(claimed)) {
          if (!keyId.startsWith(`${algorithm}:`) || (typeof key !== "string" && !isRecord(key))) continue;
          ((keys[userId] ??= dict())[deviceId] ??= dict<Json>())[keyId] = key;
        }
      }
    }
    return { server, failure: undefined, keys };
  }
}
