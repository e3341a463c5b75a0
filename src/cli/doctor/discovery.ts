/**
 * The first two steps every client takes: `/.well-known/matrix/client` on the server name's
 * host, then `/_matrix/client/versions` at the base URL it names.
 */
import { isObject, join, type DoctorContext, type Transport } from "./context.js";
import { describeReply, headerValues, HttpFailure, type HttpReply } from "./http.js";

const WELL_KNOWN = "/.well-known/matrix/client";
const FOCI_KEY = "org.matrix.msc4143.rtc_foci";

/** The CORS line browsers need on a JSON document they read from another origin. */
export function corsProblem(reply: HttpReply): string | undefined {
  const values = headerValues(reply, "access-control-allow-origin");
  if (values.length === 0) return "no Access-Control-Allow-Origin header";
  if (values.length > 1) return `${values.length} Access-Control-Allow-Origin headers (${values.join(", ")}); browsers reject more than one`;
  if (values[0]!.trim() !== "*") return `Access-Control-Allow-Origin: ${values[0]} instead of *`;
  return undefined;
}

export function describeTransport(t: Transport): string {
  const where = [t.url, t.livekit_service_url].filter((v) => typeof v === "string").join(" + ");
  return where ? `${t.type} ${where}` : t.type;
}

export async function checkWellKnown(ctx: DoctorContext, origin: string, fromName: boolean): Promise<void> {
  const { rec } = ctx;
  const url = join(origin, WELL_KNOWN);
  const asked = `GET ${url}`;
  let reply: HttpReply;
  try {
    reply = await ctx.http.get(url);
  } catch (err) {
    const why = (err as HttpFailure).message;
    if (fromName) {
      rec.fail("well-known", ".well-known", asked, why, "Clients that start from the server name cannot find the homeserver, nor its call transports.",
        `Serve ${WELL_KNOWN} over HTTPS on the server name's host; if that is another web server, proxy /.well-known/matrix/ from it to the homeserver.`);
    } else {
      rec.warn("well-known", ".well-known", asked, why, "Not needed when clients are given the base URL, but clients that start from the server name need it.");
    }
    return;
  }
  const body = reply.json;
  if (reply.status !== 200 || !isObject(body)) {
    const got = reply.status === 200 ? "200, but the body is not a JSON object" : describeReply(reply);
    const fix = `Serve ${WELL_KNOWN} as JSON, e.g. {"m.homeserver":{"base_url":"https://matrix.example.com"}}; if the server name's host is another web server, proxy /.well-known/matrix/ from it to the homeserver.`;
    if (fromName) rec.fail("well-known", ".well-known", asked, got, "Clients that start from the server name cannot find the homeserver here.", fix);
    else rec.warn("well-known", ".well-known", asked, got, "Not needed when clients are given the base URL; clients that start from the server name need it.", fix);
    return;
  }
  const homeserver = body["m.homeserver"];
  const baseUrl = isObject(homeserver) && typeof homeserver.base_url === "string" ? homeserver.base_url : undefined;
  if (baseUrl === undefined || !URL.canParse(baseUrl)) {
    rec.fail("well-known", ".well-known", asked, `200, but m.homeserver.base_url is ${baseUrl === undefined ? "missing" : `"${baseUrl}", not a URL`}`,
      "Clients cannot tell where the homeserver is.", `Put {"m.homeserver":{"base_url":"https://…"}} in ${WELL_KNOWN}.`);
  } else {
    rec.pass("well-known", ".well-known", asked, `200, base_url ${baseUrl}`);
    if (fromName) ctx.baseUrl = baseUrl.replace(/\/+$/, "");
  }

  const cors = corsProblem(reply);
  if (cors) {
    const many = headerValues(reply, "access-control-allow-origin").length > 1;
    rec.fail("well-known.cors", ".well-known CORS", asked, cors,
      many
        ? "Both the reverse proxy and the homeserver add the header; browsers (Element Web, Element Call) then refuse the file, and report MISSING_MATRIX_RTC_FOCUS."
        : "Browsers (Element Web, Element Call) may not read the file, so they cannot find the homeserver or its transports: MISSING_MATRIX_RTC_FOCUS.",
      many
        ? "Remove the proxy's own add_header Access-Control-Allow-Origin for /.well-known/matrix/, and let the homeserver's single header through."
        : `Send exactly one "Access-Control-Allow-Origin: *" with ${WELL_KNOWN}; best, proxy /.well-known/matrix/ to Switchboard, which sets it.`);
  } else {
    rec.pass("well-known.cors", ".well-known CORS", asked, "Access-Control-Allow-Origin: * (once)");
  }

  const foci = body[FOCI_KEY];
  if (foci === undefined) {
    rec.warn("well-known.rtc_foci", ".well-known rtc_foci", asked, `no ${FOCI_KEY}`,
      "Older Element X and Element Web builds read the call transports only from here (newer ones ask rtc/transports).",
      "With Switchboard, configure matrix_rtc.transports (or livekit) and keep matrix_rtc.advertise_in_well_known on; on other servers add the same list as rtc/transports serves.");
  } else if (!Array.isArray(foci) || foci.some((t) => !isObject(t) || typeof t.type !== "string")) {
    rec.fail("well-known.rtc_foci", ".well-known rtc_foci", asked, `${FOCI_KEY} is not a list of objects with a "type"`,
      "Clients that read it cannot use it.", "Make it a list like rtc/transports serves: [{\"type\":\"livekit\",\"livekit_service_url\":\"https://…\"}].");
  } else {
    ctx.wellKnownFoci = foci as Transport[];
    const list = ctx.wellKnownFoci.map(describeTransport).join("; ");
    rec.pass("well-known.rtc_foci", ".well-known rtc_foci", asked, foci.length ? `${foci.length}: ${list}` : "an empty list");
  }
}

