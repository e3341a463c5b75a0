/** Other servers' signing keys: one set of queries for both dialects. */
import type { ServerKeyStore, StoredServerKey } from "../federation.js";
import type { Executor } from "./executor.js";

interface Row {
  server_name: string;
  key_id: string;
  verify_key: string;
  valid_until_ts: number;
  expired_ts: number | null;
  fetched_ts: number;
  response_json: string;
}

const fromRow = (r: Row): StoredServerKey => ({
  serverName: r.server_name,
  keyId: r.key_id,
  verifyKey: r.verify_key,
  validUntilTs: Number(r.valid_until_ts),
  expiredTs: r.expired_ts === null ? null : Number(r.expired_ts),
  fetchedTs: Number(r.fetched_ts),
  responseJson: r.response_json,
});

export class SqlServerKeyStore implements ServerKeyStore {
  constructor(private readonly db: Executor) {}

  async upsert(keys: StoredServerKey[]): Promise<void> {
    if (keys.length === 0) return;
    await this.db.transaction(async (tx) => {
      for (const k of keys) {
        // An older or shorter-lived answer (a stale notary) never replaces a better one.
        await tx.run(
          `INSERT INTO federation_server_keys (server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts, response_json)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (server_name, key_id) DO UPDATE SET
             verify_key = excluded.verify_key, valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts,
             fetched_ts = excluded.fetched_ts, response_json = excluded.response_json
           WHERE excluded.valid_until_ts >= federation_server_keys.valid_until_ts`,
          [k.serverName, k.keyId, k.verifyKey, k.validUntilTs, k.expiredTs, k.fetchedTs, k.responseJson],
        );
      }
    });
  }

  async get(serverName: string, keyId: string): Promise<StoredServerKey | undefined> {
    const row = await this.db.get<Row>("SELECT * FROM federation_server_keys WHERE server_name = ? AND key_id = ?", [serverName, keyId]);
    return row && fromRow(row);
  }

  async ofServer(serverName: string): Promise<StoredServerKey[]> {
    const rows = await this.db.all<Row>("SELECT * FROM federation_server_keys WHERE server_name = ? ORDER BY key_id", [serverName]);
    return rows.map(fromRow);
  }
}
