/**
 * Push, differentially (issue #19): the same users, rooms and events on Switchboard and on a real
 * Synapse (../shared/tools/synapse.sh, from PyPI), comparing what clients and phones see: the
 * notification counts in `/sync` (with and without per-thread counts), `GET /notifications`, and
 * the pushes each server sends to a recording push gateway.
 *
 * Event IDs differ between the servers, so everything is compared by the scenario's step names.
 * Each step waits (bounded polling) for the pushes its event caused before the next one, so that
 * `counts.unread` is the count at that event on both servers.
 *
 * Without Synapse (no Python, no network for PyPI) the suite is skipped, unless `CI` is set: CI
 * must run it, so there it fails.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual, promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import { freePort } from "./helpers/ports.js";
import { ALLOW_LOOPBACK, Gateway, pusherBody, type Notification } from "./helpers/push_gateway.js";
import { enc, ok, User, type Ev } from "./helpers/rooms.js";
import { startServer, teardown, type TestServer } from "./helpers/server.js";

const SYNAPSE_SH = fileURLToPath(new URL("../../../shared/tools/synapse.sh", import.meta.url));

/** Synapse's config beyond synapse.sh's defaults (which already open registration and lift rate limits). */
const SYNAPSE_EXTRA = [
  // Its pushers may reach the gateway on loopback, as Switchboard's may with ALLOW_LOOPBACK.
  'ip_range_whitelist: ["127.0.0.1/32"]',
  // The MatrixRTC ringing rules (MSC4075), which Switchboard has by default.
  "experimental_features: {msc4075_enabled: true}",
  // `counts.unread` counts notifications, as Switchboard's does, not rooms with notifications.
  "push: {group_unread_count_by_room: false}",
  // Every /sync here is an initial one; Synapse would answer a repeat from its cache for 2 minutes.
  "caches: {sync_response_cache_duration: 0}",
  "",
].join("\n");

interface Synapse {
  baseUrl: string;
  dir: string;
}

/** Starts Synapse, or says why it could not. */
async function startSynapse(): Promise<Synapse | { failed: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-synapse-"));
  writeFileSync(path.join(dir, "extra.yaml"), SYNAPSE_EXTRA);
  try {
    const { stdout } = await promisify(execFile)("bash", [SYNAPSE_SH, "start", String(await freePort()), path.join(dir, "hs"), "--extra", path.join(dir, "extra.yaml")], {
      timeout: 600_000,
    });
    return { baseUrl: stdout.trim().split("\n").pop()!, dir };
  } catch (err) {
    await stopSynapse(dir);
    const e = err as { message: string; stderr?: string };
    const why = (e.stderr?.trim() || e.message).split("\n").slice(-3).join(" / ");
    return { failed: `Synapse could not be started with ${SYNAPSE_SH}: ${why}` };
  }
}

async function stopSynapse(dir: string): Promise<void> {
  await promisify(execFile)("bash", [SYNAPSE_SH, "stop", path.join(dir, "hs")]).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}

const synapse = await startSynapse();
if ("failed" in synapse && process.env.CI) throw new Error(`${synapse.failed}\n(CI is set: this suite must run there)`);
const skip = "failed" in synapse ? `${synapse.failed} (set CI to make this a failure)` : false;

/** Bounded polling: up to 30 s, for a loaded machine (Synapse's pushers run in the background). */
async function eventually(what: string, done: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (await done()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`never happened: ${what}`);
}

interface Counts {
  notification_count?: number;
  highlight_count?: number;
}

interface JoinedRoom {
  unread_notifications?: Counts;
  unread_thread_notifications?: Record<string, Counts>;
}

/** One server's run of the scenario, and what was seen of it, by step names. */
class Side {
  readonly users: Record<string, User> = {};
  readonly rooms: Record<string, string> = {};
  /** Event ID → step name. */
  readonly steps = new Map<string, string>();
  /** Step name → event ID. */
  readonly ids = new Map<string, string>();
  /** Checkpoint name → user → room → counts. */
  readonly checkpoints: Record<string, unknown> = {};
  notifications: Record<string, unknown> = {};
  pushes: Record<string, unknown> = {};
  /** Per pushed user: the `counts.unread` of each badge-only push (no event), in arrival order. */
  badgeOnly: Record<string, unknown[]> = {};
  /** How many actions and pushes spelled out `highlight: false` (see normalActions). */
  highlightFalse = 0;
  gateway!: Gateway;

  constructor(
    readonly name: string,
    readonly baseUrl: string,
  ) {}

