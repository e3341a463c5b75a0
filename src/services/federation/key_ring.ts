/**
 * Signing keys: this server's (served at `/_matrix/key/v2/server`, old ones included) and other
 * servers' (fetched through the `trusted_key_servers` notaries, then directly, and cached in the
 * database until they expire, so every process shares one cache). Also the notary side:
 * `/_matrix/key/v2/query` answers with keys this server has fetched, countersigned.
 */
import type { KeyObject } from "node:crypto";
import type { Logger } from "pino";
import type { FederationConfig } from "../../config/config.js";
import { Errors } from "../../errors.js";
import { isValidServerName } from "../../events/ids.js";
import { signJson, verifyJsonSignature, verifyKeyFromBase64, type Signer } from "../../events/signing.js";
import { isRecord } from "../../events/types.js";
import type { ServerKeyStore, StoredServerKey } from "../../storage/federation.js";
import type { Clock } from "../clock.js";
import type { FederationClient } from "./client.js";
import { keysFromResponse, usableUntil } from "./key_response.js";

/** A missing key is not looked for again this soon: forged key IDs must not make us hammer a server. */
const REFETCH_AFTER_MS = 30_000;
const MAX_QUERIED_SERVERS = 100;
/** Decoded keys kept in memory: every signed request needs one, and the database holds the truth. */
const KEY_CACHE_LIMIT = 10_000;

export type KeyCriteria = Record<string, Record<string, { minimum_valid_until_ts?: number }>>;

export interface KeyRingDeps {
  serverName: string;
  signer: () => Signer & { publicKeyBase64: string };
  settings: Pick<FederationConfig, "oldSigningKeys" | "keyValidityMs" | "trustedKeyServers">;
  store: ServerKeyStore;
  client: FederationClient;
  clock: Clock;
  logger: Pick<Logger, "info" | "warn">;
}

export class KeyRing {
  readonly #lastFetch = new Map<string, number>();
  readonly #inFlight = new Map<string, Promise<void>>();
  readonly #decoded = new Map<string, { key: KeyObject; until: number }>();

  constructor(private readonly deps: KeyRingDeps) {}

  /** `GET /_matrix/key/v2/server`: the current key, the old ones, signed. */
  ownKeys(): Record<string, unknown> {
    const signer = this.deps.signer();
    const old: Record<string, { key: string; expired_ts: number }> = {};
    for (const k of this.deps.settings.oldSigningKeys) old[k.keyId] = { key: k.publicKey, expired_ts: k.expiredTs };
    const response = {
      server_name: this.deps.serverName,
      verify_keys: { [signer.keyId]: { key: signer.publicKeyBase64 } },
      old_verify_keys: old,
      valid_until_ts: this.deps.clock.now() + this.deps.settings.keyValidityMs,
    };
    return signJson(response, signer.serverName, signer.keyId, signer.privateKey);
  }

  /**
   * `serverName`'s key `keyId`, if it may verify a signature made at `validAt` (for a request:
   * now). Undefined when no such key can be found.
   */
  async verifyKey(serverName: string, keyId: string, validAt: number): Promise<KeyObject | undefined> {
    if (serverName === this.deps.serverName) return this.#ownKey(keyId, validAt);
    const cacheKey = `${serverName}\n${keyId}`;
    const hit = this.#decoded.get(cacheKey);
    if (hit && hit.until >= validAt) return hit.key;
    const usable = (k: StoredServerKey | undefined) => {
      if (!k || usableUntil(k) < validAt) return undefined;
      const key = verifyKeyFromBase64(k.verifyKey);
      if (this.#decoded.size >= KEY_CACHE_LIMIT) this.#decoded.clear();
      this.#decoded.set(cacheKey, { key, until: usableUntil(k) });
      return key;
    };
    const stored = usable(await this.deps.store.get(serverName, keyId));
    if (stored) return stored;
    const last = this.#lastFetch.get(serverName);
    if (last !== undefined && this.deps.clock.now() - last < REFETCH_AFTER_MS) return undefined;
    await this.#fetchOnce(serverName, keyId, validAt);
    return usable(await this.deps.store.get(serverName, keyId));
  }

  #ownKey(keyId: string, validAt: number): KeyObject | undefined {
    const signer = this.deps.signer();
    if (keyId === signer.keyId) return verifyKeyFromBase64(signer.publicKeyBase64);
    const old = this.deps.settings.oldSigningKeys.find((k) => k.keyId === keyId);
    return old && old.expiredTs >= validAt ? verifyKeyFromBase64(old.publicKey) : undefined;
  }

