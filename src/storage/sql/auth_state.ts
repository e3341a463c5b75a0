/**
 * Short-lived authentication state that every process on the database must share: UIA
 * sessions and shared-secret registration nonces. A request may reach any process, so a
 * session started on one is continued on another, and a nonce issued by one is spent once.
 */
import type { RegistrationNonceStore, UiaSession, UiaSessionStore } from "../interfaces.js";
import { sql, type Executor, type Query } from "./executor.js";

interface UiaRow {
  session_id: string;
  purpose: string;
  created_ts: number;
  completed: string;
}

const toSession = (r: UiaRow): UiaSession => ({
  sessionId: r.session_id,
  purpose: r.purpose,
  createdTs: r.created_ts,
  completed: JSON.parse(r.completed) as string[],
});

/** Whether `completed` (a JSON array of stage names) holds the stage given as a parameter. */
const HAS_STAGE: Query = {
  sqlite: "EXISTS (SELECT 1 FROM json_each(completed) WHERE value = ?)",
  postgres: "completed::jsonb @> jsonb_build_array(?::text)",
};

/** `completed` with the stage given as a parameter appended. */
const WITH_STAGE: Query = {
  sqlite: "json_insert(completed, '$[#]', ?)",
  postgres: "(completed::jsonb || jsonb_build_array(?::text))::text",
};

export class SqlUiaSessionStore implements UiaSessionStore {
  constructor(private readonly db: Executor) {}

  async create(s: UiaSession, expiredBefore: number): Promise<void> {
    // Purged here rather than by a timer: sessions are only ever created by requests, and
    // reads ignore expired rows anyway.
    await this.db.run("DELETE FROM uia_sessions WHERE created_ts < ?", [expiredBefore]);
    await this.db.run("INSERT INTO uia_sessions (session_id, purpose, created_ts, completed) VALUES (?, ?, ?, ?)", [
      s.sessionId,
      s.purpose,
      s.createdTs,
      JSON.stringify(s.completed),
    ]);
  }

  async get(sessionId: string, createdSince: number): Promise<UiaSession | undefined> {
    const row = await this.db.get<UiaRow>("SELECT * FROM uia_sessions WHERE session_id = ? AND created_ts >= ?", [sessionId, createdSince]);
    return row && toSession(row);
  }

  async completeStage(sessionId: string, stage: string, createdSince: number): Promise<string[] | undefined> {
    // One statement that appends to the stored list: SQLite runs it under its write lock, and
    // PostgreSQL re-evaluates it on the newest row version once a concurrent update commits, so
    // two requests completing stages of one session both keep theirs.
    const row = await this.db.get<{ completed: string }>(
      sql`UPDATE uia_sessions SET completed = CASE WHEN ${HAS_STAGE} THEN completed ELSE ${WITH_STAGE} END
          WHERE session_id = ? AND created_ts >= ? RETURNING completed`,
      [stage, stage, sessionId, createdSince],
    );
    return row && (JSON.parse(row.completed) as string[]);
  }

  async delete(sessionId: string): Promise<void> {
    await this.db.run("DELETE FROM uia_sessions WHERE session_id = ?", [sessionId]);
  }
}

export class SqlRegistrationNonceStore implements RegistrationNonceStore {
  constructor(private readonly db: Executor) {}

  async create(nonce: string, issuedTs: number, expiredBefore: number): Promise<void> {
    await this.db.run("DELETE FROM registration_nonces WHERE issued_ts < ?", [expiredBefore]);
    await this.db.run("INSERT INTO registration_nonces (nonce, issued_ts) VALUES (?, ?)", [nonce, issuedTs]);
  }

  async consume(nonce: string, issuedSince: number): Promise<boolean> {
    // One statement both checks and spends the nonce: of two requests racing with it, the
    // database lets exactly one delete the row, and only that one sees it returned.
    const row = await this.db.get<{ nonce: string }>("DELETE FROM registration_nonces WHERE nonce = ? AND issued_ts >= ? RETURNING nonce", [
      nonce,
      issuedSince,
    ]);
    return row !== undefined;
  }
}
