/**
 * User-interactive authentication (spec: Client-Server API, "User-Interactive
 * Authentication API"). Sessions live in the database for a short while, so a client
 * whose next request reaches another process on the same database carries on; a
 * session is never a credential by itself.
 */
import { randomBytes } from "node:crypto";
import { MatrixError } from "../errors.js";
import type { UiaSession, UiaSessionStore } from "../storage/interfaces.js";
import type { Clock } from "./clock.js";

const SESSION_LIFETIME_MS = 15 * 60_000;

export type AuthDict = Record<string, unknown> & { type?: unknown; session?: unknown };

/** A stage checker: resolves when the stage is passed, throws a MatrixError when not. */
export type StageChecker = (auth: AuthDict) => Promise<void>;

export interface UiaFlow {
  stages: string[];
}

/** The 401 that tells a client which stages remain. */
export class UiaRequired extends MatrixError {
  constructor(
    readonly uiaBody: Record<string, unknown>,
    error?: MatrixError,
  ) {
    super(401, error?.errcode ?? "", error?.message ?? "User-interactive authentication required");
  }

  override body(): Record<string, unknown> {
    if (!this.errcode) return this.uiaBody;
    return { ...this.uiaBody, errcode: this.errcode, error: this.message };
  }
}

export class UiaService {
  constructor(
    private readonly sessions: UiaSessionStore,
    private readonly clock: Clock,
  ) {}

  /**
   * Runs one step of UIA. Returns when some flow is complete; otherwise throws
   * UiaRequired with the flows, params, session and completed stages.
   */
  async check(
    purpose: string,
    auth: AuthDict | undefined,
    flows: UiaFlow[],
    checkers: Record<string, StageChecker>,
    params: Record<string, unknown> = {},
  ): Promise<void> {
    const now = this.clock.now();
    const since = now - SESSION_LIFETIME_MS;
    const given = typeof auth?.session === "string" ? auth.session : undefined;
    let session: UiaSession | undefined = given === undefined ? undefined : await this.sessions.get(given, since);
    // The purpose is stored so that a session cannot be reused for another operation; an
    // unknown, expired or foreign session starts over rather than failing outright.
    if (!session || session.purpose !== purpose) {
      session = { sessionId: randomBytes(18).toString("base64url"), purpose, createdTs: now, completed: [] };
      await this.sessions.create(session, since);
    }
    const current = session;
    const reply = (err?: MatrixError) =>
      new UiaRequired(
        {
          flows,
          params,
          session: current.sessionId,
          ...(current.completed.length ? { completed: [...current.completed] } : {}),
        },
        err,
      );

    if (auth && auth.type !== undefined) {
      const type = auth.type;
      const checker = typeof type === "string" ? checkers[type] : undefined;
      if (!checker || !flows.some((f) => f.stages.includes(type as string))) {
        throw reply(new MatrixError(400, "M_UNRECOGNIZED", `Unrecognised login type: ${String(type)}`));
      }
      try {
        await checker(auth);
      } catch (err) {
        // A rate limit is not a failed stage: it stays a 429 with its retry time, as in Synapse.
        if (err instanceof MatrixError && err.status !== 429) throw reply(err);
        throw err;
      }
      const stage = type as string;
      // The store adds the stage atomically, so stages other requests completed meanwhile are
      // kept. A session that went away during the check (it expired, or a concurrent request
      // finished the flow) still counts what this request knows, as it did in memory.
      current.completed =
        (await this.sessions.completeStage(current.sessionId, stage, since)) ?? [...new Set([...current.completed, stage])];
    }
    if (flows.some((f) => f.stages.every((s) => current.completed.includes(s)))) {
      await this.sessions.delete(current.sessionId);
      return;
    }
    throw reply();
  }
}
