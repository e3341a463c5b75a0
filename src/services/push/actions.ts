/**
 * Push-rule evaluation for every local recipient of every new event (spec: Push Notifications),
 * before `/sync` is woken for the event, so the response that brings the event brings its
 * notification counts too.
 *
 * A local event's actions are evaluated and written in the event's own transaction (`stage`),
 * as Synapse writes its push actions with the event: one commit per send instead of two, which
 * on SQLite is most of what a send into a busy room costs. Pushers hear of them once the event
 * is committed (`committed`). Events from other servers are evaluated after their commit.
 */
import type { Storage, Stores } from "../../storage/interfaces.js";
import type { PushActionRecord } from "../../storage/push.js";
import type { MembershipRecord } from "../../storage/rooms.js";
import { Errors } from "../../errors.js";
import { EventTypes, getRoomVersion, MAX_ID_BYTES, pduOf, roomCreators, roomIdOfEvent, type Pdu, type StateLookup } from "../../events/index.js";
import type { Clock } from "../clock.js";
import { toClientEvent } from "../rooms/client_format.js";
import type { PersistedEvent } from "../rooms/persister.js";
import type { Ruleset } from "./base_rules.js";
import { evaluatePush, type PushOutcome } from "./evaluator.js";
import { trimOldest } from "../bounded_map.js";

/** Kept this long for `/notifications` (Synapse keeps a month); counts only look past receipts. */
export const PUSH_ACTION_RETENTION_MS = 30 * 86_400_000;
const PRUNE_INTERVAL_MS = 3_600_000;
/** Staged outcomes kept at most (only rolled-back transactions leave any behind). */
const MAX_STAGED = 10_000;
/** Member events whose display names are remembered. */
const CACHED_NAMES = 50_000;
/**
 * Staged actions are filed (`PushActionStore.settle`) once SETTLE_EVENTS events' worth wait, or
 * SETTLE_DELAY_MS after the first of them, or at once when SETTLE_ROWS rows wait. Filing writes
 * each recipient's rows into that user's part of the user-keyed table, a page per recipient
 * whatever the number of events moved, while each event staged meanwhile adds to the staging
 * table's per-user index: a few events per move balance the two. Rows alone made a room of 1,000
 * file after every second message (2,000 rows), at a page per member each time: there, filing
 * every 16 messages took a message from 31–34 ms of server CPU to 23–27 ms (three runs each),
 * with a room of ten unchanged (660–710 µs, against 675–700) and the push benchmark's delivery p99 208 → 165 ms.
 */
const SETTLE_EVENTS = 16;
const SETTLE_DELAY_MS = 500;
const SETTLE_ROWS = 20_000;

interface Logger {
  warn(obj: object, msg: string): void;
}

/** What a recipient's push rules decided for one event, for whoever delivers pushes. */
export interface Notified {
  userId: string;
  event: PersistedEvent;
  outcome: PushOutcome;
}

