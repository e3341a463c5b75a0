/**
 * Federation benchmark (issue #15 §3), all figures from one run, each with its baseline:
 *
 * Inbound: PDUs per second server A (Switchboard on SQLite, `a.test`) accepts into one room from
 * another server, against the same number of messages sent locally on A (one user one after
 * another, and `BENCH_FED_CLIENTS` users at once, as bench/sends.ts does), into a room with no
 * other server in it. Two inbound paths:
 *   - `via_b`: a user of a second real Switchboard (`b.test`, joined through make_join/send_join)
 *     sends the messages on B; timed from the first send on B until A's /sync shows them all, so
 *     it includes B's own sends and its outbox batching;
 *   - `transactions`: the benchmark, signing as b.test with B's key, `PUT /send/{txnId}`s
 *     transactions of 50 message PDUs (chained by prev_events, sent by B's joined user) to A, one
 *     transaction at a time as a sender's queue does; A answers only once it has persisted them,
 *     so this isolates A's inbound path.
 * Outbound: messages/s sent on A into a room with users of `BENCH_FED_DESTINATIONS` other servers
 * against a room with none, and when every destination had every PDU (per PDU: arrival minus its
 * origin_server_ts). The destinations are stand-ins (bench/federation_peer.ts) whose users joined
 * for real through make_join/send_join; they count PDUs instead of processing them.
 * Servers A and B are child processes (bench/federation_server.ts); every server-to-server
 * request goes over TLS with a test CA, through a resolver mapping names to loopback ports.
 *
 * Environment:
 *   BENCH_FED_MESSAGES      messages (PDUs) per measured batch (default 500)
 *   BENCH_FED_CLIENTS       local users sending at once in the concurrent mode (default 10)
 *   BENCH_FED_DESTINATIONS  other servers in the fan-out room (default 10)
 *   BENCH_FED_ROUNDS        measured batches per figure (default 2)
 *   BENCH_FED_WARMUP        unmeasured messages per figure first (default 50)
 *   BENCH_FED_LIMIT         seconds a batch (sending and delivery) may take (default 120)
 */
import { mkdtempSync, rmSync } from "node:fs";
import os, { tmpdir } from "node:os";
import path from "node:path";
import { buildEvent, getRoomVersion } from "../src/events/index.js";
import { loadOrCreateSigningKey } from "../src/services/signing_key.js";
import { makeTestCa } from "../test/helpers/livekit.js";
import { startChild, type Child } from "./children.js";
import { CleanUps, envCount, printReport, runMain } from "./entry.js";
import { joinThroughFederation, signedRequest, startStandIn, type Signer, type StandIn } from "./federation_peer.js";
import { freePort } from "../test/helpers/ports.js";
import { closeClients, newAgent, registerClients, request, roomForAll, sendBatch, type Batch, type SendClient } from "./send_client.js";

const N = envCount("BENCH_FED_MESSAGES", 500);
const CLIENTS = envCount("BENCH_FED_CLIENTS", 10);
const DESTINATIONS = envCount("BENCH_FED_DESTINATIONS", 10);
const ROUNDS = envCount("BENCH_FED_ROUNDS", 2);
const WARMUP = envCount("BENCH_FED_WARMUP", 50);
const LIMIT_MS = envCount("BENCH_FED_LIMIT", 120) * 1000;
const TXN_PDUS = 50;
/** For investigation: a folder for server A's CPU profile (node --cpu-prof), and a comma list of the figures to measure. */
const PROFILE_DIR = process.env.BENCH_FED_PROFILE;
const ONLY = process.env.BENCH_FED_ONLY?.split(",");

const log = (msg: string) => console.error(`[bench:federation] ${msg}`);
const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const enc = encodeURIComponent;
const cleanups = new CleanUps(log);
const percentile = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : Number.NaN);

async function call<T>(base: string, method: string, p: string, token?: string, body?: unknown): Promise<T> {
  const res = await request(base, undefined, method, p, token, body);
  if (res.status !== 200) throw new Error(`${method} ${p}: ${res.status} ${res.body.slice(0, 300)}`);
  return JSON.parse(res.body) as T;
}

