/**
 * The event features calls lean on, each tried once in the throwaway room: a delayed event
 * (scheduled, restarted, fired), a sticky event, and `state_after` on /sync.
 */
import { randomBytes } from "node:crypto";
import { isObject, type DoctorContext } from "./context.js";
import { describeReply, errcodeOf, type HttpReply } from "./http.js";
import { call, cancelDelayed, DELAYED } from "./session.js";

const EVENT_TYPE = "org.matrix.switchboard.doctor";

function roomPath(ctx: DoctorContext): string {
  return `/_matrix/client/v3/rooms/${ctx.roomId ? encodeURIComponent(ctx.roomId) : "{roomId}"}`;
}

const txn = () => `doctor-${randomBytes(8).toString("hex")}`;

/** Synapse 1.163's errcode for a delay above its maximum (the accepted MSC4140 says M_MAX_DELAY_EXCEEDED). */
const SYNAPSE_TOO_LONG = "ORG.MATRIX.MSC4140_DELAY_TOO_LARGE";

/** Ten years: longer than any server's maximum, so a refusal names it. */
const PROBE_DELAY_MS = 10 * 365 * 24 * 3_600_000;

const asDuration = (ms: number) => (ms % 3_600_000 === 0 ? `${ms / 3_600_000} h` : `${Math.round(ms / 1000)} s`);

/**
 * The server's longest delay: from /capabilities, or else as MSC4140 has a server say it, in the
 * refusal of a delay that is too long (`M_MAX_DELAY_EXCEEDED` with `max_delay`; Switchboard's
 * query-parameter form puts both under `org.matrix.msc4140.`; Synapse 1.163 answers
 * `ORG.MATRIX.MSC4140_DELAY_TOO_LARGE` with the maximum in its message). A refused request
 * schedules nothing; one accepted is cancelled at once.
 */
