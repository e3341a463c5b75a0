import type Database from "better-sqlite3";
import type { AccountStore, NewSession, NewUser, Profile, UserRecord } from "../interfaces.js";
import { insertSession } from "./devices.js";

interface UserRow {
  user_id: string;
  password_hash: string | null;
  is_guest: number;
  is_admin: number;
  created_ts: number;
}

export class SqliteAccountStore implements AccountStore {
  readonly #createUser: (user: NewUser, session: NewSession | null, now: number) => boolean;
  readonly #getUser: Database.Statement<[string], UserRow>;
  readonly #setPassword: Database.Statement<[string, string]>;
  readonly #getProfile: Database.Statement<[string], Profile>;

  constructor(private readonly db: Database.Database) {
    const insertUser = db.prepare(
      "INSERT OR IGNORE INTO users (user_id, password_hash, is_guest, is_admin, created_ts) VALUES (?, ?, ?, ?, ?)",
    );
    const insertProfile = db.prepare("INSERT INTO profiles (user_id, displayname, avatar_url) VALUES (?, ?, NULL)");
    this.#createUser = db.transaction((user: NewUser, session: NewSession | null, now: number) => {
      const res = insertUser.run(user.userId, user.passwordHash, user.isGuest ? 1 : 0, user.isAdmin ? 1 : 0, now);
      if (res.changes === 0) return false;
      insertProfile.run(user.userId, user.displayname);
      if (session) insertSession(db, user.userId, session, now);
      return true;
    });
    this.#getUser = db.prepare("SELECT * FROM users WHERE user_id = ?");
    this.#setPassword = db.prepare("UPDATE users SET password_hash = ? WHERE user_id = ?");
    this.#getProfile = db.prepare("SELECT displayname, avatar_url FROM profiles WHERE user_id = ?");
  }

  async createUser(user: NewUser, session: NewSession | null, now: number): Promise<boolean> {
    return this.#createUser(user, session, now);
  }

  async getUser(userId: string): Promise<UserRecord | undefined> {
    const row = this.#getUser.get(userId);
    if (!row) return undefined;
    return {
      userId: row.user_id,
      passwordHash: row.password_hash,
      isGuest: row.is_guest === 1,
      isAdmin: row.is_admin === 1,
      createdTs: row.created_ts,
    };
  }

  async setPasswordHash(userId: string, hash: string): Promise<void> {
    this.#setPassword.run(hash, userId);
  }

  async getProfile(userId: string): Promise<Profile | undefined> {
    return this.#getProfile.get(userId);
  }

  async setProfileField(userId: string, field: keyof Profile, value: string | null): Promise<void> {
    // The column name comes from a closed union, never from input.
    const column = field === "displayname" ? "displayname" : "avatar_url";
    this.db.prepare(`UPDATE profiles SET ${column} = ? WHERE user_id = ?`).run(value, userId);
  }
}
