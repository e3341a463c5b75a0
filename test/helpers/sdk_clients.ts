/** matrix-js-sdk clients running their real sync loop against a test server. */
import type { ICreateClientOpts, MatrixClient } from "matrix-js-sdk";
import { loadSdk } from "./matrix-sdk.js";

type Sdk = Awaited<ReturnType<typeof loadSdk>>;

/** A guard against a hung test, not a performance assertion. */
const GIVE_UP_MS = 20_000;

let patched = false;
/**
 * matrix-js-sdk arms a `timeout + 80 s` timer for every `/sync` request and
 * never clears it, even after `stopClient()`; each would keep the test
 * process alive for almost two minutes after its last test. Such long timers
 * are unref'd here so that they cannot hold the process open.
 */
function unrefLongTimers(): void {
  if (patched) return;
  patched = true;
  const original = globalThis.setTimeout;
  const wrapped = ((callback: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    const timer = original(callback, ms, ...args);
    if (typeof ms === "number" && ms >= 60_000) timer.unref();
    return timer;
  }) as typeof setTimeout;
  globalThis.setTimeout = Object.assign(wrapped, original);
}

export interface Credentials {
  user_id: string;
  access_token: string;
  device_id: string;
}

export class SdkClients {
  readonly #running: MatrixClient[] = [];

  private constructor(
    readonly sdk: Sdk,
    private readonly baseUrl: string,
  ) {}

  static async create(baseUrl: string): Promise<SdkClients> {
    unrefLongTimers();
    return new SdkClients(await loadSdk(), baseUrl);
  }

  /** Starts a client's sync loop and waits until its first sync is processed ("PREPARED"). */
  async start(
    login: Credentials,
    opts: { timelineLimit?: number; rustCrypto?: boolean; clientOptions?: Partial<ICreateClientOpts> } = {},
  ): Promise<MatrixClient> {
    const { sdk } = this;
    const client = sdk.createClient({
      ...opts.clientOptions,
      baseUrl: this.baseUrl,
      accessToken: login.access_token,
      userId: login.user_id,
      deviceId: login.device_id,
    });
    this.#running.push(client);
    // The Rust crypto stack (WASM), kept in memory: it uploads keys and handles to-device messages.
    if (opts.rustCrypto) await client.initRustCrypto({ useIndexedDB: false });
    const prepared = new Promise<void>((resolve, reject) => {
      client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        if (state === "PREPARED") resolve();
        if (state === "ERROR") reject(data?.error ?? new Error("sync error"));
      });
    });
    let filter;
    if (opts.timelineLimit !== undefined) {
      filter = new sdk.Filter(login.user_id);
      filter.setDefinition({ room: { timeline: { limit: opts.timelineLimit } } });
    }
    await client.startClient({
      filter,
      initialSyncLimit: opts.timelineLimit,
      // Own messages join the timeline when the server echoes them, so every client orders them alike.
      pendingEventOrdering: sdk.PendingEventOrdering.Detached,
    });
    await prepared;
    return client;
  }

  /** Resolves once `check` holds, re-checking after every sync response the client processes. */
  until(client: MatrixClient, what: string, check: () => boolean): Promise<void> {
    if (check()) return Promise.resolve();
    const { sdk } = this;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        client.off(sdk.ClientEvent.Sync, onSync);
        reject(new Error(`${client.getUserId()}: gave up waiting for ${what}`));
      }, GIVE_UP_MS);
      const onSync = () => {
        if (!check()) return;
        clearTimeout(timer);
        client.off(sdk.ClientEvent.Sync, onSync);
        resolve();
      };
      client.on(sdk.ClientEvent.Sync, onSync);
    });
  }

  /** Re-checks an asynchronous condition (one the SDK settles outside its sync loop) until it holds. */
  async untilAsync(client: MatrixClient, what: string, check: () => Promise<boolean>): Promise<void> {
    const giveUp = Date.now() + GIVE_UP_MS;
    while (!(await check())) {
      if (Date.now() > giveUp) throw new Error(`${client.getUserId()}: gave up waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** The promise's result, or an error naming what never came. */
  within<T>(client: MatrixClient, what: string, promise: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const giveUp = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${client.getUserId()}: gave up waiting for ${what}`)), GIVE_UP_MS);
    });
    return Promise.race([promise, giveUp]).finally(() => clearTimeout(timer));
  }

  stopAll(): void {
    for (const client of this.#running.splice(0)) client.stopClient();
  }
}