  label(eventId: string): string {
    return this.steps.get(eventId) ?? `unknown event ${eventId}`;
  }

  roomLabel(roomId: string): string {
    return Object.entries(this.rooms).find(([, id]) => id === roomId)?.[0] ?? `unknown room ${roomId}`;
  }

  record(step: string, eventId: string): string {
    this.steps.set(eventId, step);
    this.ids.set(step, eventId);
    return eventId;
  }

  id(step: string): string {
    const id = this.ids.get(step);
    assert.ok(id, `no event for step ${step}`);
    return id;
  }

  pushkey(user: string): string {
    return `${this.name}-${user}`;
  }
}

const PUSHED = ["bob", "carol"];

async function sync(user: User, threads: boolean): Promise<Record<string, JoinedRoom>> {
  const filter = { room: { timeline: { limit: 1, ...(threads ? { unread_thread_notifications: true } : {}) } } };
  const body = ok(await user.req("GET", `/sync?filter=${enc(JSON.stringify(filter))}`)) as { rooms?: { join?: Record<string, JoinedRoom> } };
  return body.rooms?.join ?? {};
}

/** Counts with absent fields as 0, and (Synapse leaves out threads with nothing unread) zero threads left out. */
function normalCounts(side: Side, room: JoinedRoom | undefined, threads: boolean): unknown {
  const c = (x: Counts | undefined) => ({ notification_count: x?.notification_count ?? 0, highlight_count: x?.highlight_count ?? 0 });
  if (!room) return "not joined";
  const out: Record<string, unknown> = { main: c(room.unread_notifications) };
  if (threads) {
    for (const [root, counts] of Object.entries(room.unread_thread_notifications ?? {})) {
      const n = c(counts);
      if (n.notification_count || n.highlight_count) out[`thread ${side.label(root)}`] = n;
    }
  }
  return out;
}

async function checkpoint(side: Side, name: string): Promise<void> {
  const seen: Record<string, unknown> = {};
  for (const [who, user] of Object.entries(side.users)) {
    const plain = await sync(user, false);
    const threaded = await sync(user, true);
    for (const [label, roomId] of Object.entries(side.rooms)) {
      seen[`${who} in ${label}`] = { counts: normalCounts(side, plain[roomId], false), threaded: normalCounts(side, threaded[roomId], true) };
    }
  }
  side.checkpoints[name] = seen;
}

interface NotificationRecord {
  event: Ev;
  room_id: string;
  actions: unknown[];
  read: boolean;
}

async function notificationsOf(user: User): Promise<NotificationRecord[]> {
  return (ok(await user.req("GET", "/notifications?limit=100")) as { notifications: NotificationRecord[] }).notifications;
}

/** Waits until the gateway has every push the event `step` caused (by `GET /notifications` of each user with a pusher). */
async function settle(side: Side, step: string): Promise<void> {
  const eventId = side.id(step);
  for (const who of PUSHED) {
    const notified = (await notificationsOf(side.users[who]!)).some((n) => n.event.event_id === eventId);
    if (!notified) continue;
    const key = side.pushkey(who);
    await eventually(`${side.name} pushes ${step} to ${who}`, () =>
      side.gateway.received.some((n) => n.event_id === eventId && n.devices.some((d) => d.pushkey === key)),
    );
  }
}

/** Each user's `GET /notifications`, as step labels, into `side.notifications`. */
async function collectNotifications(side: Side): Promise<void> {
  for (const [who, user] of Object.entries(side.users)) {
    side.notifications[who] = (await notificationsOf(user)).map((n) => ({
      step: side.label(n.event.event_id),
      room: side.roomLabel(n.room_id),
      actions: normalActions(n.actions),
      read: n.read,
    }));
  }
}

async function send(side: Side, step: string, who: string, room: string, content: Record<string, unknown>, type = "m.room.message"): Promise<string> {
  const id = side.record(step, await side.users[who]!.send(side.rooms[room]!, content, type));
  await settle(side, step);
  return id;
}

/** The member event that invited `who`, recorded as step `step`. */
async function recordInvite(side: Side, step: string, room: string, who: string): Promise<void> {
  const state = await side.users.alice!.fullState(side.rooms[room]!);
  const member = state.find((e) => e.type === "m.room.member" && e.state_key === side.users[who]!.userId);
  assert.equal(member?.content.membership, "invite");
  side.record(step, member.event_id);
  await settle(side, step);
}