  /** One fetch per server at a time in this process; concurrent callers share it. */
  #fetchOnce(serverName: string, keyId: string, validAt: number): Promise<void> {
    let pending = this.#inFlight.get(serverName);
    if (!pending) {
      pending = this.#fetch(serverName, keyId, validAt).finally(() => {
        this.#inFlight.delete(serverName);
        if (this.#lastFetch.size > 10_000) this.#lastFetch.clear();
        this.#lastFetch.set(serverName, this.deps.clock.now());
      });
      this.#inFlight.set(serverName, pending);
    }
    return pending;
  }

  async #fetch(serverName: string, keyId: string, validAt: number): Promise<void> {
    for (const notary of this.deps.settings.trustedKeyServers) {
      if (notary.serverName === serverName) continue;
      try {
        const keys = await this.#fromNotary(notary, serverName, keyId, validAt);
        if (keys.some((k) => k.keyId === keyId && usableUntil(k) >= validAt)) return;
      } catch (err) {
        this.deps.logger.info({ notary: notary.serverName, server: serverName, err: (err as Error).message }, "a notary did not give a server's keys");
      }
    }
    try {
      await this.fetchDirect(serverName);
    } catch (err) {
      this.deps.logger.info({ server: serverName, err: (err as Error).message }, "could not fetch a server's signing keys");
    }
  }

  /** Asks the server itself; stores and returns its keys. Throws when there is no valid answer. */
  async fetchDirect(serverName: string): Promise<StoredServerKey[]> {
    const res = await this.deps.client.request(serverName, { method: "GET", path: "/_matrix/key/v2/server", signed: false });
    if (res.status !== 200) throw new Error(`${serverName} answered its key request with ${res.status}`);
    const keys = keysFromResponse(res.json, serverName, this.deps.clock.now());
    if (typeof keys === "string") throw new Error(`${serverName}'s key response is not valid: ${keys}`);
    await this.deps.store.upsert(keys);
    return keys;
  }

  async #fromNotary(notary: { serverName: string; verifyKeys?: Record<string, string> }, serverName: string, keyId: string, validAt: number) {
    const res = await this.deps.client.request(notary.serverName, {
      method: "POST",
      path: "/_matrix/key/v2/query",
      body: { server_keys: { [serverName]: { [keyId]: { minimum_valid_until_ts: validAt } } } },
      signed: false,
      maxBytes: 4 * 1024 * 1024,
    });
    if (res.status !== 200 || !Array.isArray(res.json.server_keys)) throw new Error(`answered ${res.status} without server_keys`);
    const now = this.deps.clock.now();
    const found: StoredServerKey[] = [];
    for (const entry of res.json.server_keys as unknown[]) {
      if (!isRecord(entry) || entry.server_name !== serverName) continue;
      if (!(await this.#notarySigned(notary, entry))) throw new Error("an answer lacks a valid signature of the notary");
      const keys = keysFromResponse(entry, serverName, now);
      if (typeof keys === "string") throw new Error(`an answer is not valid: ${keys}`);
      found.push(...keys);
    }
    await this.deps.store.upsert(found);
    return found;
  }

  /** The notary's signature, by a configured key or else by a key fetched from the notary itself. */
  async #notarySigned(notary: { serverName: string; verifyKeys?: Record<string, string> }, entry: Record<string, unknown>): Promise<boolean> {
    const byNotary = isRecord(entry.signatures) ? entry.signatures[notary.serverName] : undefined;
    const sigs = isRecord(byNotary) ? byNotary : {};
    for (const keyId of Object.keys(sigs)) {
      let key: KeyObject | undefined;
      if (notary.verifyKeys) {
        const configured = notary.verifyKeys[keyId];
        key = configured === undefined ? undefined : verifyKeyFromBase64(configured);
      } else {
        const stored = await this.deps.store.get(notary.serverName, keyId);
        const fresh = stored && usableUntil(stored) >= this.deps.clock.now() ? stored : (await this.fetchDirect(notary.serverName)).find((k) => k.keyId === keyId);
        key = fresh ? verifyKeyFromBase64(fresh.verifyKey) : undefined;
      }
      if (key && verifyJsonSignature(entry, notary.serverName, keyId, key)) return true;
    }
    return false;
  }

  /** The notary side of `/_matrix/key/v2/query`: the responses we hold (fetching missing ones directly), countersigned. */
  async query(criteria: KeyCriteria): Promise<{ server_keys: Record<string, unknown>[] }> {
    const servers = Object.entries(criteria);
    if (servers.length > MAX_QUERIED_SERVERS) throw Errors.invalidParam(`At most ${MAX_QUERIED_SERVERS} servers may be queried at once`);
    const signer = this.deps.signer();
    const now = this.deps.clock.now();
    const answers = await Promise.all(
      servers.map(async ([serverName, keys]) => {
        if (serverName === this.deps.serverName) return [this.ownKeys()];
        if (!isValidServerName(serverName)) return [];
        let stored = await this.deps.store.ofServer(serverName);
        const wanted = Object.entries(isRecord(keys) ? keys : {});
        const satisfied = (list: StoredServerKey[]) =>
          wanted.length === 0
            ? list.some((k) => k.expiredTs === null && k.validUntilTs >= now)
            : wanted.every(([keyId, c]) => list.some((k) => k.keyId === keyId && usableUntil(k) >= (isRecord(c) && typeof c.minimum_valid_until_ts === "number" ? c.minimum_valid_until_ts : now)));
        if (!satisfied(stored)) {
          try {
            await this.fetchDirect(serverName);
            stored = await this.deps.store.ofServer(serverName);
          } catch (err) {
            this.deps.logger.info({ server: serverName, err: (err as Error).message }, "notary: could not fetch a server's keys");
          }
        }
        const responses = [...new Set(stored.filter((k) => wanted.length === 0 || wanted.some(([id]) => id === k.keyId)).map((k) => k.responseJson))];
        return responses.map((text) => signJson(JSON.parse(text) as Record<string, unknown>, signer.serverName, signer.keyId, signer.privateKey));
      }),
    );
    return { server_keys: answers.flat() };
  }
}
