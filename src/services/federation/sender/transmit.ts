/**
 * One outgoing transaction (`PUT /_matrix/federation/v1/send/{txnId}`): what goes in it, and
 * what the destination's answer means for the rows it carried.
 */
import { randomBytes } from "node:crypto";
import type { OutboxEdu, OutboxPdu } from "../../../storage/federation_queue.js";
import { FederationError, type FederationClient } from "../client.js";

/** The spec's limits on one transaction. */
export const MAX_PDUS_PER_TXN = 50;
export const MAX_EDUS_PER_TXN = 100;

/**
 * - `sent`: the destination took the transaction (it may have refused single PDUs: its business).
 * - `refused`: it will never take these rows (a 4xx about the request itself, or the
 *   destination is not one we may send to): they are dropped, the destination is not failing.
 * - `failed`: unreachable, 5xx, or an answer that may change (401/403/408/429): back off, keep the rows.
 */
export type TransmitOutcome = { kind: "sent" } | { kind: "refused"; why: string } | { kind: "failed"; why: string };

/** 4xx answers that say "not now" rather than "never": the transaction is tried again later. */
const RETRYABLE_4XX = new Set([401, 403, 408, 429]);

/** A transaction ID: unique among every transaction this server sends, across processes and restarts. */
export function newTxnId(now: number): string {
  return `${now.toString(36)}${randomBytes(6).toString("hex")}`;
}

export async function transmit(
  client: FederationClient,
  origin: string,
  destination: string,
  batch: { pdus: OutboxPdu[]; edus: OutboxEdu[] },
  now: number,
): Promise<TransmitOutcome & { txnId: string; pduErrors?: Record<string, unknown> }> {
  const txnId = newTxnId(now);
  const body = {
    origin,
    origin_server_ts: now,
    pdus: batch.pdus.map((p) => JSON.parse(p.json) as unknown),
    edus: batch.edus.map((e) => ({ edu_type: e.eduType, content: JSON.parse(e.content) as unknown })),
  };
  let answer;
  try {
    // Within the transport's deadline (60 s, answer included): a destination that accepts the
    // connection and then trickles bytes holds its own delivery job no longer (other
    // destinations have jobs of their own), and is then backed off as any failing destination.
    answer = await client.request(destination, { method: "PUT", path: `/_matrix/federation/v1/send/${encodeURIComponent(txnId)}`, body, maxBytes: 1024 * 1024 });
  } catch (err) {
    if (err instanceof FederationError && err.kind === "forbidden_destination") return { kind: "refused", why: err.message, txnId };
    return { kind: "failed", why: err instanceof Error ? err.message : String(err), txnId };
  }
  if (answer.status === 200) {
    const pdus = answer.json.pdus;
    const errors: Record<string, unknown> = {};
    if (pdus && typeof pdus === "object") {
      for (const [eventId, result] of Object.entries(pdus as Record<string, unknown>)) {
        const error = (result as { error?: unknown } | null)?.error;
        if (error !== undefined) errors[eventId] = error;
      }
    }
    return { kind: "sent", txnId, pduErrors: Object.keys(errors).length > 0 ? errors : undefined };
  }
  const why = `${answer.status} ${typeof answer.json.errcode === "string" ? answer.json.errcode : ""}`.trim();
  if (answer.status >= 400 && answer.status < 500 && !RETRYABLE_4XX.has(answer.status)) return { kind: "refused", why, txnId };
  return { kind: "failed", why, txnId };
}
