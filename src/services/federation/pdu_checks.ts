/**
 * Steps 1 to 3 of the Server-Server spec's "Checks performed on receipt of a PDU", for every
 * PDU another server hands us (`/send`, `send_join` answers, `/state`, backfill,
 * `get_missing_events`):
 * 1. the event has the format of its room version (`checkPduFormat`), else it is dropped;
 * 2. it carries a valid signature of each server that must sign it (the sender's, and for a
 *    restricted join the authorising server's), by a key valid at its `origin_server_ts`,
 *    else it is dropped;
 * 3. its content hash matches, else it is redacted (by the version's algorithm) and kept.
 * Authorisation (step 4 on) is the caller's. Nothing here throws for bad input.
 */
import type { KeyObject } from "node:crypto";
import type { Logger } from "pino";
import { eventIdFor, verifyContentHash } from "../../events/hashes.js";
import { checkPduFormat, requiredSignatures } from "../../events/pdu_format.js";
import { redact } from "../../events/redaction.js";
import type { RoomVersion } from "../../events/room_versions.js";
import { serverNameOf } from "../../events/ids.js";
import { verifyJsonSignature } from "../../events/signing.js";
import type { Pdu } from "../../events/types.js";

export type PduCheckResult =
  | {
      ok: true;
      eventId: string;
      /** The event to process: `unsigned` trimmed to what other servers may set, redacted when `redacted`. */
      pdu: Pdu;
      /** The content hash did not match: `pdu` is the redacted event. */
      redacted: boolean;
      /**
       * Set when the event must be stored but treated as rejected: a field over 255 bytes but not
       * 255 characters, which servers accepted before room version 12 (dropping it would split the room).
       */
      rejectedReason?: string;
    }
  | {
      ok: false;
      eventId?: string;
      reason: string;
      /** Nothing was wrong with the event as far as we know: looking up keys failed (the database, say). Try again later. */
      retryable?: true;
    };

/** Keys per server looked at on one event: a server has one or two at a time; more is noise or an attack. */
const MAX_KEYS_PER_SERVER = 4;

/** What the checker needs of `KeyRing`: a server's key valid at a time, fetched if need be. */
export type VerifyKeySource = { verifyKey(serverName: string, keyId: string, validAt: number): Promise<KeyObject | undefined> };

export class PduChecker {
  constructor(
    private readonly keys: VerifyKeySource,
    private readonly logger?: Pick<Logger, "info">,
  ) {}

  /**
   * `opts.toBeSignedBy`: a server that signs the event after this check, left out of the
   * required signatures. That is this server, as the resident server of a restricted join it
   * authorises (`send_join`: the joining server cannot have its signature yet). Never the
   * sender's server, whose signature is always required.
   */
  async check(raw: unknown, version: RoomVersion, opts: { toBeSignedBy?: string } = {}): Promise<PduCheckResult> {
    const format = checkPduFormat(raw, version);
    if (!format.ok) return { ok: false, eventId: idOfInvalid(raw, version), reason: format.reason };
    let eventId: string | undefined;
    try {
      let pdu = format.pdu;
      eventId = eventIdFor(pdu, version);
      const servers = requiredSignatures(pdu, version);
      if (!Array.isArray(servers)) return { ok: false, eventId, reason: servers.reason };
      // Signatures cover the redacted event, so they hold for a redacted copy too.
      const signed = redact(pdu, version);
      for (const server of servers) {
        if (server === opts.toBeSignedBy && server !== serverNameOf(pdu.sender)) continue;
        const problem = await this.#signatureProblem(signed, server, pdu.origin_server_ts);
        if (problem) {
          this.logger?.info({ eventId, server, problem }, "dropped a PDU whose signature does not check");
          return { ok: false, eventId, reason: problem };
        }
      }
      const redacted = !verifyContentHash(pdu);
      if (redacted) {
        this.logger?.info({ eventId }, "a PDU's content hash does not match: keeping it redacted");
        pdu = redact(pdu, version);
      }
      const result: PduCheckResult = { ok: true, eventId, pdu, redacted };
      if (format.rejectedReason !== undefined) result.rejectedReason = format.rejectedReason;
      return result;
    } catch (err) {
      // The event passed the format check, so this is the key lookup failing, not the event.
      return { ok: false, eventId, reason: `the PDU could not be checked: ${(err as Error).message}`, retryable: true };
    }
  }

  /**
   * As the spec's "Checking for a signature": the server must have signed, every signature by
   * a key we can find must verify, and at least one must. A key ID we cannot find is skipped
   * (a server may sign with a key it has not published yet).
   */
  async #signatureProblem(signed: Pdu, server: string, originServerTs: number): Promise<string | undefined> {
    const bySigner = signed.signatures[server];
    const keyIds = Object.keys(bySigner ?? {})
      .filter((id) => id.startsWith("ed25519:"))
      .slice(0, MAX_KEYS_PER_SERVER);
    if (keyIds.length === 0) return `the event is not signed by ${server}`;
    let verified = 0;
    for (const keyId of keyIds) {
      const key = await this.keys.verifyKey(server, keyId, originServerTs);
      if (!key) continue;
      if (!verifyJsonSignature(signed, server, keyId, key)) return `the signature of ${server} by ${keyId} is not valid`;
      verified++;
    }
    return verified > 0 ? undefined : `no key of ${server} that was valid at origin_server_ts could be found`;
  }
}

/**
 * The event ID of a PDU that failed the format check, when it has one (an event too large, say):
 * a transaction's answer names each PDU by it. Malformed enough to have none, it goes unnamed.
 */
function idOfInvalid(raw: unknown, version: RoomVersion): string | undefined {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) return undefined;
  try {
    return eventIdFor(raw as Pdu, version);
  } catch {
    return undefined;
  }
}
