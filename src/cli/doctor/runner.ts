/** Runs the checks in the order the clients make their requests, and always cleans up. */
import { type DoctorContext, type DoctorOptions, type Transport } from "./context.js";
import { checkVersions, checkWellKnown } from "./discovery.js";
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
    http: new HttpClient({ allowHttp: opts.insecureHttp, ca: opts.ca, timeoutMs: opts.timeoutMs ?? 10_000 }),
    rec,
    features: {},
    versionsReachable: false,
  };
  const credentials = Boolean(opts.accessToken || opts.user);
  const notes = [
    credentials
      ? "Credentials given: the doctor creates a private room, sends a few throwaway events in it (one of them delayed), leaves the room, and logs out any device it logged in. Nothing else is changed."
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
  try {
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
      return finish(ctx, notes);
    }
    rec.progress("logging in");
    await checkLogin(ctx);
    await createRoom(ctx);
    await checkTransports(ctx);
    if (configured) compareWithConfig(ctx, configured.transports, configured.file);
    await checkLiveKit(ctx);
    await checkTurn(ctx);
    await checkDelayedEvents(ctx);
    await checkStickyAndStateAfter(ctx);
  } finally {
    await cleanUp(ctx);
    rec.progress("");
  }
  return finish(ctx, notes);
}

function finish(ctx: DoctorContext, notes: string[]): DoctorReport {
  return {
    server: ctx.opts.server,
    ...(ctx.baseUrl ? { baseUrl: ctx.baseUrl } : {}),
    mutates: Boolean(ctx.session),
    notes,
    checks: ctx.rec.checks,
    summary: summarise(ctx.rec.checks),
  };
}
