import type Database from "better-sqlite3";
import type { OpenIdTokenStore } from "../interfaces.js";

export class SqliteOpenIdTokenStore implements OpenIdTokenStore {
  readonly #create: (hash: string, userId: string, expires: number, now: number) => void;
  readonly #find: Database.Statement<[string, number], { user_id: string }>;

  constructor(db: Database.Database) {
    const purge = db.prepare("DELETE FROM openid_tokens WHERE expires_ts <= ?");
    const insert = db.prepare("INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES (?, ?, ?)");
    this.#create = db.transaction((hash: string, userId: string, expires: number, now: number) => {
      purge.run(now);
      insert.run(hash, userId, expires);
    });
    this.#find = db.prepare("SELECT user_id FROM openid_tokens WHERE token_hash = ? AND expires_ts > ?");
  }

  async create(tokenHash: string, userId: string, expiresTs: number, now: number): Promise<void> {
    this.#create(tokenHash, userId, expiresTs, now);
  }

  async findUser(tokenHash: string, now: number): Promise<string | undefined> {
    return this.#find.get(tokenHash, now)?.user_id;
  }
}