async function receipt(side: Side, who: string, room: string, step: string, type: string, threadStep?: string): Promise<void> {
  const body = threadStep === undefined ? {} : { thread_id: threadStep === "main" ? "main" : side.id(threadStep) };
  ok(await side.users[who]!.req("POST", `/rooms/${enc(side.rooms[room]!)}/receipt/${type}/${enc(side.id(step))}`, body));
}

function encrypted(n: number): Record<string, unknown> {
  return {
    algorithm: "m.megolm.v1.aes-sha2",
    ciphertext: `AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg2yyOwAtHaZTwyNg37afzg8f3r9IsN9r4RNFg7MaZencUJe4qvELiDiopUjy5wYVDAtqdBzer5bWRD9ldxp1FLgbQvBcjkkywYjCsmsq6+hArLd9oAQZnGKn/qLxP1e3XiJ4pMGkDSWbnqX0dSwYDkwH7VTnYdlhcg${n}`,
    device_id: "ALICEDEVICE",
    sender_key: "FdrB2sMvmnC2q3NI8vbO/3EKpdxKWuCy9y7Ybvvsdi8",
    session_id: "7HYOpzWAGFmmRmTIiHBA9Xf72oXPkB3ZcaNGLGUjDnw",
  };
}

const ring = (mentions: Record<string, unknown>) => ({
  application: "m.call",
  call_id: "",
  notification_type: "ring",
  "m.mentions": mentions,
  sender_ts: 1_700_000_000_000,
  lifetime: 30_000,
});

