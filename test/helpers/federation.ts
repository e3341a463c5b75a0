/**
 * Switchboards that federate with each other over TLS: each has a made-up server name
 * (`a.test`, `b.test`, …), an HTTPS front with a certificate from a test CA, and a resolver that
 * maps every name's port 8448 to its front. The CA reaches the servers through the config
 * (`federation_custom_ca_list`), and loopback is allowed through `ip_range_whitelist`, exactly as
 * an operator would set up a private federation.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { KeyObject } from "node:crypto";
import { authorizationHeader } from "../../src/services/federation/x_matrix.js";
import { makeTestCa, testDialer, tlsFront, type TlsFront } from "./livekit.js";
import assert from "node:assert/strict";
import { request, startServer, type TestServer } from "./server.js";
import { User, type Ev } from "./rooms.js";
import type { SrvRecord } from "../../src/services/livekit/outbound.js";

export interface FederatedServer {
  name: string;
  server: TestServer;
  front: TlsFront;
}

export class TestFederation {
  readonly pki: { ca: string; key: string; cert: string };
  readonly caFile: string;
  readonly #dir: string;
  readonly fronts = new Map<string, TlsFront>();
  readonly servers: TestServer[] = [];
  readonly srv: Record<string, SrvRecord[]> = {};
  /** More `host[:port]` → address mappings for the resolver (over the fronts'), set before the servers that need them start. */
  readonly extraAddresses: Record<string, { address: string; port?: number }> = {};

  constructor(readonly names: string[]) {
    this.pki = makeTestCa(names);
    this.#dir = mkdtempSync(path.join(tmpdir(), "switchboard-fed-"));
    this.caFile = path.join(this.#dir, "ca.pem");
    writeFileSync(this.caFile, this.pki.ca);
  }

  /** One HTTPS front per name, before any server starts (so every server's resolver knows every name). */
  async frontsUp(): Promise<void> {
    for (const name of this.names) this.fronts.set(name, await tlsFront(this.pki));
  }

  /** Every name's port 8448 goes to its front; nothing else resolves (no well-known, no SRV). */
  dialer() {
    const map: Record<string, { address: string; port?: number }> = {};
    for (const [name, front] of this.fronts) map[`${name}:8448`] = { address: "127.0.0.1", port: front.port };
    return testDialer({ ...map, ...this.extraAddresses }, this.srv);
  }

  /** A Switchboard named `name` behind its front; `overrides` go into its config. */
  async start(name: string, overrides: Record<string, unknown> = {}): Promise<FederatedServer> {
    const front = this.fronts.get(name);
    if (!front) throw new Error(`no front for ${name}`);
    const server = await startServer(
      {
        server_name: name,
        public_baseurl: `https://${name}/`,
        federation_custom_ca_list: [this.caFile],
        ip_range_whitelist: ["127.0.0.1"],
        trusted_key_servers: [],
        ...overrides,
      },
      { homeserver: { outbound: { dialer: this.dialer() } } },
    );
    this.servers.push(server);
    front.target = server.baseUrl;
    return { name, server, front };
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.servers.map((s) => s.stop()));
    await Promise.allSettled([...this.fronts.values()].map((f) => f.close()));
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

/** The signer of a running server: its name and signing key. */
export function signerOf(fs: FederatedServer): { serverName: string; keyId: string; privateKey: KeyObject } {
  const key = fs.server.homeserver.signingKey;
  return { serverName: fs.name, keyId: key.keyId, privateKey: key.privateKey };
}

/** A federation request sent straight to `to`'s plain-HTTP listener, signed as `signer` says. */
export async function signedRequest(
  to: FederatedServer,
  signer: { serverName: string; keyId: string; privateKey: KeyObject },
  method: string,
  uri: string,
  opts: { body?: Record<string, unknown>; destination?: string; authorization?: string } = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const headers: Record<string, string> = {};
  headers.authorization = opts.authorization ?? authorizationHeader(signer, method, uri, opts.destination ?? to.name, opts.body);
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(to.server.baseUrl + uri, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

/**
 * The usual start of a two-server test: the fronts up, the federation's first two names started
 * (`a` and `b`), then `users.a` registered on the first and `users.b` on the second, in order.
 */
export async function startTwoServers<const A extends readonly string[], const B extends readonly string[]>(
  fed: TestFederation,
  users: { a: A; b: B },
): Promise<{ a: FederatedServer; b: FederatedServer; users: Record<A[number] | B[number], User> }> {
  await fed.frontsUp();
  const a = await fed.start(fed.names[0]!);
  const b = await fed.start(fed.names[1]!);
  const registered: Record<string, User> = {};
  for (const name of users.a) registered[name] = await User.register(a.server.baseUrl, name);
  for (const name of users.b) registered[name] = await User.register(b.server.baseUrl, name);
  return { a, b, users: registered };
}

/** What the federation tests read of a `/sync` answer. */
export interface TimelineSync {
  next_batch: string;
  rooms?: { join?: Record<string, { timeline?: { events: Ev[]; limited?: boolean } }> };
}

/** `/sync` with a timeline of up to `limit` events per room, so a test sees everything that came. */
export async function timelineSync(user: User, opts: { since?: string; timeout?: number; limit: number }): Promise<TimelineSync> {
  const filter = JSON.stringify({ room: { timeline: { limit: opts.limit } } });
  const qs = new URLSearchParams({ timeout: String(opts.timeout ?? 0), filter, ...(opts.since ? { since: opts.since } : {}) });
  const res = await request(user.baseUrl, "GET", `/_matrix/client/v3/sync?${qs.toString()}`, { token: user.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body as unknown as TimelineSync;
}

/**
 * The timeline events of `roomId` that `/sync` brings from `since` until `done` holds for what
 * came, and the token after them. With `noGaps`, every answer must carry its room's whole window.
 */
export async function syncedEvents(
  user: User,
  roomId: string,
  since: string,
  done: (events: Ev[]) => boolean,
  opts: { limit: number; noGaps?: boolean },
): Promise<{ events: Ev[]; next: string }> {
  const events: Ev[] = [];
  let token = since;
  while (!done(events)) {
    const r = await timelineSync(user, { since: token, timeout: 2_000, limit: opts.limit });
    const room = r.rooms?.join?.[roomId];
    if (opts.noGaps) assert.notEqual(room?.timeline?.limited, true, "no sync here may skip events");
    events.push(...(room?.timeline?.events ?? []));
    token = r.next_batch;
  }
  return { events, next: token };
}

/** The room's current state as `user`'s server gives it: `type|state_key` → event ID. */
export async function stateIds(user: User, roomId: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await user.fullState(roomId)) out[`${e.type}|${e.state_key as string}`] = e.event_id as string;
  return out;
}
