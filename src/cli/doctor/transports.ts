/**
 * `rtc/transports` at both paths, compared with the `.well-known` fallback and, with
 * `--config`, with what the local config says should be served.
 */
import { isDeepStrictEqual } from "node:util";
import { isObject, type DoctorContext, type Transport } from "./context.js";
import { describeTransport } from "./discovery.js";
import { describeReply } from "./http.js";
import { call } from "./session.js";

export const LIVEKIT_TYPES = new Set(["livekit", "msc4195.livekit"]);
const PATHS = {
  unstable: "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports",
  v1: "/_matrix/client/v1/rtc/transports",
};

const NO_TRANSPORTS_FIX =
  "Switchboard: configure the livekit block (its own JWT service is then advertised) or list one in matrix_rtc.transports; Synapse: matrix_rtc.transports with experimental_features.msc4143_enabled.";

function isLoopback(host: string): boolean {
  return host === "localhost" || host.endsWith(".localhost") || /^127\./.test(host) || host === "[::1]";
}

/** What is wrong with one transport, if anything. */
export function transportProblem(t: unknown, insecureHttp: boolean): string | undefined {
  if (!isObject(t) || typeof t.type !== "string") return "an entry is not an object with a string \"type\"";
  if (!LIVEKIT_TYPES.has(t.type)) return undefined; // other types are served verbatim; the doctor does not judge them
  const { url, livekit_service_url: service } = t;
  if (url === undefined && service === undefined) return `a ${t.type} entry has neither url nor livekit_service_url`;
  const check = (key: string, value: unknown, schemes: string[]): string | undefined => {
    if (value === undefined) return undefined;
    if (typeof value !== "string" || !URL.canParse(value)) return `${key} ${JSON.stringify(value)} is not an absolute URL`;
    const u = new URL(value);
    if (schemes[0] === u.protocol) return undefined;
    if (schemes[1] === u.protocol && (insecureHttp || isLoopback(u.hostname))) return undefined;
    return `${key} ${value} is not ${schemes[0]}//`;
  };
  return check("url", url, ["wss:", "ws:"]) ?? check("livekit_service_url", service, ["https:", "http:"]);
}

interface Fetched {
  path: keyof typeof PATHS;
  list?: Transport[];
}

async function fetchTransports(ctx: DoctorContext, path: keyof typeof PATHS, earlier?: Fetched): Promise<Fetched> {
  const { rec } = ctx;
  const id = `rtc-transports.${path}`;
  const title = `rtc/transports (${path})`;
  const asked = `GET ${PATHS[path]}`;
  if (!ctx.session) {
    rec.skip(id, title, asked, "needs an access token (the endpoint is authenticated): pass --user/--password or --access-token");
    return { path };
  }
  const reply = await call(ctx, "GET", PATHS[path]);
  if (typeof reply === "string") {
    rec.fail(id, title, asked, reply, "The homeserver did not answer.", "Check that the reverse proxy passes /_matrix/client/ to the homeserver.");
    return { path };
  }
  const body = reply.json;
  if (reply.status === 404) {
    if (!ctx.features["org.matrix.msc4143"]) {
      rec.skip(id, title, asked, `${describeReply(reply)}: msc4143 is off (see above)`);
    } else if (path === "v1") {
      rec.warn(id, title, asked, describeReply(reply), "Only the unstable path is served (Synapse 1.163 has no v1 path); clients that ask v1 first (Element X) fall back to it.",
        "Nothing to do for now; a server that implements MSC4519 serves both.");
    } else {
      rec.fail(id, title, asked, describeReply(reply), "/versions says msc4143 is on, but the endpoint is missing: clients say MISSING_MATRIX_RTC_TRANSPORT.",
        "Upgrade the homeserver, or check that the reverse proxy passes /_matrix/client/unstable/ through.");
    }
    return { path };
  }
  if (reply.status !== 200 || !isObject(body)) {
    rec.fail(id, title, asked, describeReply(reply), "Clients cannot learn the call transports.", "See the homeserver's log for this request.");
    return { path };
  }
  if (!Array.isArray(body.rtc_transports)) {
    rec.fail(id, title, asked, `200 ${JSON.stringify(body).slice(0, 80)}, without rtc_transports`,
      "No transports are configured; an answer without the rtc_transports list also stops clients from trying the .well-known fallback. Calls fail with MISSING_MATRIX_RTC_TRANSPORT.",
      NO_TRANSPORTS_FIX);
    return { path, list: earlier ? undefined : [] };
  }
  const list = body.rtc_transports as Transport[];
  if (earlier?.list && ctx.rec.failed(`rtc-transports.${earlier.path}`) && isDeepStrictEqual(earlier.list, list)) {
    // One fault, one failure: the same bad answer at the second path adds nothing.
    rec.skip(id, title, asked, `200, the same answer as the ${earlier.path} path (see above)`);
    return { path, list };
  }
  const problem = list.map((t) => transportProblem(t, ctx.opts.insecureHttp)).find((p) => p !== undefined);
  if (list.length === 0) {
    rec.fail(id, title, asked, "200, an empty list", "No transport is configured, so clients have no media backend: MISSING_MATRIX_RTC_TRANSPORT.", NO_TRANSPORTS_FIX);
  } else if (problem) {
    rec.fail(id, title, asked, `200, but ${problem}`, "Clients skip or fail on a malformed transport.", "Fix that entry in the transports configuration.");
  } else {
    rec.pass(id, title, asked, `200, ${list.length}: ${list.map(describeTransport).join("; ")}`);
  }
  return { path, list };
}