export class PushActionService {
  readonly #listeners: ((notified: Notified[]) => void)[] = [];
  /** Display name by member event ID (see #displayNames). */
  readonly #names = new Map<string, string | null>();
  /** What a local event notifies, from its transaction until it is committed. */
  readonly #staged = new Map<string, Notified[]>();
  #pruner: NodeJS.Timeout | undefined;
  #settleTimer: NodeJS.Timeout | undefined;
  /** The move under way, if any. */
  #settling: Promise<void> | undefined;
  /** Rows added since the last move began, and the events they belong to. */
  #unsettled = 0;
  #unsettledEvents = 0;
  #stopped = false;

  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly serverName: string,
    private readonly rulesFor: (userIds: readonly string[], stores: Stores) => Promise<Map<string, Ruleset>>,
    private readonly logger: Logger,
  ) {}

  /** Called with every notifying outcome, after it is stored (pushers hook in here). */
  onNotified(listener: (notified: Notified[]) => void): void {
    this.#listeners.push(listener);
  }

  start(): void {
    const prune = () => {
      this.storage.pushActions
        .prune(this.clock.now() - PUSH_ACTION_RETENTION_MS)
        .catch((err: unknown) => this.logger.warn({ err }, "push: pruning old push actions failed"));
    };
    this.#pruner = setInterval(prune, PRUNE_INTERVAL_MS).unref();
    // Actions a stopped or crashed process staged and never filed.
    this.#settleSoon(0);
  }

  /** Stops the timers, after the move under way (storage closes next). */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#pruner);
    clearTimeout(this.#settleTimer);
    this.#settleTimer = undefined;
    await this.#settling;
  }

  /** Files what `rows` more staged rows of one event (and any before them) in a moment, or now if many wait. */
  #settleSoon(rows: number): void {
    if (this.#stopped) return;
    this.#unsettled += rows;
    if (rows > 0) this.#unsettledEvents++;
    if (this.#settling) return; // its end schedules the next
    if (this.#unsettled >= SETTLE_ROWS || this.#unsettledEvents >= SETTLE_EVENTS) {
      clearTimeout(this.#settleTimer);
      this.#settle();
    } else {
      // Unreferenced: what waits is safe where it is, and the next start files it.
      this.#settleTimer ??= setTimeout(() => this.#settle(), SETTLE_DELAY_MS).unref();
    }
  }

  #settle(): void {
    this.#settleTimer = undefined;
    this.#unsettled = 0;
    this.#unsettledEvents = 0;
    this.#settling = this.storage.pushActions
      .settle()
      .then(
        () => undefined,
        (err: unknown) => {
          this.logger.warn({ err }, "push: filing staged push actions failed; trying again shortly");
          this.#unsettled = Math.max(this.#unsettled, 1);
        },
      )
      .finally(() => {
        this.#settling = undefined;
        if (this.#unsettled > 0) this.#settleSoon(0);
      });
  }

  /** In a local event's transaction: evaluates and stores its actions; pushers hear at `committed`. */
  async stage(tx: Stores, event: PersistedEvent, before?: StateLookup): Promise<void> {
    const notified = await this.#evaluate(tx, event, before);
    this.#staged.set(event.eventId, notified);
    // A transaction that rolled back leaves its entries behind: keep the map bounded.
    trimOldest(this.#staged, MAX_STAGED);
  }

  /** Once an event is committed: tells pushers what it notifies (evaluating it first if no transaction did). */
  async committed(event: PersistedEvent): Promise<void> {
    const staged = this.#staged.get(event.eventId);
    this.#staged.delete(event.eventId);
    const notified = staged ?? (await this.#evaluate(this.storage, event));
    if (notified.length > 0) {
      this.#settleSoon(notified.length);
      for (const listener of this.#listeners) listener(notified);
    }
  }

  /**
   * Evaluates the recipients' rules for an event and stores what notifies, through `stores`.
   * `before` is the room's state before the event as its persister read it for the auth rules.
   */
  async #evaluate(stores: Stores, event: PersistedEvent, before?: StateLookup): Promise<Notified[]> {
    const { pdu } = event;
    const roomId = roomIdOfEvent(pdu, event.eventId);
    const members = await stores.rooms.membersOf(roomId, "join");
    const joined = members.map((m) => m.userId);
    const recipients = new Set(joined.filter((u) => this.#isLocal(u)));
    // An invitee is not joined yet, but `.m.rule.invite_for_me` is for them.
    if (pdu.type === "m.room.member" && pdu.content.membership === "invite" && pdu.state_key && this.#isLocal(pdu.state_key)) {
      recipients.add(pdu.state_key);
    }
    recipients.delete(pdu.sender);
    if (recipients.size === 0) return [];

    const users = [...recipients];
    const levels = powerLevels((await this.#currentState(stores, pdu, roomId, EventTypes.powerLevels, before))?.content);
    // Room version 12: the creators' power level is infinite, whatever power levels say.
    const createPdu = await this.#currentState(stores, pdu, roomId, EventTypes.create, before);
    const createVersion = getRoomVersion(String(createPdu?.content.room_version ?? "1"));
    const senderIsCreator = createVersion !== undefined && roomCreators(createPdu, createVersion).includes(pdu.sender);
    const names = await this.#displayNames(stores, members.filter((m) => recipients.has(m.userId)));
    // An invitee's member event is this one.
    if (pdu.type === "m.room.member" && pdu.state_key && recipients.has(pdu.state_key)) names.set(pdu.state_key, nameIn(pdu.content));
    const clientEvent = {
      type: pdu.type,
      content: pdu.content,
      sender: pdu.sender,
      room_id: roomId,
      event_id: event.eventId,
      origin_server_ts: pdu.origin_server_ts,
      ...(pdu.state_key !== undefined ? { state_key: pdu.state_key } : {}),
    };
    const rulesets = await this.rulesFor(users, stores);
    const threadId = threadOf(pdu.content);
    const now = this.clock.now();
    const records: PushActionRecord[] = [];
    const notified: Notified[] = [];
    for (const userId of users) {
      const outcome = evaluatePush(rulesets.get(userId)!, {
        event: clientEvent,
        userId,
        displayName: names.get(userId) ?? null,
        memberCount: joined.length,
        senderPowerLevel: senderIsCreator ? Infinity : levels.of(pdu.sender),
        notificationPowerLevels: levels.notifications,
      });
      if (!outcome?.notify) continue;
      records.push({
        userId,
        roomId,
        eventId: event.eventId,
        streamOrdering: event.streamOrdering,
        threadId,
        actions: JSON.stringify(outcome.actions),
        notify: true,
        highlight: outcome.highlight,
        ts: now,
      });
      notified.push({ userId, event, outcome });
    }
    await stores.pushActions.add(records);
    return notified;
  }

  /** `GET /notifications`: the user's notifications, newest first, from a `next_token`. */
  async notifications(userId: string, opts: { from?: string; limit: number; onlyHighlight: boolean }) {
    let before: number | undefined;
    if (opts.from !== undefined && opts.from !== "") {
      if (!/^[0-9]{1,15}$/.test(opts.from)) throw Errors.invalidParam("from is not a token this server gave");
      before = Number(opts.from);
    }
    const rows = await this.storage.pushActions.notifications(userId, { before, limit: opts.limit, onlyHighlight: opts.onlyHighlight });
    const now = this.clock.now();
    const notifications = [];
    for (const row of rows) {
      const stored = await this.storage.rooms.getEvent(row.eventId);
      if (!stored) continue;
      notifications.push({
        actions: JSON.parse(row.actions) as unknown[],
        event: toClientEvent(stored, now, { userId }),
        read: row.read,
        room_id: row.roomId,
        ts: row.ts,
      });
    }
    const last = rows[rows.length - 1];
    return { notifications, ...(rows.length === opts.limit && last ? { next_token: String(last.streamOrdering) } : {}) };
  }

  /**
   * The display names in these members' current member events, remembered by event ID, so that
   * a busy room's members are read once, not per message. (A member event that is redacted later
   * keeps its name here until it leaves the cache: a rare case, and a harmless one.)
   */
  async #displayNames(stores: Stores, members: readonly MembershipRecord[]): Promise<Map<string, string | null>> {
    const out = new Map<string, string | null>();
    const unknown: MembershipRecord[] = [];
    for (const m of members) {
      const known = this.#names.get(m.eventId);
      if (known === undefined) unknown.push(m);
      else out.set(m.userId, known);
    }
    if (unknown.length === 0) return out;
    const byEvent = new Map(unknown.map((m) => [m.eventId, m.userId]));
    for (const stored of await stores.rooms.getEvents([...byEvent.keys()])) {
      const name = nameIn(pduOf(stored).content);
      out.set(byEvent.get(stored.eventId)!, name);
      this.#names.set(stored.eventId, name);
      trimOldest(this.#names, CACHED_NAMES);
    }
    return out;
  }

  /**
   * The room's current `(type, "")` state event, `pdu` being the newest event. The state before
   * `pdu` that its persister read already answers, unless `pdu` is the create event (nothing was
   * read for it), the one it asks for, or a redaction (which may have just stripped it).
   */
  async #currentState(stores: Stores, pdu: Pdu, roomId: string, type: string, before: StateLookup | undefined): Promise<Pdu | undefined> {
    const changed = (pdu.type === type && pdu.state_key === "") || pdu.type === EventTypes.redaction;
    if (before && pdu.type !== EventTypes.create && !changed) return before(type, "");
    const stored = await stores.rooms.currentStateEvent(roomId, type, "");
    return stored && pduOf(stored);
  }

  #isLocal(userId: string): boolean {
    return userId.endsWith(`:${this.serverName}`);
  }
}

function nameIn(content: Record<string, unknown> | undefined): string | null {
  const name = content?.displayname;
  return typeof name === "string" ? name : null;
}

/** The thread an event belongs to for counts: its thread root, or `main`. */
export function threadOf(content: Record<string, unknown>): string {
  const rel = content["m.relates_to"];
  if (rel && typeof rel === "object") {
    const r = rel as Record<string, unknown>;
    // The root's ID is the client's word: one that no event could have (a NUL, which PostgreSQL
    // cannot store, or a runaway length) counts as the main timeline rather than failing the send.
    const root = r.event_id;
    if (r.rel_type === "m.thread" && typeof root === "string" && root.length <= MAX_ID_BYTES && !root.includes("\0")) return root;
  }
  return "main";
}

/** Power levels as the evaluator needs them: a user's level and the `notifications` levels. */
function powerLevels(content: Record<string, unknown> | undefined) {
  const num = (v: unknown, d: number) => (typeof v === "number" && Number.isFinite(v) ? v : d);
  const users = (content?.users ?? {}) as Record<string, unknown>;
  const usersDefault = num(content?.users_default, 0);
  const notif = (content?.notifications ?? {}) as Record<string, unknown>;
  const notifications: Record<string, number> = { room: num(notif.room, 50) };
  for (const [k, v] of Object.entries(notif)) if (typeof v === "number") notifications[k] = v;
  return { of: (userId: string) => num(users[userId], usersDefault), notifications };
}
