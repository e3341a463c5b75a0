/**
 * Federation transactions (spec: Server-Server API, "Transactions"): the durable outbox of PDUs
 * and EDUs per destination, each destination's backoff and delivery lease, the record of
 * transactions received (so a replay gets the first answer), and the to-device messages
 * received from other servers (deduplicated by `message_id`).
 *
 * One process at a time delivers for a destination: it holds the destination's row by a lease
 * (`claimedBy` until `leaseUntil`), as pushers are held (storage/pushers.ts).
 */
import type { ToDeviceMessage } from "./e2ee.js";

export interface OutboxPdu {
  id: number;
  eventId: string;
  /** The PDU's JSON text, as sent. */
  json: string;
}

export interface OutboxEdu {
  id: number;
  eduType: string;
  /** The EDU content's JSON text. */
  content: string;
  createdTs: number;
}

export interface DestinationRecord {
  destination: string;
  /** The last wait after a failure; 0 when the destination is not failing. */
  retryIntervalMs: number;
  /** Nothing is sent before this time (ms), unless the destination talks to us first. */
  retryAt: number | null;
  failingSince: number | null;
  claimedBy: string | null;
  leaseUntil: number | null;
}

/** A claim on a destination: who delivers for it, and until when that holds if never renewed. */
export interface DestinationClaim {
  worker: string;
  leaseUntil: number;
  /** The workers alive now: claims of any other worker are void. */
  live: readonly string[];
  now: number;
}

/** Where handling a received transaction stands. */
export type InboundTxnState =
  /** Nobody handled it yet (or whoever started died): this process handles it now. */
  | { state: "mine" }
  /** Handled: the answer given then. */
  | { state: "done"; response: string }
  /** Another process is handling it right now. */
  | { state: "busy" };

export interface FederationQueueStore {
  /** Queues a PDU for each destination, in one statement. */
  enqueuePdu(destinations: readonly string[], eventId: string, json: string, now: number): Promise<void>;
  /** Queues an EDU for a destination, in one statement. */
  enqueueEdu(destination: string, eduType: string, content: string, now: number): Promise<void>;
  /**
   * Claims the destination if nobody live holds an unexpired lease on it (or `claim.worker`
   * already does) and it is not waiting out a backoff; its row as claimed, or undefined.
   */
  claim(destination: string, claim: DestinationClaim): Promise<DestinationRecord | undefined>;
  /**
   * Up to `limit` destinations with queued rows that could be claimed now (a sweep's candidates):
   * among those claimed before, or, with `everywhere`, also those never claimed (which reads
   * the whole outbox: for a start, or after a process died between queueing and claiming).
   */
  claimable(claim: DestinationClaim, limit: number, everywhere: boolean): Promise<string[]>;
  /** Extends the leases `worker` holds on these destinations. */
  renew(worker: string, destinations: readonly string[], leaseUntil: number): Promise<void>;
  /** Gives up `worker`'s claims: on one destination, or all it holds. */
  release(worker: string, destination?: string): Promise<void>;
  /** The oldest queued rows of a destination: up to `pduLimit` PDUs and `eduLimit` EDUs. */
  nextBatch(destination: string, pduLimit: number, eduLimit: number): Promise<{ pdus: OutboxPdu[]; edus: OutboxEdu[] }>;
  /** Deletes delivered (or refused) rows. */
  remove(ids: readonly number[]): Promise<void>;
  /** Whether anything is queued for the destination. */
  hasQueued(destination: string): Promise<boolean>;
  /** Records a failure: nothing is tried before `retryAt`. Also lets go of `worker`'s lease. */
  backoff(destination: string, worker: string, retryAt: number, intervalMs: number, now: number): Promise<void>;
  /** Ends a failure (a transaction went through, or the destination contacted us); true if it was failing. */
  resetBackoff(destination: string): Promise<boolean>;
  get(destination: string): Promise<DestinationRecord | undefined>;

  /**
   * Starts handling a received transaction, unless it was handled already or another live
   * process is handling it (a claim older than `staleBefore`, by a process gone, or by `worker`
   * itself, which handles a transaction once at a time, is taken over).
   */
  beginInbound(origin: string, txnId: string, worker: string, live: readonly string[], now: number, staleBefore: number): Promise<InboundTxnState>;
  /** Stores the answer to a transaction this process handled. */
  finishInbound(origin: string, txnId: string, response: string): Promise<void>;
  /** Forgets a transaction whose handling failed, so that the sender's retry handles it afresh. */
  abandonInbound(origin: string, txnId: string): Promise<void>;
  /** Forgets received transactions and to-device message IDs older than `before`. */
  pruneInbound(before: number): Promise<void>;
  /**
   * Queues to-device messages from another server once per (sender, message ID): undefined
   * when that message was seen before, else the users whose existing devices got one.
   */
  acceptToDevice(sender: string, messageId: string, messages: readonly ToDeviceMessage[], now: number): Promise<string[] | undefined>;
  /** The stream IDs of the user's latest device-list changes, newest first. */
  deviceListStreamIds(userId: string, limit: number): Promise<number[]>;
}
