/**
 * Incoming transactions (`PUT /_matrix/federation/v1/send/{txnId}`). A transaction is handled
 * once per (origin, txnId): the answer is stored, and a replay (from any process on the
 * database) gets it again without anything being processed twice. A replay that arrives while
 * the first is still being handled waits for it.
 *
 * PDUs go to an `InboundPduHandler` (room federation provides it); until one is set, each PDU
 * is answered with an error and the transaction still succeeds. EDUs go to `InboundEdus`.
 */
import { Errors, MatrixError } from "../../errors.js";
import { eventIdFor } from "../../events/hashes.js";
import { getRoomVersion } from "../../events/room_versions.js";
import type { Pdu } from "../../events/types.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Clock } from "../clock.js";
import type { InboundEdus } from "./inbound_edus.js";
import { MAX_EDUS_PER_TXN, MAX_PDUS_PER_TXN } from "./sender/transmit.js";

export type PduResults = Record<string, { error?: string }>;

/** Room federation's part of a transaction: persists the PDUs, answers per event ID. */
export interface InboundPduHandler {
  handle(origin: string, pdus: unknown[]): Promise<PduResults>;
}

export interface TxnResponse {
  pdus: PduResults;
}

export interface ReceiverLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** A handler that has not answered in this long is taken to have died; its transaction is handled again. */
const STALE_MS = 120_000;
const BUSY_POLL_MS = 250;
/** Answers are kept this long: a sender retries within minutes, and a day later has given up or moved on. */
const KEEP_MS = 86_400_000;
const PRUNE_EVERY_MS = 3_600_000;
const NOT_ENABLED = "room federation not enabled";

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

interface Txn {
  pdus: unknown[];
  edus: unknown[];
}

/** The body's shape; 400 `M_BAD_JSON` for anything else (Synapse answers 400 too, with `{}`, for too many PDUs or EDUs). */
function validate(origin: string, body: unknown): Txn {
  if (!isObj(body)) throw Errors.badJson("The transaction must be a JSON object");
  if (typeof body.origin !== "string") throw Errors.badJson("`origin` must be a string");
  if (body.origin !== origin) throw Errors.forbidden("`origin` is not the server that signed the request");
  if (typeof body.origin_server_ts !== "number" || !Number.isSafeInteger(body.origin_server_ts)) throw Errors.badJson("`origin_server_ts` must be an integer");
  const pdus = body.pdus ?? [];
  const edus = body.edus ?? [];
  if (!Array.isArray(pdus)) throw Errors.badJson("`pdus` must be an array");
  if (!Array.isArray(edus)) throw Errors.badJson("`edus` must be an array");
  if (pdus.length > MAX_PDUS_PER_TXN) throw Errors.badJson(`A transaction may carry at most ${MAX_PDUS_PER_TXN} PDUs`);
  if (edus.length > MAX_EDUS_PER_TXN) throw Errors.badJson(`A transaction may carry at most ${MAX_EDUS_PER_TXN} EDUs`);
  return { pdus, edus };
}

export class TransactionReceiver {
  #pduHandler: InboundPduHandler | undefined;
  readonly #inFlight = new Map<string, Promise<TxnResponse>>();
  /** The last transaction taken from each origin, settled either way: the next waits for it. */
  readonly #lastOfOrigin = new Map<string, Promise<void>>();
  #lastPrune = 0;

  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly edus: InboundEdus,
    private readonly logger: ReceiverLogger,
  ) {}

  /** Room federation hands its PDU handler in here. */
  setPduHandler(handler: InboundPduHandler): void {
    this.#pduHandler = handler;
  }

  async receive(origin: string, txnId: string, body: unknown): Promise<TxnResponse> {
    const txn = validate(origin, body);
    const key = JSON.stringify([origin, txnId]);
    const running = this.#inFlight.get(key);
    if (running) return running;
    // One transaction per origin at a time (as Synapse does): a server cannot make this process
    // check signatures and fetch missing events for many transactions of its own at once.
    const before = this.#lastOfOrigin.get(origin) ?? Promise.resolve();
    const handling = before.then(() => this.#once(origin, txnId, txn)).finally(() => {
      this.#inFlight.delete(key);
      if (this.#lastOfOrigin.get(origin) === settled) this.#lastOfOrigin.delete(origin);
    });
    const settled = handling.then(
      () => undefined,
      () => undefined,
    );
    this.#lastOfOrigin.set(origin, settled);
    this.#inFlight.set(key, handling);
    return handling;
  }

  async #once(origin: string, txnId: string, txn: Txn): Promise<TxnResponse> {
    const queue = this.storage.federationQueue;
    const me = this.storage.cluster.workerId;
    for (;;) {
      const now = this.clock.now();
      const state = await queue.beginInbound(origin, txnId, me, this.storage.cluster.workers(), now, now - STALE_MS);
      if (state.state === "done") return JSON.parse(state.response) as TxnResponse;
      if (state.state === "mine") break;
      // Another process is handling it: its answer is this one's.
      await new Promise((resolve) => setTimeout(resolve, BUSY_POLL_MS));
    }
    let response: TxnResponse;
    try {
      response = await this.#process(origin, txn);
    } catch (err) {
      // Nothing is remembered: the sender's retry handles the transaction afresh.
      await queue.abandonInbound(origin, txnId).catch(() => undefined);
      throw err;
    }
    await queue.finishInbound(origin, txnId, JSON.stringify(response));
    this.#maybePrune();
    return response;
  }

  async #process(origin: string, txn: Txn): Promise<TxnResponse> {
    const pdus = this.#pduHandler ? await this.#pduHandler.handle(origin, txn.pdus) : await this.#notEnabled(txn.pdus);
    for (const edu of txn.edus) {
      try {
        await this.edus.handle(origin, edu);
      } catch (err) {
        if (err instanceof MatrixError) continue;
        // One EDU's trouble (storage, say) does not cost the others: it is logged and dropped.
        this.logger.warn({ err, origin, eduType: isObj(edu) ? edu.edu_type : undefined }, "federation: handling an EDU failed");
      }
    }
    return { pdus };
  }

  /** Without room federation every PDU is refused, under the event ID its room's version gives it. */
  async #notEnabled(pdus: unknown[]): Promise<PduResults> {
    const out: PduResults = {};
    for (const pdu of pdus) {
      if (!isObj(pdu)) continue;
      if (typeof pdu.event_id === "string") {
        out[pdu.event_id] = { error: NOT_ENABLED };
        continue;
      }
      try {
        const room = typeof pdu.room_id === "string" ? await this.storage.rooms.getRoom(pdu.room_id) : undefined;
        const version = getRoomVersion(room?.roomVersion ?? "10");
        if (version) out[eventIdFor(pdu as unknown as Pdu, version)] = { error: NOT_ENABLED };
      } catch {
        // Not a PDU the hash can be taken of: no ID to answer under.
      }
    }
    return out;
  }

  #maybePrune(): void {
    const now = this.clock.now();
    if (now - this.#lastPrune < PRUNE_EVERY_MS) return;
    this.#lastPrune = now;
    this.storage.federationQueue.pruneInbound(now - KEEP_MS).catch((err: unknown) => this.logger.warn({ err }, "federation: pruning received transactions failed"));
  }
}