async function maxDelay(ctx: DoctorContext): Promise<string> {
  const reply = await call(ctx, "GET", "/_matrix/client/v3/capabilities");
  const caps = typeof reply !== "string" && isObject(reply.json) && isObject(reply.json.capabilities) ? reply.json.capabilities : {};
  const entry = caps["org.matrix.msc4140.delayed_events"] ?? caps["m.delayed_events"];
  const ms = isObject(entry) && typeof entry.max_delay_ms === "number" ? entry.max_delay_ms : undefined;
  if (ms !== undefined) return `max delay ${asDuration(ms)} (/capabilities)`;
  const marker = txn();
  const probe = await call(ctx, "PUT", `${roomPath(ctx)}/send/${EVENT_TYPE}/${marker}?org.matrix.msc4140.delay=${PROBE_DELAY_MS}`, { marker, doctor: "asks for a 10-year delay to learn the maximum" });
  if (typeof probe === "string") return `max delay not in /capabilities, and asking for a 10-year delay got no answer (${probe})`;
  const body = isObject(probe.json) ? probe.json : {};
  if (probe.status === 200 && typeof body.delay_id === "string") {
    ctx.pendingDelays.push(body.delay_id);
    const cancelled = await cancelDelayed(ctx, body.delay_id);
    if (typeof cancelled !== "string" && cancelled.status === 200) ctx.pendingDelays.splice(ctx.pendingDelays.indexOf(body.delay_id), 1);
    return "no maximum: not in /capabilities, and a 10-year delay was accepted (and cancelled at once)";
  }
  const errcode = typeof body.errcode === "string" ? body.errcode : "";
  const tooLong = errcode === "M_MAX_DELAY_EXCEEDED" || errcode === SYNAPSE_TOO_LONG || body["org.matrix.msc4140.errcode"] === "M_MAX_DELAY_EXCEEDED";
  const field = body.max_delay ?? body["org.matrix.msc4140.max_delay"];
  // Synapse 1.163 names the maximum only in its message: "… exceeds the allowed maximum (86400000ms)".
  const inText = typeof body.error === "string" ? /allowed maximum (?:of )?\(?([0-9]+) ?ms/.exec(body.error)?.[1] : undefined;
  const max = typeof field === "number" ? field : inText !== undefined ? Number(inText) : undefined;
  if (tooLong && max !== undefined) {
    const shown = typeof body["org.matrix.msc4140.errcode"] === "string" ? body["org.matrix.msc4140.errcode"] : errcode;
    return `max delay ${asDuration(max)} (not in /capabilities; from the refusal of a 10-year delay: ${probe.status} ${shown}${typeof field === "number" ? "" : ", the maximum read from its message"})`;
  }
  return `max delay not in /capabilities, and a 10-year delay got ${describeReply(probe)}`;
}

/** The event carrying `marker` in the room's latest messages, if it is there. */
async function findEvent(ctx: DoctorContext, marker: string): Promise<Record<string, unknown> | undefined> {
  const reply = await call(ctx, "GET", `${roomPath(ctx)}/messages?dir=b&limit=20`);
  if (typeof reply === "string" || !isObject(reply.json) || !Array.isArray(reply.json.chunk)) return undefined;
  return (reply.json.chunk as unknown[]).find((e): e is Record<string, unknown> => isObject(e) && isObject(e.content) && e.content.marker === marker);
}

async function restart(ctx: DoctorContext, delayId: string): Promise<{ reply: HttpReply | string; how: string }> {
  const id = encodeURIComponent(delayId);
  let reply = await call(ctx, "POST", `${DELAYED}/${id}/restart`, {});
  if (typeof reply !== "string" && reply.status === 404 && errcodeOf(reply) === "M_UNRECOGNIZED") {
    // Older servers have only the body form, as matrix-js-sdk's fallback knows.
    reply = await call(ctx, "POST", `${DELAYED}/${id}`, { action: "restart" });
    return { reply, how: `POST ${DELAYED}/{id} {"action":"restart"}` };
  }
  return { reply, how: `POST ${DELAYED}/{id}/restart` };
}

export async function checkDelayedEvents(ctx: DoctorContext): Promise<void> {
  const { rec } = ctx;
  const id = "delayed-events";
  const title = "delayed events";
  const delay = ctx.opts.delayMs ?? 2000;
  const path = `${roomPath(ctx)}/send/${EVENT_TYPE}/{txn}?org.matrix.msc4140.delay=${delay}`;
  const asked = `PUT ${path}, restart it, wait for it`;
  if (!ctx.features["org.matrix.msc4140"]) return void rec.skip(id, title, asked, "not advertised (see msc4140 above)");
  if (!ctx.session || !ctx.roomId) return void rec.skip(id, title, asked, "needs credentials and the throwaway room");
  const marker = txn();
  const scheduled = await call(ctx, "PUT", path.replace("{txn}", marker), { marker, doctor: "a throwaway delayed event" });
  const body = typeof scheduled === "string" ? undefined : scheduled.json;
  if (typeof scheduled === "string" || scheduled.status !== 200 || !isObject(body) || typeof body.delay_id !== "string") {
    if (isObject(body) && typeof body.event_id === "string") {
      return void rec.fail(id, title, asked, "200 with an event_id: the event was sent at once",
        "The server ignores the delay parameter, so a client's scheduled \"leave\" is sent when it joins: nobody stays in a call.",
        "Upgrade the homeserver, or turn delayed events off so that it answers 403 and clients know.");
    }
    return void rec.fail(id, title, asked, typeof scheduled === "string" ? scheduled : describeReply(scheduled),
      "/versions advertises delayed events, but scheduling one fails: crashed clients will haunt calls.",
      typeof scheduled !== "string" && scheduled.status === 429 ? "The account has too many delayed events scheduled, or is rate-limited; raise msc4140_max_delayed_events_per_user / rc_message." : "See the homeserver's log for this request.");
  }
  const started = Date.now();
  ctx.pendingDelays.push(body.delay_id);
  const restarted = await restart(ctx, body.delay_id);
  if (typeof restarted.reply === "string" || restarted.reply.status !== 200) {
    return void rec.fail(id, title, `${asked} (${restarted.how})`, `restart: ${typeof restarted.reply === "string" ? restarted.reply : describeReply(restarted.reply)}`,
      "Clients restart their delayed leave every few seconds; when that fails the leave fires while they are still in the call.",
      "Keep rc_delayed_event_mgmt at 1/s or more with a burst of 20 (Element Call's advice), and let POST …/delayed_events/… through the proxy.");
  }
  rec.progress(`waiting for the delayed event to fire (${Math.round(delay / 1000)} s)`);
  const deadline = Date.now() + delay + 15_000;
  let event: Record<string, unknown> | undefined;
  while (!(event = await findEvent(ctx, marker)) && Date.now() < deadline && !ctx.interrupted) await new Promise((r) => setTimeout(r, 250));
  if (event) ctx.pendingDelays.splice(ctx.pendingDelays.indexOf(body.delay_id), 1);
  const limit = await maxDelay(ctx);
  if (!event) {
    return void rec.fail(id, title, asked, `scheduled and restarted, but not in the room ${Math.round((delay + 15_000) / 1000)} s later`,
      "Delayed events are accepted but never fire: a crashed client's leave is never sent, so ghosts stay in calls.",
      "See the homeserver's log around the due time (a stopped background task, or a process that lost its database).");
  }
  rec.pass(id, title, asked, `scheduled (delay ${delay / 1000} s), restarted, arrived as ${String(event.event_id)} after ${((Date.now() - started) / 1000).toFixed(1)} s; ${limit}`);
}

export async function checkStickyAndStateAfter(ctx: DoctorContext): Promise<void> {
  const { rec } = ctx;
  const stickyOn = ctx.features["org.matrix.msc4354"];
  const stateAfterOn = ctx.features["org.matrix.msc4222"];
  const stickyAsked = `PUT ${roomPath(ctx)}/send/${EVENT_TYPE}.sticky/{txn}?org.matrix.msc4354.sticky_duration_ms=60000, then /sync`;
  const syncAsked = "GET /_matrix/client/v3/sync?org.matrix.msc4222.use_state_after=true (the throwaway room only)";
  const canRun = ctx.session && ctx.roomId;
  if (!stickyOn) rec.skip("sticky-events", "sticky events", stickyAsked, "not advertised (see msc4354 above)");
  else if (!canRun) rec.skip("sticky-events", "sticky events", stickyAsked, "needs credentials and the throwaway room");
  if (!stateAfterOn) rec.skip("state-after", "state_after", syncAsked, "not advertised (see msc4222 above)");
  else if (!canRun) rec.skip("state-after", "state_after", syncAsked, "needs credentials and the throwaway room");
  if (!canRun || (!stickyOn && !stateAfterOn)) return;

  let stickyId: string | undefined;
  if (stickyOn) {
    const marker = txn();
    const sent = await call(ctx, "PUT", `${roomPath(ctx)}/send/${EVENT_TYPE}.sticky/${marker}?org.matrix.msc4354.sticky_duration_ms=60000`, { marker, msc4354_sticky_key: marker });
    if (typeof sent === "string" || sent.status !== 200 || !isObject(sent.json) || typeof sent.json.event_id !== "string") {
      rec.fail("sticky-events", "sticky events", stickyAsked, typeof sent === "string" ? sent : describeReply(sent), "/versions advertises sticky events, but sending one fails: Element Call's matrix_2_0 mode cannot join.",
        "See the homeserver's log for this request.");
    } else {
      stickyId = sent.json.event_id;
      // A later event pushes the sticky one out of a one-event timeline, so /sync must carry it in its sticky section.
      await call(ctx, "PUT", `${roomPath(ctx)}/send/${EVENT_TYPE}/${txn()}`, { doctor: "after the sticky event" });
    }
  }
  const filter = JSON.stringify({ room: { rooms: [ctx.roomId], timeline: { limit: 1 } } });
  const reply = await call(ctx, "GET", `/_matrix/client/v3/sync?timeout=0&org.matrix.msc4222.use_state_after=true&filter=${encodeURIComponent(filter)}`);
  const join = typeof reply !== "string" && isObject(reply.json) && isObject(reply.json.rooms) && isObject(reply.json.rooms.join) ? reply.json.rooms.join : undefined;
  const room = join && isObject(join[ctx.roomId!]) ? (join[ctx.roomId!] as Record<string, unknown>) : undefined;
  const got = typeof reply === "string" ? reply : room ? "" : `${describeReply(reply)}, without the room`;
  const ids = (section: unknown) => (isObject(section) && Array.isArray(section.events) ? section.events.filter(isObject).map((e) => e.event_id) : []);

  if (stickyId) {
    if (!room) rec.fail("sticky-events", "sticky events", stickyAsked, got, "/sync did not answer properly.", "See the homeserver's log.");
    else if (ids(room.msc4354_sticky).includes(stickyId) || ids(room.timeline).includes(stickyId)) {
      rec.pass("sticky-events", "sticky events", stickyAsked, `sent ${stickyId}; /sync delivers it${ids(room.msc4354_sticky).includes(stickyId) ? " in msc4354_sticky" : " in the timeline"}`);
    } else {
      rec.fail("sticky-events", "sticky events", stickyAsked, `sent ${stickyId}, but /sync has it neither in msc4354_sticky.events nor in the timeline`,
        "Clients that were not watching when a call member joined do not learn of them (matrix_2_0 mode).", "Upgrade the homeserver.");
    }
  }
  if (stateAfterOn) {
    const key = "org.matrix.msc4222.state_after";
    if (!room) rec.fail("state-after", "state_after", syncAsked, got, "/sync did not answer properly.", "See the homeserver's log.");
    else if (isObject(room[key]) && Array.isArray((room[key] as Record<string, unknown>).events)) {
      rec.pass("state-after", "state_after", syncAsked, `${key} present (${((room[key] as Record<string, unknown>).events as unknown[]).length} events)`);
    } else {
      rec.fail("state-after", "state_after", syncAsked, `no ${key} in the room's /sync section`, "matrix-js-sdk asks for state_after because /versions offers it, and then misreads call membership.",
        "Upgrade the homeserver, or stop advertising org.matrix.msc4222.");
    }
  }
}
