import type { Storage } from "../interfaces.js";
import { SqliteAccountStore } from "./accounts.js";
import { openDatabase } from "./database.js";
import { SqliteDeviceStore } from "./devices.js";
import { SqliteRegistrationTokenStore } from "./registration_tokens.js";

export function openSqliteStorage(file: string): Storage {
  const db = openDatabase(file);
  return {
    accounts: new SqliteAccountStore(db),
    devices: new SqliteDeviceStore(db),
    registrationTokens: new SqliteRegistrationTokenStore(db),
    async close() {
      if (db.open) db.close();
    },
  };
}
