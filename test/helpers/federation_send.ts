/**
 * Helpers for the federation transaction tests: servers that can be stopped and started again
 * on their data, remote memberships written into storage (until federation joins are used),
 * and `/sync` polling.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { removeTestData } from "./database.js";
import type { FederatedServer, TestFederation } from "./federation.js";
import type { User } from "./rooms.js";
import { request, startServer } from "./server.js";

export interface SyncResult {
  next_batch: string;
  rooms?: { join?: Record<string, { ephemeral?: { events: { type: string; content: Record<string, unknown> }[] } }> };
  to_device?: { events: { sender: string; type: string; content: Record<string, unknown> }[] };
  device_lists?: { changed: string[] };
}

/** Servers of a `TestFederation` started on folders of their own, which outlive a stop. */
export class RestartableServers {
  readonly #dirs: string[] = [];
  readonly #running = new Set<FederatedServer>();

  constructor(private readonly fed: TestFederation) {}

  newDir(): string {
    const dir = mkdtempSync(path.join(tmpdir(), "switchboard-fedsend-"));
    this.#dirs.push(dir);
    return dir;
  }

  /** A server named `name` whose data lives in `dir`; requests from other servers go to a name's first process (`w1`). */
  async start(name: string, dir: string, workerId?: string): Promise<FederatedServer> {
    const front = this.fed.fronts.get(name)!;
    const server = await startServer(
      {
        server_name: name,
        public_baseurl: `https://${name}/`,
        federation_custom_ca_list: [this.fed.caFile],
        ip_range_whitelist: ["127.0.0.1"],
        trusted_key_servers: [],
      },
      { dir, homeserver: { outbound: { dialer: this.fed.dialer() }, workerId } },
    );
    if (workerId === undefined || workerId === "w1") front.target = server.baseUrl;
    const fs = { name, server, front };
    this.#running.add(fs);
    return fs;
  }

  async stop(fs: FederatedServer): Promise<void> {
    this.#running.delete(fs);
    await fs.server.stop();
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.#running].map((s) => s.server.stop()));
    await this.fed.close();
    for (const dir of this.#dirs) await removeTestData(dir);
  }
}

/** `userId` joined to `roomId` in `on`'s storage (the room created there if new). */
export async function writeJoin(on: FederatedServer, roomId: string, creator: string, userId: string): Promise<void> {
  const storage = on.server.homeserver.storage;
  if (!(await storage.rooms.getRoom(roomId))) {
    await storage.rooms.createRoom({ roomId, roomVersion: "11", creator, createdTs: Date.now(), isPublic: false });
  }
  if ((await storage.rooms.membership(roomId, userId))?.membership === "join") return;
  await storage.transaction((tx) =>
    tx.rooms.appendEvent({
      eventId: `$join-${userId}-${on.name}-${Math.random().toString(36).slice(2)}`,
      roomId,
      type: "m.room.member",
      stateKey: userId,
      sender: userId,
      originServerTs: Date.now(),
      depth: 10,
      json: JSON.stringify({ type: "m.room.member", state_key: userId, sender: userId, room_id: roomId, content: { membership: "join" } }),
      membership: "join",
    }),
  );
}

/** Both users joined to the room on both servers, as after a federated join. */
export async function shareRoom(x: FederatedServer, y: FederatedServer, roomId: string, creator: User, other: User): Promise<void> {
  await writeJoin(x, roomId, creator.userId, other.userId);
  await writeJoin(y, roomId, creator.userId, creator.userId);
  await writeJoin(y, roomId, creator.userId, other.userId);
}

export async function syncOnce(user: User, since?: string, timeout = 0): Promise<SyncResult> {
  const qs = new URLSearchParams({ timeout: String(timeout), ...(since ? { since } : {}) });
  const res = await request(user.baseUrl, "GET", `/_matrix/client/v3/sync?${qs.toString()}`, { token: user.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body as unknown as SyncResult;
}

/** Long-polls `/sync` until `found` says the awaited change is in a response; returns that response. */
export async function syncUntil(user: User, since: string | undefined, found: (r: SyncResult) => boolean): Promise<SyncResult> {
  let token = since;
  for (;;) {
    const r = await syncOnce(user, token, 5_000);
    if (found(r)) return r;
    token = r.next_batch;
  }
}

export const ephemeral = (r: SyncResult, roomId: string, type: string) => r.rooms?.join?.[roomId]?.ephemeral?.events.filter((e) => e.type === type) ?? [];