export async function checkTransports(ctx: DoctorContext): Promise<void> {
  const unstable = await fetchTransports(ctx, "unstable");
  const v1 = await fetchTransports(ctx, "v1", unstable);
  const { rec } = ctx;
  if (unstable.list && v1.list && !isDeepStrictEqual(unstable.list, v1.list)) {
    rec.warn("rtc-transports.paths", "unstable = v1", "compare the two paths", `unstable has ${unstable.list.length}, v1 has ${v1.list.length}, and they differ`,
      "Element Web (unstable path) and Element X (v1) would use different backends.", "Serve the same list at both paths.");
  }
  const served = unstable.list ?? v1.list;
  // The client's own fallback: with no usable endpoint, the transports in .well-known.
  ctx.transports = served ?? ctx.wellKnownFoci;

  const foci = ctx.wellKnownFoci;
  const asked = "compare rtc/transports with .well-known rtc_foci";
  if (served && served.length > 0 && foci) {
    if (isDeepStrictEqual(served, foci)) rec.pass("rtc-transports.well-known", "well-known fallback", asked, "the same list");
    else
      rec.warn("rtc-transports.well-known", "well-known fallback", asked, `rtc/transports has ${served.length}, rtc_foci has ${foci.length}, and they differ`,
        "Older clients (rtc_foci) and newer ones (rtc/transports) would pick different media backends, and may not meet in one call.",
        "Serve one list in both places (Switchboard does so by itself unless extra_well_known_client_content overrides rtc_foci).");
  }
}

/** `--config`: does the public URL serve what this config would? */
export function compareWithConfig(ctx: DoctorContext, configured: Transport[], configFile: string): void {
  const { rec } = ctx;
  const served = ctx.transports;
  const asked = `compare with matrix_rtc.transports in ${configFile}`;
  if (!served) {
    rec.skip("config.transports", "config vs served", asked, "nothing served to compare with (see above)");
    return;
  }
  const plural = (n: number) => `${n} transport${n === 1 ? "" : "s"}`;
  if (isDeepStrictEqual(served, configured)) {
    rec.pass("config.transports", "config vs served", asked, `the same ${plural(served.length)}`);
    return;
  }
  const differing = configured.findIndex((t, i) => !isDeepStrictEqual(t, served[i]));
  const got = configured.length !== served.length
    ? `${configFile} gives ${plural(configured.length)}, but the public URL serves ${plural(served.length)}`
    : `both have ${plural(served.length)}, but #${differing + 1} differs: configured ${describeTransport(configured[differing]!)}, served ${describeTransport(served[differing]!)}`;
  rec.fail("config.transports", "config vs served", asked, got,
    "The public URL reaches a different server, or one that has not been restarted since the config changed.",
    "Check which backend the reverse proxy passes /_matrix/ to, and restart Switchboard after config changes.");
}
