import type Database from "better-sqlite3";
import type { RegistrationToken, RegistrationTokenStore } from "../interfaces.js";

interface Row {
  token: string;
  uses_allowed: number | null;
  pending: number;
  completed: number;
  expiry_time: number | null;
}

const toToken = (r: Row): RegistrationToken => ({
  token: r.token,
  usesAllowed: r.uses_allowed,
  pending: r.pending,
  completed: r.completed,
  expiryTime: r.expiry_time,
});

export class SqliteRegistrationTokenStore implements RegistrationTokenStore {
  readonly #consume: Database.Statement<[string, number]>;
  constructor(private readonly db: Database.Database) {
    this.#consume = db.prepare(
      `UPDATE registration_tokens SET completed = completed + 1
       WHERE token = ? AND (expiry_time IS NULL OR expiry_time > ?)
         AND (uses_allowed IS NULL OR completed + pending < uses_allowed)`,
    );
  }

  async create(t: RegistrationToken): Promise<boolean> {
    const res = this.db
      .prepare("INSERT OR IGNORE INTO registration_tokens (token, uses_allowed, pending, completed, expiry_time) VALUES (?, ?, 0, 0, ?)")
      .run(t.token, t.usesAllowed, t.expiryTime);
    return res.changes > 0;
  }

  async get(token: string): Promise<RegistrationToken | undefined> {
    const row = this.db.prepare<[string], Row>("SELECT * FROM registration_tokens WHERE token = ?").get(token);
    return row && toToken(row);
  }

  async list(): Promise<RegistrationToken[]> {
    return this.db.prepare<[], Row>("SELECT * FROM registration_tokens ORDER BY token").all().map(toToken);
  }

  async delete(token: string): Promise<boolean> {
    return this.db.prepare("DELETE FROM registration_tokens WHERE token = ?").run(token).changes > 0;
  }

  async consume(token: string, now: number): Promise<boolean> {
    return this.#consume.run(token, now).changes > 0;
  }
}