/**
 * SERVER was a base URL, so `.well-known` was read at its host. Clients that start from the user
 * ID (most logins) read it at the user's server name instead; when that is another host, check
 * it there too: reachable, a `base_url`, the same homeserver, CORS.
 */
export async function checkServerNameWellKnown(ctx: DoctorContext, checkedOrigin: string): Promise<void> {
  const { rec } = ctx;
  const name = ctx.serverName!;
  const origin = `${ctx.opts.insecureHttp ? "http" : "https"}://${name}`;
  if (!URL.canParse(origin) || new URL(origin).host === new URL(checkedOrigin).host) return;
  const id = "well-known.server-name";
  const title = ".well-known at server name";
  const url = join(origin, WELL_KNOWN);
  const asked = `GET ${url} (${ctx.session!.userId} names server ${name}, not the host of ${ctx.opts.server})`;
  const fix = `Serve ${WELL_KNOWN} on ${name}'s host with {"m.homeserver":{"base_url":"${ctx.baseUrl}"}} and "Access-Control-Allow-Origin: *"; if that is another web server, proxy /.well-known/matrix/ from it to the homeserver.`;
  const cause = `Clients that log in as ${ctx.session!.userId} look for the homeserver there, and cannot find it (or its call transports).`;
  let reply: HttpReply;
  try {
    reply = await ctx.http.get(url);
  } catch (err) {
    return void rec.fail(id, title, asked, (err as HttpFailure).message, cause, fix);
  }
  const body = reply.json;
  const homeserver = isObject(body) ? body["m.homeserver"] : undefined;
  const baseUrl = isObject(homeserver) && typeof homeserver.base_url === "string" ? homeserver.base_url.replace(/\/+$/, "") : undefined;
  if (reply.status !== 200 || baseUrl === undefined) {
    return void rec.fail(id, title, asked, reply.status === 200 ? "200, but no m.homeserver.base_url" : describeReply(reply), cause, fix);
  }
  const cors = corsProblem(reply);
  if (cors) return void rec.fail(id, title, asked, cors, "Browsers (Element Web, Element Call) may not read the file, so they cannot find the homeserver or its transports.", fix);
  if (baseUrl !== ctx.baseUrl) {
    return void rec.warn(id, title, asked, `200, base_url ${baseUrl}, not ${ctx.baseUrl} as given`,
      "Clients that start from the user ID use that base URL instead of the one checked here; if it is another way to the same homeserver, check it too (switchboard doctor " + name + ").");
  }
  rec.pass(id, title, asked, `200, base_url ${baseUrl} (as given), Access-Control-Allow-Origin: * (once)`);
}

