/**
 * User-interactive authentication (spec: Client-Server API, "User-Interactive
 * Authentication API"). Sessions live in memory for a short while, which is
 * enough for one process; a session is never a credential by itself.
 */
import { randomBytes } from "node:crypto";
import { MatrixError } from "../errors.js";
import type { Clock } from "./clock.js";

const SESSION_LIFETIME_MS = 15 * 60_000;

export type AuthDict = Record<string, unknown> & { type?: unknown; session?: unknown };

/** A stage checker: resolves when the stage is passed, throws a MatrixError when not. */
export type StageChecker = (auth: AuthDict) => Promise<void>;

export interface UiaFlow {
  stages: string[];
}

interface Session {
  createdAt: number;
  completed: Set<string>;
  /** What the session was started for, so it cannot be reused for another operation. */
  purpose: string;
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
  readonly #sessions = new Map<string, Session>();

  constructor(private readonly clock: Clock) {}

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
    this.#expire();
    let sessionId = typeof auth?.session === "string" ? auth.session : undefined;
    let session = sessionId ? this.#sessions.get(sessionId) : undefined;
    if (sessionId && (!session || session.purpose !== purpose)) {
      // An unknown or foreign session starts over rather than failing outright.
      session = undefined;
      sessionId = undefined;
    }
    if (!session || !sessionId) {
      sessionId = randomBytes(18).toString("base64url");
      session = { createdAt: this.clock.now(), completed: new Set(), purpose };
      this.#sessions.set(sessionId, session);
    }
    const reply = (err?: MatrixError) =>
      new UiaRequired(
        {
          flows,
          params,
          session: sessionId,
          ...(session.completed.size ? { completed: [...session.completed] } : {}),
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
      session.completed.add(type as string);
    }
    if (flows.some((f) => f.stages.every((s) => session.completed.has(s)))) {
      this.#sessions.delete(sessionId);
      return;
    }
    throw reply();
  }

  #expire(): void {
    const cutoff = this.clock.now() - SESSION_LIFETIME_MS;
    for (const [id, s] of this.#sessions) if (s.createdAt < cutoff) this.#sessions.delete(id);
  }
}
