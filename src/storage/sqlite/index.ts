import type { Storage } from "../interfaces.js";
import { SqliteAccountStore } from "./accounts.js";
import { openDatabase } from "./database.js";
import { SqliteDelayedEventStore } from "./delayed_events.js";
import { SqliteDeviceStore } from "./devices.js";
import { SqliteDeviceKeyStore, SqliteToDeviceStore } from "./e2ee.js";
import { SqliteOpenIdTokenStore } from "./openid_tokens.js";
import { SqliteRegistrationTokenStore } from "./registration_tokens.js";
import { SqliteRoomStore } from "./rooms.js";
import { SqliteAccountDataStore, SqliteFilterStore, SqliteReceiptStore } from "./user_data.js";

export function openSqliteStorage(file: string, synchronous: "normal" | "full" = "normal"): Storage {
  const db = openDatabase(file, synchronous);
  return {
    accounts: new SqliteAccountStore(db),
    devices: new SqliteDeviceStore(db),
    registrationTokens: new SqliteRegistrationTokenStore(db),
    openIdTokens: new SqliteOpenIdTokenStore(db),
    rooms: new SqliteRoomStore(db),
    accountData: new SqliteAccountDataStore(db),
    filters: new SqliteFilterStore(db),
    receipts: new SqliteReceiptStore(db),
    delayedEvents: new SqliteDelayedEventStore(db),
    deviceKeys: new SqliteDeviceKeyStore(db),
    toDevice: new SqliteToDeviceStore(db),
    async close() {
      if (db.open) db.close();
    },
  };
}
