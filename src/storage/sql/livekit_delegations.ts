/** Delegated LiveKit leaves (see ../livekit_delegations.ts). */
import type { LiveKitDelegationStore, StoredDelegation } from "../livekit_delegations.js";
import type { Executor } from "./executor.js";

interface Row {
  room: string;
  identity: string;
  user_id: string;
  delay_id: string;
  delay_ms: number | string;
  server_name: string;
  owner: string;
}

export class SqlLiveKitDelegationStore implements LiveKitDelegationStore {
  constructor(private readonly db: Executor) {}

  async put(d: StoredDelegation, now: number): Promise<void> {
    await this.db.run(
      `INSERT INTO livekit_delegations (room, identity, user_id, delay_id, delay_ms, server_name, owner, created_ts)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (room, identity) DO UPDATE SET user_id = excluded.user_id, delay_id = excluded.delay_id,
         delay_ms = excluded.delay_ms, server_name = excluded.server_name, owner = excluded.owner, created_ts = excluded.created_ts`,
      [d.room, d.identity, d.userId, d.delayId, d.delayTimeoutMs, d.serverName, d.owner, now],
    );
  }

  async remove(room: string, identity: string, delayId: string): Promise<void> {
    await this.db.run("DELETE FROM livekit_delegations WHERE room = ? AND identity = ? AND delay_id = ?", [room, identity, delayId]);
  }

  async all(): Promise<StoredDelegation[]> {
    const rows = await this.db.all<Row>("SELECT * FROM livekit_delegations ORDER BY created_ts");
    return rows.map((r) => ({
      room: r.room,
      identity: r.identity,
      userId: r.user_id,
      delayId: r.delay_id,
      // PostgreSQL's BIGINT arrives as a string.
      delayTimeoutMs: Number(r.delay_ms),
      serverName: r.server_name,
      owner: r.owner,
    }));
  }

  async claim(room: string, identity: string, from: string, to: string): Promise<boolean> {
    const changed = await this.db.run("UPDATE livekit_delegations SET owner = ? WHERE room = ? AND identity = ? AND owner = ?", [to, room, identity, from]);
    return changed > 0;
  }
}
