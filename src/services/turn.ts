/**
 * TURN credentials for VoIP. With a shared secret they follow the TURN REST
 * API convention that coturn's `use-auth-secret` checks: the username is
 * "<expiry unix seconds>:<user id>" and the password is its HMAC-SHA1.
 */
import { createHmac } from "node:crypto";
import type { Config } from "../config/config.js";
import { Errors } from "../errors.js";
import type { Requester } from "./auth.js";
import type { Clock } from "./clock.js";

export interface TurnCredentials {
  username: string;
  password: string;
  uris: string[];
  ttl: number;
}

export class TurnService {
  constructor(
    private readonly config: Config,
    private readonly clock: Clock,
  ) {}

  /** Credentials for the caller, or an empty object when TURN is not configured. */
  credentials(requester: Requester): TurnCredentials | Record<string, never> {
    const turn = this.config.turn;
    if (requester.isGuest && !turn.allowGuests) throw Errors.guestForbidden();
    if (turn.uris.length === 0) return {};
    const ttl = Math.floor(turn.lifetimeMs / 1000);
    if (turn.sharedSecret) {
      const expiry = Math.floor(this.clock.now() / 1000) + ttl;
      const username = `${expiry}:${requester.userId}`;
      const password = createHmac("sha1", turn.sharedSecret.reveal()).update(username).digest("base64");
      return { username, password, uris: turn.uris, ttl };
    }
    if (turn.username && turn.password) {
      return { username: turn.username, password: turn.password.reveal(), uris: turn.uris, ttl };
    }
    return {};
  }
}
