/** The shapes delayed events are served in: the accepted MSC4140 one and the draft forms deployed clients read. */
import type { DelayedEventRecord } from "../../storage/delayed_events.js";

/**
 * What the draft forms call the reason: a failed send's reason was "error" there. Rows written
 * since the accepted text keep the true reason and tell a failure by `error`.
 */
function draftReason(r: DelayedEventRecord) {
  return r.error ? "error" : r.reason;
}

/** An item of the unstable list (`delayed_events`/`scheduled`), and the base of the other draft forms. */
export function scheduledView(r: DelayedEventRecord) {
  return {
    delay_id: r.delayId,
    room_id: r.roomId,
    type: r.type,
    ...(r.stateKey !== null ? { state_key: r.stateKey } : {}),
    delay: r.delayMs,
    running_since: r.runningSince,
    content: r.content,
    ...(r.parentDelayId ? { parent_delay_id: r.parentDelayId } : {}),
  };
}

/** An item of the unstable list's `finalised`. */
export function finalisedView(r: DelayedEventRecord) {
  return {
    delayed_event: scheduledView(r),
    outcome: r.outcome,
    reason: draftReason(r),
    ...(r.error ? { error: r.error } : {}),
    ...(r.eventId ? { event_id: r.eventId } : {}),
    ...(r.finalisedTs !== null ? { origin_server_ts: r.finalisedTs } : {}),
  };
}

/**
 * `GET U4140/delayed_events/{id}`: the list item's fields, plus the form
 * matrix-js-sdk declares (`delay_ms`, `delayed_since_ts`, and `finalised`
 * once the event is done).
 */
export function lookupView(r: DelayedEventRecord) {
  return {
    ...scheduledView(r),
    delay_ms: r.delayMs,
    delayed_since_ts: r.runningSince,
    ...(r.status === "finalised"
      ? {
          finalised: {
            ...(r.error ? { error: r.error } : {}),
            ...(r.eventId ? { event_id: r.eventId } : {}),
            finalised_ts: r.finalisedTs ?? r.runningSince,
          },
          outcome: r.outcome,
          reason: draftReason(r),
        }
      : {}),
  };
}

/**
 * The accepted MSC4140 form, of `GET /v1/delayed_events/{id}` and of each list item:
 * `origin_server_ts` (when it was finalised) is there once it is; `event_id` if it was sent,
 * `error` if sending it failed.
 */
export function acceptedView(r: DelayedEventRecord) {
  const done = r.status === "finalised";
  return {
    delay_id: r.delayId,
    room_id: r.roomId,
    type: r.type,
    ...(r.stateKey !== null ? { state_key: r.stateKey } : {}),
    delay: r.delayMs,
    running_since: r.runningSince,
    content: r.content,
    ...(done && r.error ? { error: r.error } : {}),
    ...(done && r.eventId ? { event_id: r.eventId } : {}),
    ...(done && r.finalisedTs !== null ? { origin_server_ts: r.finalisedTs } : {}),
  };
}
