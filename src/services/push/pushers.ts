/**
 * HTTP pushers: setting them, and delivering each user's notifications to their push gateways
 * (spec: Push Notifications; Push Gateway API), durably, as Synapse's HTTP pusher does:
 *
 * - A pusher remembers the stream position of the last notification it pushed. Delivering
 *   reads the user's unread notifications after it, oldest first, a few at a time, POSTs each
 *   to the gateway and moves the position on success. Nothing is queued in memory, so what a
 *   restart or a dead gateway interrupted is sent later, in order.
 * - One process at a time delivers for a pusher: it claims the row with a lease, renews the
 *   lease while it works (and while it waits to retry), and lets go when idle. A process that
 *   dies holds nothing for long: its claims are void once it is gone or its lease has run out.
 * - Work starts when notifications are stored here (`notified`) or in another process (it
 *   publishes the users), at start, and on a periodic sweep that catches whatever those missed.
 *
 * All of it runs off the request path: a slow or dead gateway delays nobody's `/send` or `/sync`.
 */
import type { Config } from "../../config/config.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import type { Clock } from "../clock.js";
import { AddressPolicy } from "../outbound/address_policy.js";
import { FetchThread } from "../outbound/fetch_thread.js";
import { systemResolver } from "../outbound/safe_fetch.js";
import type { Notified } from "./actions.js";
import { PushDelivery, type DeliveryLogger } from "./delivery.js";
import { buildBadgeNotification, notifyGateway } from "./gateway.js";
import type { Badge } from "../../storage/pushers.js";
import { checkKey, pusherView, validatePusher, type SetPusherBody } from "./pusher_settings.js";

const TOPIC = "pushers";
/** A badge-only push waits this long at most for its gateway; it is not retried. */
const BADGE_TIMEOUT_MS = 10_000;
/** Users per cluster message, so that one stays well inside PostgreSQL's NOTIFY payload limit. */
const USERS_PER_MESSAGE = 20;
/** How often every pusher with something to push and nobody delivering for it is looked for. */
const SWEEP_INTERVAL_MS = 60_000;

/** What a process publishes: users it stored notifications for, with the events. */
type Message = { u: [string, string[]][] };

export class PusherService {
  readonly #delivery: PushDelivery;
  readonly #policy: AddressPolicy;
  readonly #fetcher: FetchThread;
  /** Users (and their events) told of since the last wake-up, woken together. */
  #toWake = new Map<string, Set<string>>();
  /** Where the events of `#toWake` stand in the stream. */
  #orderings = new Map<string, number>();
  #wakeScheduled = false;
  /** Users whose read receipts moved since the last badge round, handled together. */
  #readers = new Set<string>();
  #badgesScheduled = false;
  #sweeper: NodeJS.Timeout | undefined;
  #started = false;

