/** The stores over a database, and transactions that bind them to one connection. */
import type { Cluster } from "../cluster.js";
import type { Storage, Stores } from "../interfaces.js";
import { SqlAccountStore, SqlDeviceStore, SqlOpenIdTokenStore, SqlRegistrationTokenStore } from "./accounts.js";
import { SqlRegistrationNonceStore, SqlUiaSessionStore } from "./auth_state.js";
import { SqlDelayedEventStore } from "./delayed_events.js";
import { SqlLiveKitDelegationStore } from "./livekit_delegations.js";
import { SqlCrossSigningStore } from "./cross_signing.js";
import { SqlDeviceKeyStore, SqlToDeviceStore } from "./e2ee.js";
import { SqlKeyBackupStore } from "./key_backup.js";
import type { Executor, SqlDatabase } from "./executor.js";
import { SqlServerKeyStore } from "./federation.js";
import { SqlFederationQueueStore } from "./federation_queue.js";
import { SqlMediaStore } from "./media.js";
import { SqlPushActionStore } from "./push.js";
import { SqlPusherStore } from "./pushers.js";
import { SqlPushRuleStore } from "./push_rules.js";
import { SqlRoomDagStore } from "./room_dag.js";
import { SqlRoomStore } from "./rooms.js";
import { SqlSlidingSyncStore } from "./sliding_sync.js";
import { SqlAccountDataStore, SqlFilterStore, SqlReceiptStore } from "./user_data.js";

function storesOver(db: Executor): Stores {
  return {
    accounts: new SqlAccountStore(db),
    typing: {
      nextPosition: (announce) =>
        db.transaction(async (tx) => {
          const position = await tx.nextPosition("typing");
          announce(position);
          return position;
        }),
    },
    devices: new SqlDeviceStore(db),
    registrationTokens: new SqlRegistrationTokenStore(db),
    openIdTokens: new SqlOpenIdTokenStore(db),
    uiaSessions: new SqlUiaSessionStore(db),
    registrationNonces: new SqlRegistrationNonceStore(db),
    rooms: new SqlRoomStore(db),
    roomDag: new SqlRoomDagStore(db),
    accountData: new SqlAccountDataStore(db),
    filters: new SqlFilterStore(db),
    receipts: new SqlReceiptStore(db),
    delayedEvents: new SqlDelayedEventStore(db),
    livekitDelegations: new SqlLiveKitDelegationStore(db),
    deviceKeys: new SqlDeviceKeyStore(db),
    toDevice: new SqlToDeviceStore(db),
    crossSigning: new SqlCrossSigningStore(db),
    keyBackup: new SqlKeyBackupStore(db),
    media: new SqlMediaStore(db),
    pushActions: new SqlPushActionStore(db),
    pushers: new SqlPusherStore(db),
    serverKeys: new SqlServerKeyStore(db),
    federationQueue: new SqlFederationQueueStore(db),
    slidingSync: new SqlSlidingSyncStore(db),
    pushRules: new SqlPushRuleStore(db),
  };
}

export function sqlStorage(db: SqlDatabase, cluster: Cluster & { close?(): Promise<void> }): Storage {
  return {
    ...storesOver(db),
    backend: db.dialect,
    streams: db.streams,
    cluster,
    transaction: (work) => db.transaction((tx) => work(storesOver(tx))),
    close: async () => {
      // Last word to the others (our final positions, goodbye) before the pool goes.
      await cluster.close?.();
      await db.close();
    },
  };
}
