/** Runs the checks in the order the clients make their requests, and always cleans up, even after Ctrl-C. */
import { type DoctorContext, type DoctorOptions, type Transport } from "./context.js";
import { checkServerNameWellKnown, checkVersions, checkWellKnown } from "./discovery.js";
import { checkDelayedEvents, checkStickyAndStateAfter } from "./events.js";
import { HttpClient } from "./http.js";
import { checkLiveKit } from "./livekit.js";
import { Recorder, summarise, type DoctorReport } from "./report.js";
import { checkLogin, cleanUp, createRoom } from "./session.js";
import { checkTransports, compareWithConfig } from "./transports.js";
import { checkTurn } from "./turn.js";

export interface Configured {
  file: string;
  /** What this config makes Switchboard serve at rtc/transports. */
  transports: Transport[];
}

export const isBaseUrl = (server: string): boolean => /^https?:\/\//i.test(server);

export async function runDoctor(opts: DoctorOptions, configured?: Configured, onProgress?: (what: string | undefined) => void): Promise<DoctorReport> {
  const rec = new Recorder(onProgress);
  const ctx: DoctorContext = {
    opts,
    http: new HttpClient({ allowHttp: opts.insecureHttp, ca: opts.ca, timeoutMs: opts.timeoutMs ?? 10_000, dialer: opts.dialer }),
    rec,
    features: {},
    versionsReachable: false,
    pendingDelays: [],
  };
  const credentials = Boolean(opts.accessToken || opts.user);
  const notes = [
    credentials
      ? "Credentials given: the doctor creates a private room, sends a few throwaway events in it (one of them delayed; any still scheduled at the end is cancelled), leaves the room, and logs out any device it logged in. Nothing else is changed."
      : "No credentials: nothing on the server is changed, and the checks that need an account are skipped.",
  ];
  if (opts.insecureHttp) notes.push("--insecure-http: plain http is accepted where clients and JWT services would insist on https.");

  let origin: string;
  if (isBaseUrl(opts.server)) {
    ctx.baseUrl = opts.server.replace(/\/+$/, "");
    origin = new URL(opts.server).origin;
  } else {
    ctx.serverName = opts.server;
    origin = `${opts.insecureHttp ? "http" : "https"}://${opts.server}`;
  }
  // Ctrl-C/SIGTERM: no new request starts (the one in flight is answered, so a login or a room
  // it creates is known), the checks wind down, what they record from then on is dropped, and
  // the clean-up runs as after a full run.
  let kept = -1;
  const interrupt = () => {
    kept = rec.checks.length;
    ctx.interrupted = true;
    ctx.http.refuseNewRequests(true);
  };
  opts.signal?.addEventListener("abort", interrupt, { once: true });
  if (opts.signal?.aborted) interrupt();
  try {
    await runChecks(ctx, origin, notes, configured);
  } finally {
    opts.signal?.removeEventListener("abort", interrupt);
    if (ctx.interrupted) {
      rec.checks.splice(kept);
      rec.skip("interrupted", "interrupted", "the remaining checks", `stopped by ${String(opts.signal?.reason ?? "a signal")}; the clean-up still ran`);
      ctx.http.refuseNewRequests(false);
    }
    await cleanUp(ctx);
    rec.progress("");
  }
  return finish(ctx, notes);
}

async function runChecks(ctx: DoctorContext, origin: string, notes: string[], configured: Configured | undefined): Promise<void> {
  const { opts, rec } = ctx;
  rec.progress("reading .well-known");
  await checkWellKnown(ctx, origin, !isBaseUrl(opts.server));
  if (!ctx.baseUrl) {
    // What clients do when the file is missing: try the server name itself.
    ctx.baseUrl = origin;
    notes.push(`No base URL from .well-known: trying ${origin}, as clients do.`);
  }
  await checkVersions(ctx);
  if (!ctx.versionsReachable) {
    rec.skip("rest", "the other checks", "login, transports, LiveKit, TURN, events", "the base URL does not answer (see /versions)");
    return;
  }
  rec.progress("logging in");
  await checkLogin(ctx);
  // SERVER was a base URL: clients that start from the user ID read .well-known at its server name.
  if (isBaseUrl(opts.server) && ctx.session) await checkServerNameWellKnown(ctx, origin);
  await createRoom(ctx);
  await checkTransports(ctx);
  if (configured) compareWithConfig(ctx, configured.transports, configured.file);
  await checkLiveKit(ctx);
  await checkTurn(ctx);
  await checkDelayedEvents(ctx);
  await checkStickyAndStateAfter(ctx);
}

function finish(ctx: DoctorContext, notes: string[]): DoctorReport {
  return {
    server: ctx.opts.server,
    ...(ctx.baseUrl ? { baseUrl: ctx.baseUrl } : {}),
    mutates: Boolean(ctx.session),
    ...(ctx.interrupted ? { interrupted: String(ctx.opts.signal?.reason ?? "signal") } : {}),
    notes,
    checks: ctx.rec.checks,
    summary: summarise(ctx.rec.checks),
  };
}