  constructor(
    private readonly config: Config,
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly logger: DeliveryLogger,
  ) {
    const { ipRangeBlacklist, ipRangeWhitelist } = config.outbound;
    this.#policy = new AddressPolicy({ deny: ipRangeBlacklist, allow: ipRangeWhitelist });
    // On a thread of its own, so that pushes do not queue behind the requests making them; and
    // with connections to a gateway reused: one per push would cost more than the push itself.
    // A gateway's name is resolved once a minute, not for every push.
    this.#fetcher = new FetchThread(
      { deny: ipRangeBlacklist, allow: ipRangeWhitelist, userAgent: "Switchboard push", keepAlive: true, resolutionCacheMs: 60_000 },
      (err) => logger.warn({ err }, "push: the thread that sends to push gateways failed; it starts again with the next push"),
    );
    this.#delivery = new PushDelivery(storage, clock, this.#fetcher, config.push.includeContent, logger);
    storage.cluster.subscribe(TOPIC, (body) => {
      const users = parseMessage(body);
      if (users && this.#started) this.#track(this.#delivery.wake(users, () => undefined));
    });
    // A process that died may have held pushers: they are free now.
    storage.cluster.onWorkerGone(() => {
      if (this.#started) this.#track(this.#delivery.sweep());
    });
  }

  // --- The client API ---

  async list(userId: string): Promise<{ pushers: Record<string, unknown>[] }> {
    return { pushers: (await this.storage.pushers.listOf(userId)).map(pusherView) };
  }

  async set(requester: Requester, body: SetPusherBody): Promise<void> {
    if (body.kind === null) {
      checkKey(body);
      await this.storage.pushers.delete({ appId: body.app_id, pushkey: body.pushkey, userId: requester.userId });
      return;
    }
    const s = await validatePusher(body, this.#policy, systemResolver);
    await this.storage.pushers.set(
      {
        userId: requester.userId,
        appId: s.appId,
        pushkey: s.pushkey,
        kind: "http",
        appDisplayName: s.appDisplayName,
        deviceDisplayName: s.deviceDisplayName,
        profileTag: s.profileTag,
        lang: s.lang,
        data: s.data,
        deviceId: requester.deviceId,
        createdTs: this.clock.now(),
        // A new pusher pushes what notifies from now on, not the user's history.
        lastStreamOrdering: this.storage.streams.current("events"),
      },
      s.append,
    );
    if (this.#started) this.#delivery.retryNow({ appId: s.appId, pushkey: s.pushkey, userId: requester.userId });
  }

  // --- Delivery ---

  /** Starts delivering: what is pending now (queued while the server was down) goes at once. */
  start(): void {
    if (!this.config.push.enabled || this.#started) return;
    this.#started = true;
    this.#delivery.start();
    this.#track(this.#delivery.sweep());
    this.#sweeper = setInterval(() => this.#track(this.#delivery.sweep()), SWEEP_INTERVAL_MS);
    this.#sweeper.unref();
  }

  /**
   * Stored notifications (`PushActionService.onNotified`): schedules delivery and returns at
   * once, so the sender's request never waits on a gateway.
   */
  notified(notified: readonly Notified[]): void {
    if (!this.#started) return;
    for (const n of notified) {
      let events = this.#toWake.get(n.userId);
      if (!events) this.#toWake.set(n.userId, (events = new Set()));
      events.add(n.event.eventId);
      this.#orderings.set(n.event.eventId, n.event.streamOrdering);
    }
    if (this.#wakeScheduled) return;
    this.#wakeScheduled = true;
    // A burst of events (a busy room) wakes each recipient's pushers once, with one query.
    setImmediate(() => {
      this.#wakeScheduled = false;
      const users = this.#toWake;
      const orderings = this.#orderings;
      this.#toWake = new Map();
      this.#orderings = new Map();
      this.#track(this.#delivery.wake(users, (elsewhere) => this.#publish(elsewhere), orderings));
    });
  }

  /**
   * The user sent a read receipt (`ReceiptService.onRead`). As Synapse does, each of their
   * pushers whose gateway was last sent another badge gets a badge-only push with the new count,
   * so that the app's icon updates when the user read on another device. Sent by the process
   * that stored the receipt, outside the pushers' queues; a failure is logged, not retried.
   */
  read(userId: string): void {
    if (!this.#started) return;
    this.#readers.add(userId);
    if (this.#badgesScheduled) return;
    this.#badgesScheduled = true;
    setImmediate(() => {
      this.#badgesScheduled = false;
      const users = [...this.#readers];
      this.#readers = new Set();
      this.#track(this.#sendBadges(users));
    });
  }

  async #sendBadges(userIds: string[]): Promise<void> {
    const pushers = await this.storage.pushers.ofUsers(userIds);
    const badges = new Map<string, Promise<Badge>>();
    await Promise.all(
      pushers.map(async (pusher) => {
        let badge = badges.get(pusher.userId);
        if (!badge) badges.set(pusher.userId, (badge = this.#delivery.badge(pusher.userId)));
        const unread = await badge;
        if (!this.#started || !(await this.storage.pushers.noteBadge(pusher, unread))) return;
        const result = await notifyGateway(this.#fetcher, pusher, buildBadgeNotification(pusher, unread.count), { timeoutMs: BADGE_TIMEOUT_MS });
        if (result.kind !== "delivered") {
          this.logger.info({ userId: pusher.userId, appId: pusher.appId, result }, "push: sending a badge update failed");
        }
      }),
    );
  }

  /** Stops delivering and lets go of every pusher this process holds, so another takes them now. */
  async stop(): Promise<void> {
    if (!this.#started) return;
    this.#started = false;
    clearInterval(this.#sweeper);
    await this.#delivery.stop();
    this.#fetcher.close();
  }

  /** Tells the other processes about users whose pushers one of them holds. */
  #publish(users: Map<string, Set<string>>): void {
    const entries = [...users].map(([u, events]) => [u, [...events]] as [string, string[]]);
    for (let i = 0; i < entries.length; i += USERS_PER_MESSAGE) {
      this.storage.cluster.publish(TOPIC, { u: entries.slice(i, i + USERS_PER_MESSAGE) } satisfies Message);
    }
  }

  #track(work: Promise<unknown>): void {
    work.catch((err: unknown) => this.logger.warn({ err }, "push: looking for pushers to deliver for failed"));
  }
}

function parseMessage(body: unknown): Map<string, Set<string>> | undefined {
  const u = (body as Partial<Message> | null)?.u;
  if (!Array.isArray(u)) return undefined;
  const out = new Map<string, Set<string>>();
  for (const entry of u) {
    if (!Array.isArray(entry) || typeof entry[0] !== "string" || !Array.isArray(entry[1])) continue;
    out.set(entry[0], new Set(entry[1].filter((e): e is string => typeof e === "string")));
  }
  return out;
}
