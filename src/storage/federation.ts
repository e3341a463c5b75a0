/** Other servers' signing keys, as fetched (directly or through a notary) and cached by validity. */

export interface StoredServerKey {
  serverName: string;
  keyId: string;
  /** Unpadded base64 of the ed25519 public key. */
  verifyKey: string;
  /** Until when the key may be used for new signatures (its response's `valid_until_ts`). */
  validUntilTs: number;
  /** Set for an old key: it signed things only before this. */
  expiredTs: number | null;
  fetchedTs: number;
  /** The server's own signed key response the key came in, served again when we act as a notary. */
  responseJson: string;
}

export interface ServerKeyStore {
  /** Stores or refreshes keys; a key is replaced only by an answer valid at least as long. */
  upsert(keys: StoredServerKey[]): Promise<void>;
  get(serverName: string, keyId: string): Promise<StoredServerKey | undefined>;
  /** Every stored key of a server. */
  ofServer(serverName: string): Promise<StoredServerKey[]>;
}
