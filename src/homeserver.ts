/**
 * Assembles a homeserver from a config: storage, services, one HTTP app per
 * listener address. Nothing here is global, so tests can run several.
 */
import type { Logger } from "pino";
import { registerRoutes } from "./api/routes.js";
import type { Config } from "./config/config.js";
import { beginDraining, createHttpApp, type App } from "./http/server.js";
import { systemClock, type Clock } from "./services/clock.js";
import { createServices, type Services } from "./services/index.js";
import { loadOrCreateSigningKey, type SigningKey } from "./services/signing_key.js";
import type { OutboundOptions } from "./services/livekit/outbound.js";
import type { Notifier } from "./services/sync/notifier.js";
import type { Storage } from "./storage/interfaces.js";
import { openStorage } from "./storage/open.js";

export interface Homeserver {
  services: Services;
  storage: Storage;
  signingKey: SigningKey;
  /** Starts every listener; resolves to the URLs it listens on. */
  start(): Promise<string[]>;
  /** The URLs of the running listeners, in config order. */
  urls(): string[];
  /** Stops intake, lets in-flight requests finish, closes storage. */
  stop(): Promise<void>;
}

export interface HomeserverOptions {
  /** CAs and name resolution for calls the LiveKit service makes to other homeservers (tests). */
  outbound?: OutboundOptions;
  /**
   * Shared with other homeservers on the same database, as a notifier that crosses processes
   * would be (tests); each homeserver has its own in-process one by default.
   */
  notifier?: Notifier;
  /** This process's name among several on one PostgreSQL database (`--worker-id`). */
  workerId?: string;
  /** The link to the other processes on the database broke (see openStorage). */
  onClusterLost?: (err: Error) => void;
}

/** Opens storage (migrating it) and builds the services; `start` then opens the listeners. */
export async function createHomeserver(
  config: Config,
  logger: Logger,
  clock: Clock = systemClock,
  opts: HomeserverOptions = {},
): Promise<Homeserver> {
  const storage = await openStorage(config.database, { workerId: opts.workerId, onClusterLost: opts.onClusterLost });
  const signingKey = loadOrCreateSigningKey(config.signingKeyPath);
  const services = createServices({
    config,
    storage,
    clock,
    signingKey: () => signingKey,
    logger,
    outbound: opts.outbound,
    notifier: opts.notifier,
  });
  const apps: App[] = [];
  const urls: string[] = [];
  let stopping: Promise<void> | undefined;

  return {
    services,
    storage,
    signingKey,
    urls: () => [...urls],
    async start() {
      const pending = await services.delayedEvents.start();
      if (pending > 0) logger.info({ pending }, "delayed events scheduled");
      if (config.media.enabled) await services.media.start();
      services.pushActions.start();
      services.pushers.start();
      services.federation.sender.start();
      for (const listener of config.listeners) {
        for (const host of listener.bindAddresses) {
          const app = createHttpApp({
            logger,
            bodyLimit: config.maxRequestBodyBytes,
            trustProxy: listener.xForwarded,
            // The LiveKit endpoints answer CORS and OPTIONS as lk-jwt-service does.
            ownCorsPrefix: config.livekit && listener.resources.has("client") ? `${config.livekit.path}/` : undefined,
          });
          registerRoutes(app, services, listener.resources);
          apps.push(app);
          await app.listen({ host, port: listener.port });
          const addr = app.server.address();
          const port = typeof addr === "object" && addr ? addr.port : listener.port;
          const shown = host.includes(":") ? `[${host}]` : host;
          urls.push(`http://${shown}:${port}`);
        }
      }
      return [...urls];
    },
    stop() {
      for (const app of apps) beginDraining(app);
      stopping ??= (async () => {
        // Delegated-leave jobs stop without sending: each client's own delayed leave still stands.
        services.livekit?.stop();
        await services.delayedEvents.stop();
        await Promise.all(apps.map((a) => a.close()));
        // No request can start typing now; a pending expiry must not reach the closed storage.
        services.typing.close();
        await services.media.stop();
        await services.pushers.stop();
        await services.federation.sender.stop();
        await services.pushActions.stop();
        await storage.close();
      })();
      return stopping;
    },
  };
}
