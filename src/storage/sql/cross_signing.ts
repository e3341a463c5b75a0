/**
 * Cross-signing keys and the signatures uploaded for devices and master keys: one set of
 * queries for both dialects. Every change is a device-list change of the user whose keys or
 * signatures changed, recorded in the same transaction so other users' syncs see it.
 */
import type { CrossSignature, CrossSigningKey, CrossSigningKeyType, CrossSigningStore, StoredCrossSigningKey } from "../e2ee.js";
import { recordDeviceListChange } from "./e2ee.js";
import { inJsonList, sql, type Executor } from "./executor.js";

interface KeyRow {
  user_id: string;
  key_type: string;
  public_key: string;
  key_json: string;
}

interface SignatureRow {
  signer_user_id: string;
  signing_key_id: string;
  target_user_id: string;
  target_key_id: string;
  signature: string;
}

const Q = {
  // PostgreSQL: two replacements at once must not both pass the check; the row lock serialises them.
  master: sql`SELECT public_key FROM e2e_cross_signing_keys WHERE user_id = ? AND key_type = 'master'
    ${{ sqlite: "", postgres: "FOR UPDATE" }}`,
  oldKey: "SELECT public_key FROM e2e_cross_signing_keys WHERE user_id = ? AND key_type = ?",
  insertKey: "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES (?, ?, ?, ?)",
  upsertKey: `INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES (?, ?, ?, ?)
    ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json`,
  dropSignaturesBy: "DELETE FROM e2e_cross_signing_signatures WHERE signer_user_id = ? AND signing_key_id = ?",
  keys: sql`SELECT user_id, key_type, public_key, key_json FROM e2e_cross_signing_keys WHERE ${inJsonList("user_id")}
    ORDER BY user_id, key_type`,
  upsertSignature: `INSERT INTO e2e_cross_signing_signatures (signer_user_id, signing_key_id, target_user_id, target_key_id, signature)
    VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (target_user_id, target_key_id, signer_user_id, signing_key_id) DO UPDATE SET signature = excluded.signature`,
  signatures: sql`SELECT signer_user_id, signing_key_id, target_user_id, target_key_id, signature FROM e2e_cross_signing_signatures
    WHERE ${inJsonList("target_user_id")} AND (signer_user_id = target_user_id OR signer_user_id = ?)
    ORDER BY target_user_id, target_key_id, signer_user_id, signing_key_id`,
} as const;

export class SqlCrossSigningStore implements CrossSigningStore {
  constructor(private readonly db: Executor) {}

  setKeys(userId: string, keys: CrossSigningKey[], expectedMaster: string | null): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const master = await tx.get<{ public_key: string }>(Q.master, [userId]);
      if ((master?.public_key ?? null) !== expectedMaster) return false;
      const newMaster = keys.find((k) => k.keyType === "master");
      if (expectedMaster === null) {
        // No row to lock yet: the insert decides which of two concurrent first uploads wins.
        if (!newMaster) return false;
        const inserted = await tx.run(`${Q.insertKey} ON CONFLICT DO NOTHING`, [userId, "master", newMaster.publicKey, newMaster.json]);
        if (inserted === 0) return false;
      }
      for (const key of keys) {
        const old = await tx.get<{ public_key: string }>(Q.oldKey, [userId, key.keyType]);
        // Signatures made by a key that is replaced vouch for nothing any more.
        if (old && old.public_key !== key.publicKey) await tx.run(Q.dropSignaturesBy, [userId, `ed25519:${old.public_key}`]);
        await tx.run(Q.upsertKey, [userId, key.keyType, key.publicKey, key.json]);
      }
      if (keys.length > 0) await recordDeviceListChange(tx, userId);
      return true;
    });
  }

  async keys(userIds: string[]): Promise<StoredCrossSigningKey[]> {
    if (userIds.length === 0) return [];
    const rows = await this.db.all<KeyRow>(Q.keys, [JSON.stringify(userIds)]);
    return rows.map((r) => ({ userId: r.user_id, keyType: r.key_type as CrossSigningKeyType, publicKey: r.public_key, json: r.key_json }));
  }

  async addSignatures(signatures: CrossSignature[], changedUsers: string[]): Promise<void> {
    if (signatures.length === 0) return;
    await this.db.transaction(async (tx) => {
      for (const s of signatures) {
        await tx.run(Q.upsertSignature, [s.signerUserId, s.signingKeyId, s.targetUserId, s.targetKeyId, s.signature]);
      }
      for (const userId of new Set(changedUsers)) await recordDeviceListChange(tx, userId);
    });
  }

  async signaturesFor(targetUserIds: string[], viewer: string): Promise<CrossSignature[]> {
    if (targetUserIds.length === 0) return [];
    const rows = await this.db.all<SignatureRow>(Q.signatures, [JSON.stringify(targetUserIds), viewer]);
    return rows.map((r) => ({
      signerUserId: r.signer_user_id,
      signingKeyId: r.signing_key_id,
      targetUserId: r.target_user_id,
      targetKeyId: r.target_key_id,
      signature: r.signature,
    }));
  }
}