/** Long-polls `token`'s /sync from `since` until `want` m.room.message events whose body holds `tag` are in `roomId`; answers when (performance.now()), or undefined after `deadline`. */
async function seenAll(base: string, token: string, roomId: string, since: string, tag: string, want: number, deadline: number): Promise<number | undefined> {
  const agent = newAgent();
  const filter = JSON.stringify({ room: { rooms: [roomId], timeline: { limit: 1000 } }, presence: { not_types: ["*"] } });
  let seen = 0;
  try {
    while (performance.now() < deadline) {
      const res = await request(base, agent, "GET", `/_matrix/client/v3/sync?timeout=5000&since=${enc(since)}&filter=${enc(filter)}`, token);
      if (res.status !== 200) throw new Error(`/sync: ${res.status} ${res.body.slice(0, 200)}`);
      const body = JSON.parse(res.body) as { next_batch: string; rooms?: { join?: Record<string, { timeline?: { events: { type: string; content: { body?: string } }[] } }> } };
      since = body.next_batch;
      for (const e of body.rooms?.join?.[roomId]?.timeline?.events ?? []) if (e.type === "m.room.message" && e.content.body?.includes(tag)) seen++;
      if (seen >= want) return performance.now();
    }
    return undefined;
  } finally {
    agent.destroy();
  }
}

async function syncToken(base: string, token: string): Promise<string> {
  const filter = JSON.stringify({ room: { timeline: { limit: 1 } } });
  return (await call<{ next_batch: string }>(base, "GET", `/_matrix/client/v3/sync?timeout=0&filter=${enc(filter)}`, token)).next_batch;
}

interface Rate {
  per_s: number;
  rounds_per_s: number[];
  /** CPU of server A while measured, per message or PDU; 100 is one core. */
  a_cpu_us_per_message: number;
}
const samples = new Map<string, { count: number; ms: number; cpuUs: number }[]>();
function note(key: string, count: number, ms: number, cpuUs: number): void {
  samples.set(key, [...(samples.get(key) ?? []), { count, ms, cpuUs }]);
  log(`${key}: ${round((count / ms) * 1000, 0)}/s`);
}
function rate(key: string): Rate {
  const s = samples.get(key) ?? [];
  const count = s.reduce((n, x) => n + x.count, 0);
  const ms = s.reduce((n, x) => n + x.ms, 0);
  return {
    per_s: round((count / ms) * 1000, 1),
    rounds_per_s: s.map((x) => round((x.count / x.ms) * 1000, 0)),
    a_cpu_us_per_message: round(s.reduce((n, x) => n + x.cpuUs, 0) / count, 0),
  };
}
const ratio = (a: Rate, b: Rate) => round(a.per_s / b.per_s, 3);

async function startServer(name: string, ports: Record<string, number>, pki: object): Promise<{ child: Child; dir: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), `switchboard-bench-fed-${name}-`));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  const env = { BENCH_FED_NAME: name, BENCH_FED_DIR: dir, BENCH_FED_PKI: JSON.stringify(pki), BENCH_FED_PORTS: JSON.stringify(ports), BENCH_FED_FRONT: String(ports[name]) };
  const execArgv = PROFILE_DIR && name === "a.test" ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}`] : [];
  const child = await startChild("federation_server.js", execArgv, undefined, env);
  cleanups.push(() => child.stop());
  return { child, dir };
}

/** `count` message PDUs from `sender` (of `signer`'s server), chained from the room's newest event on A, each signed. */
async function buildChain(a: Child, alice: SendClient, signer: Signer, roomId: string, sender: string, tag: string, count: number): Promise<Record<string, unknown>[]> {
  const state = await call<{ event_id: string; type: string; state_key: string; content: { room_version?: string } }[]>(a.url, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/state`, alice.token);
  const create = state.find((e) => e.type === "m.room.create")!;
  const version = getRoomVersion(create.content.room_version ?? "1")!;
  const auth = state.filter((e) => (e.type === "m.room.power_levels" && e.state_key === "") || (e.type === "m.room.member" && e.state_key === sender));
  const authEvents = [...(version.id === "12" ? [] : [create.event_id]), ...auth.map((e) => e.event_id)];
  const newest = await call<{ chunk: { event_id: string }[] }>(a.url, "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=1`, alice.token);
  let prev = newest.chunk[0]!.event_id;
  const tip = await signedRequest(a.url, undefined, signer, "a.test", "GET", `/_matrix/federation/v1/event/${enc(prev)}`);
  let depth = Number((tip.json.pdus as { depth: number }[])[0]!.depth);
  const pdus: Record<string, unknown>[] = [];
  for (let i = 0; i < count; i++) {
    const content = { msgtype: "m.text", body: `pdu ${i} of ${tag}` };
    const built = buildEvent({ version, roomId, sender, type: "m.room.message", content, prevEvents: [prev], authEvents, depth: ++depth, originServerTs: Date.now() }, signer);
    pdus.push(built.pdu as unknown as Record<string, unknown>);
    prev = built.eventId;
  }
  return pdus;
}

