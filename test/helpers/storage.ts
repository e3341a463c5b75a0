/**
 * The storage backends a contract suite runs against: SQLite always, PostgreSQL when
 * SWITCHBOARD_TEST_POSTGRES is set. Each test gets a database of its own, so a failure in one
 * cannot leave stream positions or rows behind for the next.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { TestContext } from "node:test";
import { Secret } from "../../src/config/types.js";
import type { Storage } from "../../src/storage/interfaces.js";
import { openStorage } from "../../src/storage/open.js";
import type { NewEvent } from "../../src/storage/rooms.js";
import { createTestDatabase, dropTestDatabase, postgresUrl, TEST_POSTGRES } from "./database.js";

export interface Backend {
  name: "sqlite" | "postgres";
  /** Opens the database that belongs to `dir` (creating and migrating it when new); may be called again. */
  open(dir: string): Promise<Storage>;
  /** Removes the database of `dir` (after every storage on it is closed). */
  drop(dir: string): Promise<void>;
}

const sqlite: Backend = {
  name: "sqlite",
  open: (dir) => openStorage({ kind: "sqlite", path: path.join(dir, "homeserver.db"), synchronous: "normal", cacheMib: 4 }),
  drop: async () => undefined,
};

const postgres: Backend = {
  name: "postgres",
  open: async (dir) => {
    const name = await createTestDatabase(dir);
    return openStorage({ kind: "postgres", dsn: new Secret(postgresUrl(name)), poolMin: 1, poolMax: 10 });
  },
  drop: (dir) => dropTestDatabase(dir),
};

export const BACKENDS: readonly Backend[] = TEST_POSTGRES ? [sqlite, postgres] : [sqlite];

/**
 * A fresh folder and database for one test; `open` opens (another) storage on it. Everything
 * opened is closed, and the database dropped, when the test ends.
 */
export function freshDatabase(t: TestContext, backend: Backend): { dir: string; open: () => Promise<Storage> } {
  const dir = mkdtempSync(path.join(tmpdir(), `sb-storage-${backend.name}-`));
  const opened: Storage[] = [];
  t.after(async () => {
    for (const s of opened) await s.close().catch(() => undefined);
    await backend.drop(dir);
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir,
    open: async () => {
      const storage = await backend.open(dir);
      opened.push(storage);
      return storage;
    },
  };
}

/** A storage on a fresh database. */
export function freshStorage(t: TestContext, backend: Backend): Promise<Storage> {
  return freshDatabase(t, backend).open();
}

/** Creates a user with one device (`DEV`) and an access token for it. */
export async function seedUser(storage: Storage, userId: string, deviceId = "DEV"): Promise<void> {
  const session = { deviceId, displayName: null, tokenHash: `hash-${userId}-${deviceId}`, ip: null };
  const created = await storage.accounts.createUser(
    { userId, passwordHash: null, isGuest: false, isAdmin: false, displayname: null },
    session,
    1,
  );
  if (!created) throw new Error(`user ${userId} already exists`);
}

export async function seedRoom(storage: Storage, roomId: string, creator: string): Promise<void> {
  await storage.rooms.createRoom({ roomId, roomVersion: "10", creator, createdTs: 1, isPublic: false });
}

/** A message event; its ID names it, so a test can tell every event apart. */
export function message(roomId: string, sender: string, eventId: string): NewEvent {
  return {
    eventId,
    roomId,
    type: "m.room.message",
    stateKey: null,
    sender,
    originServerTs: 1,
    depth: 1,
    json: JSON.stringify({ event_id: eventId, body: eventId }),
    membership: null,
  };
}

/** Appends an event the way the room service does: under the room's lock, in a transaction. */
export function appendLocked(storage: Storage, event: NewEvent): Promise<number> {
  return storage.transaction(async (tx) => {
    if (!(await tx.rooms.lockRoom(event.roomId))) throw new Error(`no room ${event.roomId}`);
    return tx.rooms.appendEvent(event);
  });
}

/** `count` runs of `work`, all started at once. */
export function concurrently<T>(count: number, work: (i: number) => Promise<T>): Promise<T[]> {
  return Promise.all(Array.from({ length: count }, (_, i) => work(i)));
}
