/** What the room parts of federation share: the PDU check they are given, and their dependencies. */
import type { Pdu, RoomVersion } from "../../../events/index.js";
import type { Storage } from "../../../storage/interfaces.js";
import type { Clock } from "../../clock.js";
import type { EventPersister } from "../../rooms/persister.js";
import type { RemoteEvent, RemoteEventPersister } from "../../rooms/remote_persister.js";
import type { SigningKey } from "../../signing_key.js";
import type { FederationClient } from "../client.js";
import type { FederationEventSource } from "./event_source.js";

/** The spec's checks on a received PDU (format, signatures, hashes); a bad hash redacts it. */
export type PduCheck = (
  raw: unknown,
  version: RoomVersion,
  /** A server that signs the event after the check (this one, for a restricted join it authorises): its signature is not required. */
  opts?: { toBeSignedBy?: string },
) => Promise<{ ok: true; eventId: string; pdu: Pdu } | { ok: false; eventId?: string; reason: string }>;

/** Queues a PDU for other servers. */
export type PduSink = (pdu: Pdu, eventId: string, destinations: readonly string[]) => Promise<void>;

export interface FederatedRoomDeps {
  serverName: string;
  storage: Storage;
  clock: Clock;
  client: FederationClient;
  persister: EventPersister;
  remote: RemoteEventPersister;
  source: FederationEventSource;
  checkPdu: PduCheck;
  sendPdu: PduSink;
  signingKey: () => SigningKey;
}

/** Checks many PDUs, keeping those that pass. */
export async function checkAll(check: PduCheck, raws: readonly unknown[], version: RoomVersion): Promise<RemoteEvent[]> {
  const out: RemoteEvent[] = [];
  for (const raw of raws) {
    const result = await check(raw, version);
    if (result.ok) out.push({ eventId: result.eventId, pdu: result.pdu });
  }
  return out;
}