async function main(): Promise<number> {
  const loadBefore = os.loadavg().map((n) => round(n));
  const problems: string[] = [];
  const warnings: string[] = [];
  const standInNames = Array.from({ length: DESTINATIONS }, (_, i) => `r${i + 1}.test`);
  const names = ["a.test", "b.test", ...standInNames];
  const pki = makeTestCa(names);
  const ports: Record<string, number> = {};
  for (const n of names) ports[n] = await freePort();
  let report: Record<string, unknown>;
  try {
    log(`starting a.test and b.test, and ${DESTINATIONS} stand-in destinations`);
    const a = await startServer("a.test", ports, pki);
    const b = await startServer("b.test", ports, pki);
    const standIns: StandIn[] = [];
    for (const n of standInNames) {
      const s = await startStandIn(n, ports[n]!, pki);
      standIns.push(s);
      cleanups.push(() => s.close());
    }
    const A = a.child;
    const locals = await registerClients(A.url, "alice", CLIENTS);
    cleanups.push(async () => closeClients(locals));
    const alice = locals[0]!;
    const [bob] = await registerClients(b.child.url, "bob", 1);
    cleanups.push(async () => closeClients([bob!]));
    const bobId = "@bob0:b.test";
    const bKey = loadOrCreateSigningKey(path.join(b.dir, "signing.key"));
    const bSigner: Signer = { serverName: "b.test", keyId: bKey.keyId, privateKey: bKey.privateKey };

    // Rooms on A: `local` has A's users only (the baseline); `inbound` has bob of b.test too; `fanout` the stand-ins' users.
    const local = await roomForAll(A.url, locals);
    const inbound = await roomForAll(A.url, locals.slice(0, 1));
    await call(b.child.url, "POST", `/_matrix/client/v3/join/${enc(inbound)}?server_name=a.test`, bob!.token, {});
    const fanout = await roomForAll(A.url, locals);
    for (const s of standIns) await joinThroughFederation(A.url, "a.test", s.signer, fanout, `@u:${s.name}`);
    const members = await call<{ joined: Record<string, unknown> }>(A.url, "GET", `/_matrix/client/v3/rooms/${enc(fanout)}/joined_members`, alice.token);
    const remoteServers = new Set(Object.keys(members.joined).map((u) => u.split(":")[1]).filter((s) => s !== "a.test"));
    log(`rooms ready: ${remoteServers.size} other servers in the fan-out room; bob@b.test in the inbound room`);
    if (remoteServers.size !== DESTINATIONS) problems.push(`fan-out room has ${remoteServers.size} other servers, not ${DESTINATIONS}`);

    const modes = { sequential: locals.slice(0, 1), concurrent: locals };
    const fanoutLatencies: number[] = [];
    const deliveredAfterSendsMs: number[] = [];
    const lost: string[] = [];

    const measureLocal = async (room: string, key: string, clients: SendClient[], tag: string, measured: boolean): Promise<Batch> => {
      const cpu0 = await A.cpuTime();
      const batch = await sendBatch(A.url, room, clients, measured ? N : WARMUP, tag, LIMIT_MS);
      if (Object.keys(batch.failures).length) problems.push(`${key} ${tag}: sends failed ${JSON.stringify(batch.failures)}`);
      if (measured && batch.messages < N) warnings.push(`${tag}: only ${batch.messages} of ${N} sent within ${LIMIT_MS / 1000} s; its rate counts those`);
      if (measured) note(key, batch.messages, batch.wallMs, (await A.cpuTime()) - cpu0);
      return batch;
    };

    const measureFanout = async (key: string, clients: SendClient[], tag: string, measured: boolean) => {
      const cpu0 = await A.cpuTime();
      const t0 = performance.now();
      const batch = await sendBatch(A.url, fanout, clients, measured ? N : WARMUP, tag, LIMIT_MS);
      if (Object.keys(batch.failures).length) problems.push(`${key} ${tag}: sends failed ${JSON.stringify(batch.failures)}`);
      const sentAt = performance.now();
      const want = batch.messages - Object.values(batch.failures).reduce((n, x) => n + x, 0);
      const got = (s: StandIn) => s.arrivals.filter((x) => x.body.includes(`${tag}-`)).length;
      // Delivery has its own allowance after the last send: a slow batch is not taken for lost PDUs.
      while (performance.now() - sentAt < LIMIT_MS && !standIns.every((s) => got(s) >= want)) await new Promise((r) => setTimeout(r, 5));
      const doneAt = performance.now();
      if (!measured) return;
      if (batch.messages < N) warnings.push(`${tag}: only ${batch.messages} of ${N} sent within ${LIMIT_MS / 1000} s; its rate counts those`);
      for (const s of standIns) if (got(s) < want) lost.push(`${s.name} had ${got(s)} of ${want} PDUs of ${tag} ${LIMIT_MS / 1000} s after the last send`);
      note(key, batch.messages, batch.wallMs, (await A.cpuTime()) - cpu0);
      note(`${key}_delivered`, batch.messages, doneAt - t0, 0);
      deliveredAfterSendsMs.push(doneAt - sentAt);
      for (const s of standIns) for (const x of s.arrivals) if (x.body.includes(`${tag}-`)) fanoutLatencies.push(x.latencyMs);
    };

    const measureViaB = async (tag: string, measured: boolean) => {
      const count = measured ? N : WARMUP;
      const since = await syncToken(A.url, alice.token);
      const cpu0 = await A.cpuTime();
      const t0 = performance.now();
      const watching = seenAll(A.url, alice.token, inbound, since, `${tag}-`, count, t0 + LIMIT_MS);
      const batch = await sendBatch(b.child.url, inbound, [bob!], count, tag, LIMIT_MS);
      const doneAt = await watching;
      if (doneAt === undefined) problems.push(`via_b ${tag}: A did not show all ${count} messages within ${LIMIT_MS / 1000} s`);
      if (measured && doneAt !== undefined) {
        note("inbound_via_b", batch.messages, doneAt - t0, (await A.cpuTime()) - cpu0);
        note("b_local_sends", batch.messages, batch.wallMs, 0);
      }
    };

    const measureTxns = async (tag: string, measured: boolean) => {
      const count = measured ? N : WARMUP;
      const pdus = await buildChain(A, alice, bSigner, inbound, bobId, tag, count);
      const since = await syncToken(A.url, alice.token);
      const agent = newAgent();
      const cpu0 = await A.cpuTime();
      const t0 = performance.now();
      for (let i = 0; i < pdus.length; i += TXN_PDUS) {
        const body = { origin: "b.test", origin_server_ts: Date.now(), pdus: pdus.slice(i, i + TXN_PDUS), edus: [] };
        const res = await signedRequest(A.url, agent, bSigner, "a.test", "PUT", `/_matrix/federation/v1/send/${enc(`${tag}-${i}`)}`, body);
        const errors = Object.values((res.json.pdus ?? {}) as Record<string, { error?: string }>).filter((r) => r.error);
        if (res.status !== 200 || errors.length) problems.push(`transactions ${tag}: ${res.status}, ${errors.length} PDU errors, e.g. ${JSON.stringify(errors[0] ?? res.json).slice(0, 200)}`);
      }
      const answeredAt = performance.now();
      const cpuUs = (await A.cpuTime()) - cpu0;
      agent.destroy();
      const shownAt = await seenAll(A.url, alice.token, inbound, since, `of ${tag}`, count, t0 + LIMIT_MS);
      if (shownAt === undefined) problems.push(`transactions ${tag}: A's /sync did not show all ${count} PDUs`);
      if (measured) {
        note("inbound_transactions", count, answeredAt - t0, cpuUs);
        if (shownAt !== undefined) note("inbound_transactions_in_sync", count, shownAt - t0, 0);
      }
    };

    const allSteps: [string, (tag: string, measured: boolean) => Promise<unknown>][] = [
      ["local_sequential", (t, m) => measureLocal(local, "local_sequential", modes.sequential, t, m)],
      ["local_concurrent", (t, m) => measureLocal(local, "local_concurrent", modes.concurrent, t, m)],
      ["inbound_via_b", (t, m) => measureViaB(t, m)],
      ["inbound_transactions", (t, m) => measureTxns(t, m)],
      ["fanout_sequential", (t, m) => measureFanout("fanout_sequential", modes.sequential, t, m)],
      ["fanout_concurrent", (t, m) => measureFanout("fanout_concurrent", modes.concurrent, t, m)],
    ];
    const steps = allSteps.filter(([name]) => !ONLY || ONLY.includes(name));
    for (const [name, step] of steps) await step(`warm-${name}`, false);
    log(`warmed up; ${ROUNDS} rounds of ${N} messages per figure`);
    for (let r = 0; r < ROUNDS; r++) {
      // A rotating order, so that a machine that slows down for a while slows every figure alike.
      for (let i = 0; i < steps.length; i++) {
        const [name, step] = steps[(i + r) % steps.length]!;
        await step(`r${r}-${name}`, true);
      }
    }

    const localSeq = rate("local_sequential");
    const localCon = rate("local_concurrent");
    const viaB = rate("inbound_via_b");
    const txns = rate("inbound_transactions");
    const fanSeq = rate("fanout_sequential");
    const fanCon = rate("fanout_concurrent");
    const sortedLat = fanoutLatencies.sort((x, y) => x - y);
    problems.push(...lost);
    report = {
      benchmark: "federation into and out of one room on Switchboard (SQLite), against local sends on the same server in the same run",
      date: new Date().toISOString(),
      node: process.version,
      cpus: os.availableParallelism(),
      cpu_model: os.cpus()[0]?.model ?? "unknown",
      messages_per_batch: N,
      rounds: ROUNDS,
      warmup_messages: WARMUP,
      baseline: {
        what: "m.room.message sends on A into a room with no other server, by one user one after another (sequential) and by concurrent_clients users at once",
        concurrent_clients: CLIENTS,
        sequential_msg_per_s: localSeq,
        concurrent_msg_per_s: localCon,
      },
      inbound: {
        transactions: {
          what: `signed PUT /send/{txnId} of ${TXN_PDUS} PDUs each from b.test, one transaction at a time; rate up to the last 200 answer (A persists before answering)`,
          pdus_per_s: txns,
          pdus_per_s_until_in_alices_sync: rate("inbound_transactions_in_sync").per_s,
          ratio_to_local_sequential: ratio(txns, localSeq),
          ratio_to_local_concurrent: ratio(txns, localCon),
        },
        via_b: {
          what: "bob@b.test sends one after another on B; rate until A's /sync shows them all (includes B's sends and outbox)",
          pdus_per_s: viaB,
          b_local_send_msg_per_s: rate("b_local_sends").per_s,
          ratio_to_local_sequential: ratio(viaB, localSeq),
        },
      },
      outbound_fanout: {
        what: `sends on A into a room with users of ${remoteServers.size} other servers (stand-ins joined by make_join/send_join, counting PDUs) against the no-remote room`,
        destinations: remoteServers.size,
        sequential_msg_per_s: fanSeq,
        concurrent_msg_per_s: fanCon,
        ratio_to_local_sequential: ratio(fanSeq, localSeq),
        ratio_to_local_concurrent: ratio(fanCon, localCon),
        all_destinations_had_all_pdus: {
          sequential_msg_per_s: rate("fanout_sequential_delivered").per_s,
          concurrent_msg_per_s: rate("fanout_concurrent_delivered").per_s,
          after_last_send_ms: deliveredAfterSendsMs.map((x) => round(x, 0)),
        },
        delivery_latency_ms_per_pdu_and_destination: { p50: percentile(sortedLat, 50), p99: percentile(sortedLat, 99), max: sortedLat.at(-1) ?? null, samples: sortedLat.length },
        transactions_received: standIns.reduce((n, s) => n + s.transactions, 0),
      },
      load_average_before: loadBefore,
    };
  } finally {
    await cleanups.run();
  }
  if ((loadBefore[0] ?? 0) > 1) warnings.push(`1-minute load average was ${loadBefore[0]} before the run: other processes shared the cores, so figures are noisy`);
  return printReport(report, warnings, problems, log);
}

runMain(main);