/** The scenario, step by step; every event is named, and named alike on both servers. */
async function runScenario(side: Side): Promise<void> {
  side.gateway = await new Gateway().start();
  for (const who of ["alice", "bob", "carol"]) {
    const user = await User.register(side.baseUrl, who);
    side.users[who] = user;
    // Display names as clients set them (the servers' defaults need not agree).
    ok(await user.req("PUT", `/profile/${enc(user.userId)}/displayname`, { displayname: who[0]!.toUpperCase() + who.slice(1) }));
    if (PUSHED.includes(who)) {
      ok(await user.req("POST", "/pushers/set", pusherBody(side.gateway.url, { pushkey: side.pushkey(who), data: { url: side.gateway.url, extra: who } })));
    }
  }
  const { alice, bob, carol } = side.users as { alice: User; bob: User; carol: User };

  // A public group room: Alice is its creator (power level 100), Bob and Carol have 0.
  side.rooms.group = await alice.createRoom({ preset: "public_chat", name: "The group" });
  await bob.join(side.rooms.group);
  await carol.join(side.rooms.group);
  // A DM with Bob, and an encrypted one.
  side.rooms.dm = await alice.createRoom({ preset: "trusted_private_chat", is_direct: true, invite: [bob.userId] });
  await recordInvite(side, "dm: invite bob", "dm", "bob");
  await bob.join(side.rooms.dm);
  side.rooms.edm = await alice.createRoom({
    preset: "trusted_private_chat",
    is_direct: true,
    invite: [bob.userId],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  await recordInvite(side, "edm: invite bob", "edm", "bob");
  await bob.join(side.rooms.edm);
  await checkpoint(side, "rooms made");

  await send(side, "group: hello", "alice", "group", { msgtype: "m.text", body: "hello everyone" });
  await send(side, "group: notice", "alice", "group", { msgtype: "m.notice", body: "a bot speaks" });
  await send(side, "group: edit", "alice", "group", {
    msgtype: "m.text",
    body: "* hello everybody",
    "m.new_content": { msgtype: "m.text", body: "hello everybody" },
    "m.relates_to": { rel_type: "m.replace", event_id: side.id("group: hello") },
  });
  await send(side, "group: reaction", "bob", "group", { "m.relates_to": { rel_type: "m.annotation", event_id: side.id("group: hello"), key: "👍" } }, "m.reaction");
  await send(side, "group: user mention", "carol", "group", { msgtype: "m.text", body: "Bob: look", "m.mentions": { user_ids: [bob.userId] } });
  await send(side, "group: display-name mention", "alice", "group", { msgtype: "m.text", body: "are you there, Bob?" });
  await send(side, "group: room mention by admin", "alice", "group", { msgtype: "m.text", body: "@room meeting now", "m.mentions": { room: true } });
  await send(side, "group: room mention by PL 0", "carol", "group", { msgtype: "m.text", body: "@room me too", "m.mentions": { room: true } });
  await checkpoint(side, "after the group's messages");

  await receipt(side, "bob", "group", "group: user mention", "m.read");
  await checkpoint(side, "bob read up to the user mention");

  await send(side, "group: thread root", "alice", "group", { msgtype: "m.text", body: "a thread starts" });
  const inThread = (body: string) => ({ msgtype: "m.text", body, "m.relates_to": { rel_type: "m.thread", event_id: side.id("group: thread root"), is_falling_back: true, "m.in_reply_to": { event_id: side.id("group: thread root") } } });
  await send(side, "group: thread reply 1", "carol", "group", inThread("first reply"));
  await send(side, "group: thread reply 2", "alice", "group", inThread("second reply"));
  await send(side, "group: after the thread", "alice", "group", { msgtype: "m.text", body: "back in the main timeline" });
  await checkpoint(side, "after the thread");

  await receipt(side, "bob", "group", "group: thread reply 1", "m.read", "group: thread root");
  await checkpoint(side, "bob read the thread's first reply (threaded)");
  await receipt(side, "carol", "group", "group: thread root", "m.read.private");
  await checkpoint(side, "carol read up to the thread root (private)");
  await receipt(side, "bob", "group", "group: after the thread", "m.read", "main");
  await checkpoint(side, "bob read the main timeline (thread main)");

  await send(side, "group: ring", "alice", "group", ring({ room: true }), "org.matrix.msc4075.rtc.notification");
  await send(side, "group: ring by PL 0", "carol", "group", ring({ room: true }), "org.matrix.msc4075.rtc.notification");

  await send(side, "dm: hello", "alice", "dm", { msgtype: "m.text", body: "hi there" });
  await send(side, "dm: ring", "alice", "dm", ring({ room: true }), "org.matrix.msc4075.rtc.notification");
  await send(side, "dm: ring for bob", "alice", "dm", ring({ user_ids: [bob.userId] }), "org.matrix.msc4075.rtc.notification");
  await send(side, "dm: notice", "alice", "dm", { msgtype: "m.notice", body: "a bot in the DM" });
  await send(side, "dm: bob answers", "bob", "dm", { msgtype: "m.text", body: "hello Alice" });
  await send(side, "edm: encrypted 1", "alice", "edm", encrypted(1), "m.room.encrypted");
  await send(side, "edm: encrypted 2", "alice", "edm", encrypted(2), "m.room.encrypted");
  await send(side, "edm: encrypted by bob", "bob", "edm", encrypted(3), "m.room.encrypted");
  await checkpoint(side, "after the DMs");

  // An invite for Carol to a room of her own.
  side.rooms.invite = await alice.createRoom({ preset: "private_chat", name: "Secret plans" });
  ok(await alice.act("invite", side.rooms.invite, carol.userId));
  await recordInvite(side, "invite: carol", "invite", "carol");
  await receipt(side, "bob", "dm", "dm: ring for bob", "m.read.private");
  await send(side, "group: last", "alice", "group", { msgtype: "m.text", body: "the last word" });
  await checkpoint(side, "the end");

  for (const user of Object.values(side.users)) {
    side.highlightFalse += (await notificationsOf(user)).filter((n) => n.actions.some(isHighlightFalse)).length;
  }
  await collectNotifications(side);
  for (const who of PUSHED) {
    const key = side.pushkey(who);
    const mine = side.gateway.received.filter((n) => n.devices.some((d) => d.pushkey === key));
    // Both push a badge update (no event) when a receipt changes the count.
    side.badgeOnly[who] = mine.filter((n) => !n.event_id).map((n) => n.counts?.unread);
    side.highlightFalse += mine.filter((n) => n.devices.some((d) => d.tweaks?.highlight === false)).length;
    side.pushes[who] = mine.filter((n) => n.event_id).map((n) => describePush(side, n));
  }
}

const isHighlightFalse = (a: unknown) => isDeepStrictEqual(a, { set_tweak: "highlight", value: false });

/**
 * Synapse's rules spell out `{set_tweak: highlight, value: false}`, which is highlight's default
 * (spec: "highlight ... defaults to false"); Switchboard's, like the spec's current ones, leave it
 * out. Both mean the same, so it is taken out, and tweaks are put in one order (`notify` first).
 */
function normalActions(actions: unknown[]): unknown[] {
  const key = (a: unknown) => (typeof a === "string" ? `0${a}` : `1${(a as { set_tweak: string }).set_tweak}`);
  return actions.filter((a) => !isHighlightFalse(a)).sort((a, b) => key(a).localeCompare(key(b)));
}

function normalTweaks(tweaks: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (!tweaks) return undefined;
  const out = Object.fromEntries(Object.entries(tweaks).filter(([k, v]) => !(k === "highlight" && v === false)).sort(([a], [b]) => a.localeCompare(b)));
  return Object.keys(out).length ? out : undefined;
}

function describePush(side: Side, n: Notification): unknown {
  return {
    step: side.label(n.event_id),
    room: side.roomLabel(n.room_id),
    type: n.type,
    sender: n.sender?.split(":")[0],
    sender_display_name: n.sender_display_name,
    room_name: n.room_name,
    prio: n.prio,
    counts: n.counts,
    devices: n.devices.map((d) => ({ app_id: d.app_id, data: d.data, tweaks: normalTweaks(d.tweaks) })),
  };
}

describe("push, against Synapse", { skip, timeout: 600_000 }, () => {
  let switchboard: TestServer;
  const sides: Side[] = [];

  before(async () => {
    switchboard = await startServer({ ...ALLOW_LOOPBACK });
    const reference = synapse as Synapse;
    sides.push(new Side("switchboard", switchboard.baseUrl), new Side("synapse", reference.baseUrl));
    await Promise.all(sides.map((s) => runScenario(s)));
  });
  after(() =>
    teardown(
      () => switchboard?.stop(),
      ...sides.map((s) => () => s.gateway?.stop()),
      () => ("dir" in synapse ? stopSynapse(synapse.dir) : undefined),
    ),
  );

  /** Every difference at once, each with both sides' values. */
  function differences(pick: (s: Side) => Record<string, unknown>): string[] {
    const [sb, syn] = sides.map(pick) as [Record<string, unknown>, Record<string, unknown>];
    const out: string[] = [];
    for (const key of new Set([...Object.keys(sb), ...Object.keys(syn)])) {
      if (!isDeepStrictEqual(sb[key], syn[key])) {
        out.push(`${key}:\n  switchboard: ${JSON.stringify(sb[key])}\n  synapse:     ${JSON.stringify(syn[key])}`);
      }
    }
    return out;
  }

  test("only Synapse spells out highlight: false, which the comparisons leave out", () => {
    assert.equal(sides[0]!.highlightFalse, 0);
    assert.ok(sides[1]!.highlightFalse > 0, "Synapse's rules have {set_tweak: highlight, value: false}; if no longer, drop normalActions");
  });

  test("notification counts in /sync agree at every checkpoint", () => {
    // Both count from the join when there is no unthreaded receipt: the invite that notified
    // Bob stops counting in /sync once he joins (Synapse: event_push_actions.py,
    // _get_unread_counts_by_receipt_txn), though both servers' badges count it (see the pushes).
    const diffs = Object.keys(sides[0]!.checkpoints).flatMap((cp) =>
      differences((s) => s.checkpoints[cp] as Record<string, unknown>).map((d) => `[${cp}] ${d}`),
    );
    assert.deepEqual(diffs, []);
  });

  test("GET /notifications agrees: which events, in order, their actions, and read", async () => {
    // A receipt makes the plain notifications it covers go (highlights stay). Switchboard removes
    // them with the receipt; Synapse in a background job every 30 s: the lists agree once it ran.
    // Synapse's `read` compares the event with the user's newest receipt in the room, whatever its
    // thread (rest/client/notifications.py). Switchboard's asks whether a receipt covers the event:
    // unthreaded, or in the event's thread, as the counts do. Bob's `main` receipt after the
    // thread does not cover its second reply, which he has not read (and which still counts).
    const reply = (list: { step: string; read: boolean }[] | undefined) => list?.find((n) => n.step === "group: thread reply 2");
    const compare = async () => {
      for (const side of sides) await collectNotifications(side);
      const [sb, syn] = sides.map((s) => s.notifications.bob as { step: string; read: boolean }[]);
      const reads = [reply(sb)?.read, reply(syn)?.read];
      if (reply(syn)) reply(syn)!.read = false;
      return { reads, diff: differences((s) => s.notifications) };
    };
    let result = await compare();
    while (result.diff.length > 0) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      result = await compare();
    }
    assert.deepEqual(result.reads, [false, true]);
    assert.deepEqual(result.diff, []);
  });

  test("the pushes agree: which events, prio, counts.unread, data and tweaks", () => {
    assert.deepEqual(differences((s) => s.pushes), []);
    // Badge-only pushes after receipts that changed the count: the same counts on both (sorted:
    // one may overtake an event's push on its way to the gateway).
    const badges = sides.map((s) => Object.fromEntries(Object.entries(s.badgeOnly).map(([who, list]) => [who, [...list].sort()])));
    assert.deepEqual(badges[0], badges[1]);
    assert.ok(Object.values(badges[0]!).some((list) => list.length > 0), "the scenario's receipts change the badges");
  });
});
