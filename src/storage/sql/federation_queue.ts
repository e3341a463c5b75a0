/** The federation outbox, destinations and received transactions over SQL; see storage/federation_queue.ts. */
import type { ToDeviceMessage } from "../e2ee.js";
import type { DestinationClaim, DestinationRecord, FederationQueueStore, InboundTxnState, OutboxEdu, OutboxPdu } from "../federation_queue.js";
import { insertToDevice } from "./e2ee.js";
import { inJsonList, sql, type Executor } from "./executor.js";

interface DestinationRow {
  destination: string;
  retry_interval_ms: number;
  retry_at: number | null;
  failing_since: number | null;
  claimed_by: string | null;
  lease_until: number | null;
}

const orNull = (v: number | string | null) => (v === null ? null : Number(v));

const toDestination = (r: DestinationRow): DestinationRecord => ({
  destination: r.destination,
  retryIntervalMs: Number(r.retry_interval_ms),
  retryAt: orNull(r.retry_at),
  failingSince: orNull(r.failing_since),
  claimedBy: r.claimed_by,
  leaseUntil: orNull(r.lease_until),
});

/** Nobody live holds the row: never claimed, released, the lease ran out, or the holder is gone. Takes `now` and the live list. */
const FREE = sql`(claimed_by IS NULL OR lease_until <= ? OR NOT ${inJsonList("claimed_by")})`;

/** One row per destination from a JSON list: `json_each` in SQLite, `json_array_elements_text` in PostgreSQL (both name it `value`). */
const EACH: { sqlite: string; postgres: string } = { sqlite: "json_each(?)", postgres: "json_array_elements_text(?::json)" };

export class SqlFederationQueueStore implements FederationQueueStore {
  constructor(private readonly db: Executor) {}

  async enqueuePdu(destinations: readonly string[], eventId: string, json: string, now: number): Promise<void> {
    if (destinations.length === 0) return;
    await this.db.run(
      sql`INSERT INTO federation_outbox (destination, event_id, edu_type, json, created_ts)
          SELECT value, CAST(? AS TEXT), NULL, CAST(? AS TEXT), CAST(? AS BIGINT) FROM ${EACH}`,
      [eventId, json, now, JSON.stringify(destinations)],
    );
  }

  async enqueueEdu(destination: string, eduType: string, content: string, now: number): Promise<void> {
    await this.db.run("INSERT INTO federation_outbox (destination, event_id, edu_type, json, created_ts) VALUES (?, NULL, ?, ?, ?)", [
      destination,
      eduType,
      content,
      now,
    ]);
  }

  claim(destination: string, claim: DestinationClaim): Promise<DestinationRecord | undefined> {
    return this.db.transaction(async (tx) => {
      await tx.run("INSERT INTO federation_destinations (destination, retry_interval_ms) VALUES (?, 0) ON CONFLICT DO NOTHING", [destination]);
      // One conditional statement: on PostgreSQL a row another process is claiming now is waited
      // for and judged again, so exactly one of them gets it.
      const row = await tx.get<DestinationRow>(
        sql`UPDATE federation_destinations SET claimed_by = ?, lease_until = ?
            WHERE destination = ? AND (claimed_by = ? OR ${FREE}) AND (retry_at IS NULL OR retry_at <= ?)
            RETURNING *`,
        [claim.worker, claim.leaseUntil, destination, claim.worker, claim.now, JSON.stringify(claim.live), claim.now],
      );
      return row && toDestination(row);
    });
  }

  async claimable(claim: DestinationClaim, limit: number, everywhere: boolean): Promise<string[]> {
    const params = [claim.now, JSON.stringify(claim.live), claim.now, limit];
    if (!everywhere) {
      const rows = await this.db.all<{ destination: string }>(
        sql`SELECT destination FROM federation_destinations d
            WHERE ${FREE} AND (retry_at IS NULL OR retry_at <= ?)
              AND EXISTS (SELECT 1 FROM federation_outbox o WHERE o.destination = d.destination)
            LIMIT ?`,
        params,
      );
      return rows.map((r) => r.destination);
    }
    const rows = await this.db.all<{ destination: string }>(
      sql`SELECT DISTINCT o.destination FROM federation_outbox o
          WHERE NOT EXISTS (SELECT 1 FROM federation_destinations d WHERE d.destination = o.destination
            AND NOT ((d.claimed_by IS NULL OR d.lease_until <= ? OR NOT ${inJsonList("d.claimed_by")}) AND (d.retry_at IS NULL OR d.retry_at <= ?)))
          LIMIT ?`,
      params,
    );
    return rows.map((r) => r.destination);
  }

  async renew(worker: string, destinations: readonly string[], leaseUntil: number): Promise<void> {
    if (destinations.length === 0) return;
    await this.db.run(sql`UPDATE federation_destinations SET lease_until = ? WHERE claimed_by = ? AND ${inJsonList("destination")}`, [
      leaseUntil,
      worker,
      JSON.stringify(destinations),
    ]);
  }

  async release(worker: string, destination?: string): Promise<void> {
    if (destination === undefined) {
      await this.db.run("UPDATE federation_destinations SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = ?", [worker]);
      return;
    }
    await this.db.run("UPDATE federation_destinations SET claimed_by = NULL, lease_until = NULL WHERE destination = ? AND claimed_by = ?", [
      destination,
      worker,
    ]);
  }

