/**
 * Applying a redaction: the one place that strips a redacted event's content in storage, for
 * redactions made here, received from other servers (`/send`, `send_join`), or backfilled.
 *
 * Since room version 3 the auth rules accept every redaction; the spec ("Handling redactions")
 * has the server apply one only when its sender has the room's `redact` power level, or is of
 * the same server as the redacted event's sender. A redaction that may not be applied stays
 * stored (and served, as Synapse does), but the event keeps its content.
 */
import { pduOf, PowerLevels, redact, redactsOf, serverNameOf, type Pdu, type RoomVersion } from "../../events/index.js";
import type { Stores } from "../../storage/interfaces.js";
import { toClientEvent } from "./client_format.js";

/**
 * What an event from another server, just stored, changes about redactions, in its transaction:
 * when it is one, it is applied (or waits for its target); redactions that came before it are
 * applied to it now, by the same rule. Events made here need only `applyRedaction`: a
 * redaction can be waiting only for an event that came from elsewhere.
 */
export async function applyRedactions(tx: Stores, event: { eventId: string; pdu: Pdu }, version: RoomVersion, now: number): Promise<void> {
  await applyRedaction(tx, event, version, now);
  await applyWaitingRedactions(tx, event.eventId, version, now);
}

/** Applies the redactions that arrived before the event `eventId`, now that it is stored. */
export async function applyWaitingRedactions(tx: Stores, eventId: string, version: RoomVersion, now: number): Promise<void> {
  const pending = await tx.roomDag.pendingRedactions(eventId);
  if (pending.length === 0) return;
  const redactions = await tx.roomDag.getPdus(pending.map((p) => p.redactionEventId));
  for (const { redactionEventId } of pending) {
    const stored = redactions.get(redactionEventId);
    // Only accepted redactions wait here; a redaction of another room is ignored by applyRedaction.
    if (stored?.inEvents && stored.rejected === null) await applyRedaction(tx, { eventId: redactionEventId, pdu: pduOf(stored) }, version, now);
  }
  await tx.roomDag.deletePendingRedactions(eventId);
}

/** Strips the event `redaction` redacts, when the spec allows it; in the redaction's own transaction, so both commit together. */
export async function applyRedaction(tx: Stores, redaction: { eventId: string; pdu: Pdu }, version: RoomVersion, now: number): Promise<void> {
  const { pdu } = redaction;
  if (pdu.type !== "m.room.redaction") return;
  // Where the room version keeps it: a v10 redaction's `content.redacts` redacts nothing.
  const targetId = redactsOf(pdu, version);
  if (!targetId) return;
  const target = await tx.rooms.getEvent(targetId);
  // Not here yet (backfill comes newest first; a fetched event may come after its redaction):
  // the redaction applies once its target is known, so it waits for it (`applyWaitingRedactions`).
  if (!target) return tx.roomDag.addPendingRedaction(pdu.room_id, targetId, redaction.eventId);
  if (target.roomId !== pdu.room_id || target.redactedBy) return;
  if (!(await mayRedact(tx, pdu, target.sender, version))) return;
  const redacted: Pdu = redact(pduOf(target), version);
  const stored = await tx.rooms.getEvent(redaction.eventId);
  if (stored) {
    const because = toClientEvent(stored, now);
    // `age` is computed when served; a stored copy would go stale.
    delete because.unsigned?.age;
    redacted.unsigned = { redacted_because: because };
  }
  await tx.rooms.redactEvent(targetId, JSON.stringify(redacted), redaction.eventId);
}

/**
 * The spec's condition for applying a redaction: same server as the redacted event's sender,
 * or the `redact` level in the state the redaction was authorised against (its auth events,
 * which the auth rules checked; room version 12 names its create event by the room ID).
 */
async function mayRedact(tx: Stores, pdu: Pdu, targetSender: string, version: RoomVersion): Promise<boolean> {
  if (serverNameOf(pdu.sender) === serverNameOf(targetSender)) return true;
  const auth = [...(await tx.roomDag.getPdus(pdu.auth_events)).values()].map(pduOf);
  if (!auth.some((a) => a.type === "m.room.create" && a.state_key === "")) {
    const create = await tx.rooms.currentStateEvent(pdu.room_id, "m.room.create", "");
    if (create) auth.push(pduOf(create));
  }
  const lookup = (type: string, stateKey: string) => auth.find((a) => a.type === type && a.state_key === stateKey);
  const levels = PowerLevels.fromState(lookup, version);
  return levels.userLevel(pdu.sender) >= levels.redact;
}