interface FeatureRule {
  flag: string;
  what: string;
  /** Without it calls fail (✘), or only some clients or modes miss out (⚠). */
  required: boolean;
  fixIfOff: string;
}

export const FEATURES: FeatureRule[] = [
  {
    flag: "org.matrix.msc4143",
    what: "RTC transport discovery (rtc/transports): how clients find the call's media backend",
    required: true,
    fixIfOff: "Turn it on (Switchboard: leave experimental_features.msc4143_enabled on; Synapse: experimental_features.msc4143_enabled: true) and configure transports.",
  },
  {
    flag: "org.matrix.msc4140",
    what: "delayed events: the leave a client schedules in advance, so a crashed client does not haunt the call; matrix-js-sdk refuses to join without it",
    required: true,
    fixIfOff: "Turn delayed events on (Switchboard: experimental_features.msc4140_enabled: true, the default; Synapse: max_event_delay_duration).",
  },
  {
    flag: "org.matrix.msc4354",
    what: "sticky events: Element Call's matrix_2_0 mode sends call membership with them (\"Homeserver does not support Matrix 2.0 calls\" otherwise)",
    required: false,
    fixIfOff: "Turn sticky events on (Switchboard: experimental_features.msc4354_enabled, the default; Synapse: experimental_features.msc4354_enabled).",
  },
  {
    flag: "org.matrix.msc4222",
    what: "state_after on /sync: matrix-js-sdk and Element Call use it to see call membership state correctly",
    required: false,
    fixIfOff: "Turn it on (Synapse: experimental_features.msc4222_enabled).",
  },
  {
    flag: "org.matrix.simplified_msc3575",
    what: "simplified sliding sync: Element X logs in only with it",
    required: false,
    fixIfOff: "Element X users need a server with simplified sliding sync; Element Web and Element Call work without it.",
  },
];

export async function checkVersions(ctx: DoctorContext): Promise<void> {
  const { rec } = ctx;
  const url = join(ctx.baseUrl!, "/_matrix/client/versions");
  const asked = `GET ${url}`;
  let reply: HttpReply;
  try {
    reply = await ctx.http.get(url);
  } catch (err) {
    rec.fail("versions", "/versions", asked, (err as HttpFailure).message, "The base URL does not reach a homeserver.",
      "Check m.homeserver.base_url in .well-known (or the URL given) and that the reverse proxy passes /_matrix/ to the homeserver.");
    return;
  }
  const body = reply.json;
  const versions = isObject(body) && Array.isArray(body.versions) ? body.versions.filter((v): v is string => typeof v === "string") : undefined;
  if (reply.status !== 200 || versions === undefined) {
    rec.fail("versions", "/versions", asked, describeReply(reply), "The base URL does not answer like a Matrix homeserver.",
      "Point base_url at the homeserver, and pass /_matrix/ to it at the reverse proxy.");
    return;
  }
  ctx.versionsReachable = true;
  rec.pass("versions", "/versions", asked, `200, spec versions ${versions.join(", ") || "(none)"}`);
  const cors = corsProblem(reply);
  if (cors) {
    rec.fail("versions.cors", "/versions CORS", asked, cors, "Browser clients (Element Web, Element Call) cannot talk to the homeserver.",
      "Let the homeserver's own CORS headers through the reverse proxy, and add none of your own.");
  } else {
    rec.pass("versions.cors", "/versions CORS", asked, "Access-Control-Allow-Origin: * (once)");
  }
  const unstable = isObject(body) && isObject(body.unstable_features) ? body.unstable_features : {};
  for (const rule of FEATURES) {
    const value = unstable[rule.flag];
    ctx.features[rule.flag] = value === true;
    const id = `feature.${rule.flag.replace(/^org\.matrix\./, "")}`;
    const title = rule.flag.replace(/^org\.matrix\./, "");
    const got = value === undefined ? "not listed" : String(value);
    if (value === true) rec.pass(id, title, `unstable_features["${rule.flag}"]`, `true: ${rule.what}`);
    else if (rule.required) rec.fail(id, title, `unstable_features["${rule.flag}"]`, got, `Off: ${rule.what}.`, rule.fixIfOff);
    else rec.warn(id, title, `unstable_features["${rule.flag}"]`, got, `Off: ${rule.what}.`, rule.fixIfOff);
  }
}