  async nextBatch(destination: string, pduLimit: number, eduLimit: number): Promise<{ pdus: OutboxPdu[]; edus: OutboxEdu[] }> {
    const pdus = await this.db.all<{ id: number; event_id: string; json: string }>(
      "SELECT id, event_id, json FROM federation_outbox WHERE destination = ? AND event_id IS NOT NULL ORDER BY id LIMIT ?",
      [destination, pduLimit],
    );
    const edus = await this.db.all<{ id: number; edu_type: string; json: string; created_ts: number }>(
      "SELECT id, edu_type, json, created_ts FROM federation_outbox WHERE destination = ? AND edu_type IS NOT NULL ORDER BY id LIMIT ?",
      [destination, eduLimit],
    );
    return {
      pdus: pdus.map((r) => ({ id: Number(r.id), eventId: r.event_id, json: r.json })),
      edus: edus.map((r) => ({ id: Number(r.id), eduType: r.edu_type, content: r.json, createdTs: Number(r.created_ts) })),
    };
  }

  async remove(ids: readonly number[]): Promise<void> {
    if (ids.length === 0) return;
    await this.db.run(
      {
        sqlite: "DELETE FROM federation_outbox WHERE id IN (SELECT value FROM json_each(?))",
        postgres: "DELETE FROM federation_outbox WHERE id IN (SELECT CAST(json_array_elements_text(?::json) AS BIGINT))",
      },
      [JSON.stringify(ids)],
    );
  }

  async hasQueued(destination: string): Promise<boolean> {
    return (await this.db.get("SELECT 1 AS one FROM federation_outbox WHERE destination = ? LIMIT 1", [destination])) !== undefined;
  }

  async backoff(destination: string, worker: string, retryAt: number, intervalMs: number, now: number): Promise<void> {
    await this.db.run(
      `UPDATE federation_destinations SET retry_at = ?, retry_interval_ms = ?, failing_since = COALESCE(failing_since, ?),
         claimed_by = CASE WHEN claimed_by = ? THEN NULL ELSE claimed_by END,
         lease_until = CASE WHEN claimed_by = ? THEN NULL ELSE lease_until END
       WHERE destination = ?`,
      [retryAt, intervalMs, now, worker, worker, destination],
    );
  }

  async resetBackoff(destination: string): Promise<boolean> {
    const changed = await this.db.run(
      "UPDATE federation_destinations SET retry_at = NULL, retry_interval_ms = 0, failing_since = NULL WHERE destination = ? AND failing_since IS NOT NULL",
      [destination],
    );
    return changed > 0;
  }

  async get(destination: string): Promise<DestinationRecord | undefined> {
    const row = await this.db.get<DestinationRow>("SELECT * FROM federation_destinations WHERE destination = ?", [destination]);
    return row && toDestination(row);
  }

  beginInbound(origin: string, txnId: string, worker: string, live: readonly string[], now: number, staleBefore: number): Promise<InboundTxnState> {
    return this.db.transaction(async (tx): Promise<InboundTxnState> => {
      const fresh = await tx.run(
        "INSERT INTO federation_inbound_txns (origin, txn_id, response, claimed_by, claimed_ts) VALUES (?, ?, NULL, ?, ?) ON CONFLICT DO NOTHING",
        [origin, txnId, worker, now],
      );
      if (fresh > 0) return { state: "mine" };
      const row = await tx.get<{ response: string | null }>("SELECT response FROM federation_inbound_txns WHERE origin = ? AND txn_id = ?", [
        origin,
        txnId,
      ]);
      if (row?.response != null) return { state: "done", response: row.response };
      // Its handler died, has been at it far too long, or was this process and failed to store
      // the answer (a process handles one transaction once at a time): handle it here.
      const taken = await tx.run(
        sql`UPDATE federation_inbound_txns SET claimed_by = ?, claimed_ts = ?
            WHERE origin = ? AND txn_id = ? AND response IS NULL AND (claimed_ts < ? OR claimed_by = ? OR NOT ${inJsonList("claimed_by")})`,
        [worker, now, origin, txnId, staleBefore, worker, JSON.stringify(live)],
      );
      return taken > 0 ? { state: "mine" } : { state: "busy" };
    });
  }

  async finishInbound(origin: string, txnId: string, response: string): Promise<void> {
    await this.db.run("UPDATE federation_inbound_txns SET response = ? WHERE origin = ? AND txn_id = ?", [response, origin, txnId]);
  }

  async abandonInbound(origin: string, txnId: string): Promise<void> {
    await this.db.run("DELETE FROM federation_inbound_txns WHERE origin = ? AND txn_id = ? AND response IS NULL", [origin, txnId]);
  }

  async pruneInbound(before: number): Promise<void> {
    await this.db.run("DELETE FROM federation_inbound_txns WHERE claimed_ts < ?", [before]);
    await this.db.run("DELETE FROM federation_inbound_to_device WHERE received_ts < ?", [before]);
  }

  acceptToDevice(sender: string, messageId: string, messages: readonly ToDeviceMessage[], now: number): Promise<string[] | undefined> {
    return this.db.transaction(async (tx) => {
      const fresh = await tx.run(
        "INSERT INTO federation_inbound_to_device (sender, message_id, received_ts) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        [sender, messageId, now],
      );
      if (fresh === 0) return undefined;
      const kept = await insertToDevice(tx, messages);
      return [...new Set(kept.map((m) => m.userId))];
    });
  }

  async deviceListStreamIds(userId: string, limit: number): Promise<number[]> {
    const rows = await this.db.all<{ stream_id: number }>("SELECT stream_id FROM device_list_changes WHERE user_id = ? ORDER BY stream_id DESC LIMIT ?", [
      userId,
      limit,
    ]);
    return rows.map((r) => Number(r.stream_id));
  }
}
