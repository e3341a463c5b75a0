/**
 * Push-rule evaluation for every local recipient of every new event (spec: Push Notifications),
 * once the event is committed and before `/sync` is woken for it, so the response that brings
 * the event brings its notification counts too. The room's lock and transaction are not held
 * meanwhile: evaluation costs the sender latency, not the room its throughput.
 */
import type { Storage } from "../../storage/interfaces.js";
import type { PushActionRecord } from "../../storage/push.js";
import type { MembershipRecord } from "../../storage/rooms.js";
import { Errors } from "../../errors.js";
import { getRoomVersion, pduOf, roomCreators, roomIdOfEvent } from "../../events/index.js";
import type { Clock } from "../clock.js";
import { toClientEvent } from "../rooms/client_format.js";
import type { PersistedEvent } from "../rooms/persister.js";
import type { Ruleset } from "./base_rules.js";
import { evaluatePush, type PushOutcome } from "./evaluator.js";

/** Kept this long for `/notifications` (Synapse keeps a month); counts only look past receipts. */
export const PUSH_ACTION_RETENTION_MS = 30 * 86_400_000;
const PRUNE_INTERVAL_MS = 3_600_000;
/** Member events whose display names are remembered. */
const CACHED_NAMES = 50_000;

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
  #pruner: NodeJS.Timeout | undefined;

  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly serverName: string,
    private readonly rulesFor: (userIds: readonly string[]) => Promise<Map<string, Ruleset>>,
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
  }

  stop(): void {
    clearInterval(this.#pruner);
  }

  /** Evaluates the recipients' rules for a committed event and stores what notifies. */
  async eventPersisted(event: PersistedEvent): Promise<void> {
    const { pdu } = event;
    const roomId = roomIdOfEvent(pdu, event.eventId);
    const members = await this.storage.rooms.membersOf(roomId, "join");
    const joined = members.map((m) => m.userId);
    const recipients = new Set(joined.filter((u) => this.#isLocal(u)));
    // An invitee is not joined yet, but `.m.rule.invite_for_me` is for them.
    if (pdu.type === "m.room.member" && pdu.content.membership === "invite" && pdu.state_key && this.#isLocal(pdu.state_key)) {
      recipients.add(pdu.state_key);
    }
    recipients.delete(pdu.sender);
    if (recipients.size === 0) return;

    const users = [...recipients];
    const powerEvent = await this.storage.rooms.currentStateEvent(roomId, "m.room.power_levels", "");
    const levels = powerLevels(powerEvent ? pduOf(powerEvent).content : undefined);
    // Room version 12: the creators' power level is infinite, whatever power levels say.
    const createEvent = await this.storage.rooms.currentStateEvent(roomId, "m.room.create", "");
    const createPdu = createEvent ? pduOf(createEvent) : undefined;
    const createVersion = getRoomVersion(String(createPdu?.content.room_version ?? "1"));
    const senderIsCreator = createVersion !== undefined && roomCreators(createPdu, createVersion).includes(pdu.sender);
    const names = await this.#displayNames(members.filter((m) => recipients.has(m.userId)));
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
    const rulesets = await this.rulesFor(users);
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
    await this.storage.pushActions.add(records);
    if (notified.length > 0) for (const listener of this.#listeners) listener(notified);
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
  async #displayNames(members: readonly MembershipRecord[]): Promise<Map<string, string | null>> {
    const out = new Map<string, string | null>();
    const unknown: MembershipRecord[] = [];
    for (const m of members) {
      const known = this.#names.get(m.eventId);
      if (known === undefined) unknown.push(m);
      else out.set(m.userId, known);
    }
    if (unknown.length === 0) return out;
    const byEvent = new Map(unknown.map((m) => [m.eventId, m.userId]));
    for (const stored of await this.storage.rooms.getEvents([...byEvent.keys()])) {
      const name = nameIn(pduOf(stored).content);
      out.set(byEvent.get(stored.eventId)!, name);
      this.#names.set(stored.eventId, name);
      if (this.#names.size > CACHED_NAMES) this.#names.delete(this.#names.keys().next().value!);
    }
    return out;
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
    if (r.rel_type === "m.thread" && typeof r.event_id === "string") return r.event_id;
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
