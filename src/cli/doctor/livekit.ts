/**
 * Per LiveKit transport, the client's path to media: a LiveKit token from the homeserver (`url`
 * transports, MSC4195) or from a JWT service (`livekit_service_url`, with an OpenID token), then
 * the SFU itself with that token.
 */
import { randomBytes } from "node:crypto";
import { isObject, join, type DoctorContext, type Transport } from "./context.js";
import { corsProblem } from "./discovery.js";
import { describeReply, errcodeOf, HttpFailure, PlainHttpRefused, type HttpReply } from "./http.js";
import { decodeJwt, judgeClaims } from "./jwt.js";
import { redact } from "./report.js";
import { call } from "./session.js";
import { openRtcSocket, probeSfu, validateJwt } from "./sfu.js";
import { LIVEKIT_TYPES, transportProblem } from "./transports.js";
import { checkUserinfo } from "./userinfo.js";

const SLOT_ID = "m.call#ROOM";
const HS_TOKEN_PATHS = ["/_matrix/client/unstable/io.element.msc4195/rtc/livekit/get_token", "/_matrix/client/v1/rtc/livekit/get_token"];

interface OpenIdToken {
  access_token: string;
  token_type: string;
  matrix_server_name: string;
  expires_in: number;
}

/** One transport's progress: which SFU lines are written, and the tokens obtained. */
interface TransportState {
  n: number;
  sfuUrl?: string;
  sfuReachable?: boolean;
  authRecorded: boolean;
  tokens: Token[];
  /** The SFU's verdict on the first token, once asked (`/rtc/validate`, then the WebSocket). */
  verdict?: boolean;
}

interface Token {
  jwt: string;
  sfuUrl: string;
  source: string;
}

/**
 * The SFU fault a token issuer reports when it could not create the LiveKit room. Switchboard
 * says whether the SFU refused its key or did not answer; lk-jwt-service says only
 * `500 M_UNKNOWN "Unable to create room on SFU"` for both ("create": either).
 */
function sfuFault(reply: HttpReply): "unreachable" | "auth" | "create" | undefined {
  const body = reply.json;
  const text = isObject(body) && typeof body.error === "string" ? body.error : reply.text;
  if (reply.status < 500 || !/SFU|livekit/i.test(text)) return undefined;
  if (/answered 40[13]|unauthenticated|unauthori[sz]ed|permission/i.test(text)) return "auth";
  if (/unreachable|no answer|ECONNREFUSED|ENOTFOUND|timed? ?out/i.test(text)) return "unreachable";
  if (/creat(e|ing) (the )?(livekit )?room/i.test(text)) return "create";
  return undefined;
}

/** The SFU's verdict on a token: `/rtc/validate`, then (when it accepts it) the WebSocket itself. */
async function sfuVerdict(ctx: DoctorContext, st: TransportState, token: Token): Promise<boolean> {
  const accepted = await validateJwt(ctx, `livekit.${st.n}.sfu-auth`, `#${st.n} SFU accepts key`, token.sfuUrl, token.jwt, token.source);
  const wsId = `livekit.${st.n}.sfu-ws`;
  const wsTitle = `#${st.n} SFU WebSocket`;
  if (accepted) await openRtcSocket(ctx, wsId, wsTitle, token.sfuUrl, token.jwt);
  else ctx.rec.skip(wsId, wsTitle, `WebSocket upgrade to ${token.sfuUrl.replace(/\/+$/, "")}/rtc`, "needs a token the SFU accepts (see SFU accepts key)");
  st.verdict = accepted;
  return accepted;
}

/**
 * The issuer could not create the LiveKit room and does not say why (lk-jwt-service). Its key
 * pair or its way to the SFU's API is wrong; a token from another issuer that the SFU accepts
 * clears the SFU itself, and one it refuses points at the SFU's keys instead.
 */
async function reportCreateFault(ctx: DoctorContext, st: TransportState, reply: HttpReply, issuer: "the homeserver" | "the JWT service", id: string, title: string, asked: string): Promise<void> {
  if (st.sfuReachable === false) {
    ctx.rec.skip(id, title, asked, `${describeReply(reply)}: the issuer needs the SFU (see the SFU line)`);
    return;
  }
  const other = st.tokens[0];
  const accepted = other ? (st.verdict ?? (await sfuVerdict(ctx, st, other))) : undefined;
  if (other && !accepted) {
    ctx.rec.skip(id, title, asked, `${describeReply(reply)}: the SFU refused ${other.source}'s token too (see SFU accepts key)`);
    return;
  }
  const service = issuer === "the JWT service";
  const who = service ? "The JWT service" : "The homeserver";
  const likely = service
    ? "LIVEKIT_KEY/LIVEKIT_SECRET of the JWT service differ from the SFU's keys, or the service cannot reach LIVEKIT_URL"
    : "livekit.api_key/api_secret of the homeserver differ from the SFU's keys, or the homeserver cannot reach livekit.url";
  const cause = other
    ? `${who} could not create the LiveKit room, but the SFU accepts ${other.source}'s token, so the SFU itself is fine: ${likely}.`
    : `${who} could not create the LiveKit room on the SFU: ${likely}.`;
  const fix = service
    ? "Set the JWT service's LIVEKIT_KEY and LIVEKIT_SECRET to exactly a key: secret pair from the SFU's keys: section, and LIVEKIT_URL to the SFU's URL as the service's machine reaches it (try curl on its http(s) form from there); restart the service. Its log (\"Error creating room\") says which."
    : "Set livekit.api_key and livekit.api_secret[_path] to exactly a key: secret pair from the SFU's keys: section, and make livekit.url reachable from the homeserver; the homeserver's log has the error.";
  ctx.rec.fail(id, title, asked, describeReply(reply), cause, fix);
}

/**
 * A token request that failed because of the SFU is reported once, as the SFU's fault (that is
 * where the fix is), and the token line says it depends on it.
 */
function reportSfuFault(ctx: DoctorContext, st: TransportState, fault: "unreachable" | "auth", reply: HttpReply, issuer: string, id: string, title: string, asked: string): void {
  const sfuName = st.sfuUrl ?? "the SFU";
  if (fault === "unreachable" && st.sfuReachable === true) {
    ctx.rec.fail(id, title, asked, describeReply(reply), `The SFU answers clients, but the token issuer (${issuer}) cannot reach its API to create the room.`,
      "Let the issuer reach the SFU's API (the same host and port as livekit.url, over http(s)).");
    return;
  }
  if (fault === "unreachable" && st.sfuReachable === undefined) {
    st.sfuReachable = false;
    ctx.rec.fail(`livekit.${st.n}.sfu`, `#${st.n} SFU reachable`, `${issuer} creating the LiveKit room on ${sfuName}`, describeReply(reply),
      `The token issuer (${issuer}) cannot reach the SFU's API to create the room; clients could not reach the SFU either.`,
      "Check livekit.url (or the JWT service's LIVEKIT_URL): the SFU must be running and its port reachable from the issuer and from clients.");
  } else if (fault === "auth" && !st.authRecorded) {
    st.authRecorded = true;
    ctx.rec.fail(`livekit.${st.n}.sfu-auth`, `#${st.n} SFU accepts key`, `${issuer} creating the LiveKit room on ${sfuName}`, describeReply(reply),
      `The SFU refused the API key and secret the token issuer (${issuer}) signs with: they differ from the SFU's keys:.`,
      "Give the issuer (Switchboard: livekit.api_key and livekit.api_secret[_path]; lk-jwt-service: LIVEKIT_KEY/LIVEKIT_SECRET) exactly a key: secret pair from the SFU's keys: section, and restart it.");
  }
  ctx.rec.skip(id, title, asked, `${describeReply(reply)}: the issuer needs the SFU (see the SFU line)`);
}

function judgeToken(ctx: DoctorContext, st: TransportState, id: string, title: string, asked: string, reply: HttpReply, source: string): void {
  const body = reply.json;
  const jwt = isObject(body) && typeof body.jwt === "string" ? body.jwt : undefined;
  const claims = jwt ? decodeJwt(jwt) : undefined;
  if (!jwt || !claims) {
    ctx.rec.fail(id, title, asked, `200, but ${jwt ? "the jwt is not a JWT" : "no jwt in the answer"}`, "Clients cannot connect without a LiveKit token.", "Upgrade the token issuer.");
    return;
  }
  const verdict = judgeClaims(claims, ctx.roomId!, SLOT_ID, Date.now());
  const got = `200, JWT ${redact(jwt)} (${verdict.summary})`;
  if (verdict.problems.length) {
    ctx.rec.fail(id, title, asked, `${got}: ${verdict.problems.join("; ")}`, "The token would not let the client into the call's LiveKit room.", "Upgrade or fix the token issuer; MSC4195 defines the claims.");
  } else if (verdict.warnings.length) {
    ctx.rec.warn(id, title, asked, `${got}: ${verdict.warnings.join("; ")}`, "The token works, but its grants are not what MSC4195 asks for.");
  } else {
    ctx.rec.pass(id, title, asked, got);
  }
  const sfuUrl = st.sfuUrl ?? (isObject(body) && typeof body.url === "string" ? body.url : undefined);
  if (sfuUrl && !verdict.problems.length) {
    st.sfuUrl = sfuUrl;
    st.tokens.push({ jwt, sfuUrl, source });
  }
}

async function homeserverToken(ctx: DoctorContext, t: Transport, st: TransportState, memberId: string): Promise<void> {
  const id = `livekit.${st.n}.hs-token`;
  const title = `#${st.n} homeserver token`;
  const body = { url: t.url, room_id: ctx.roomId, slot_id: SLOT_ID, member: { id: memberId, claimed_device_id: ctx.session!.deviceId ?? "DOCTOR" } };
  let reply: HttpReply | string = "";
  let asked = "";
  for (const path of HS_TOKEN_PATHS) {
    asked = `POST ${path} for ${String(t.url)} in the throwaway room`;
    reply = await call(ctx, "POST", path, body);
    if (typeof reply === "string" || reply.status !== 404) break;
  }
  if (typeof reply === "string") {
    ctx.rec.fail(id, title, asked, reply, "The homeserver did not answer.", "Check the reverse proxy.");
  } else if (reply.status === 404) {
    if (typeof t.livekit_service_url === "string") {
      ctx.rec.warn(id, title, asked, `${describeReply(reply)} at both paths`, "The homeserver does not issue LiveKit tokens itself; Element Call falls back to the JWT service this transport also names.",
        "Nothing required; Switchboard issues them when livekit is configured.");
    } else {
      ctx.rec.fail(id, title, asked, `${describeReply(reply)} at both paths`,
        "The transport has only url, so Element Call asks the homeserver for the token and shows \"The authorization service for your media server (SFU) is out of date\".",
        "Configure the homeserver to issue LiveKit tokens (Switchboard: the livekit block), or add livekit_service_url to this transport.");
    }
  } else if (reply.status === 200) {
    judgeToken(ctx, st, id, title, asked, reply, "the homeserver");
  } else {
    const fault = sfuFault(reply);
    if (fault === "create") return reportCreateFault(ctx, st, reply, "the homeserver", id, title, asked);
    if (fault) return reportSfuFault(ctx, st, fault, reply, "the homeserver", id, title, asked);
    const cause = errcodeOf(reply) === "M_INVALID_PARAM"
      ? "The homeserver does not know this url as one of its SFUs: the transport and the homeserver's LiveKit configuration disagree."
      : "The homeserver refused the token request.";
    ctx.rec.fail(id, title, asked, describeReply(reply), cause, "Make the transport's url equal the homeserver's configured SFU URL (Switchboard: livekit.url).");
  }
}

async function requestOpenId(ctx: DoctorContext): Promise<OpenIdToken | undefined> {
  const path = `/_matrix/client/v3/user/${encodeURIComponent(ctx.session!.userId)}/openid/request_token`;
  const asked = `POST ${path}`;
  const reply = await call(ctx, "POST", path, {});
  const body = typeof reply === "string" ? undefined : reply.json;
  if (typeof reply === "string" || reply.status !== 200 || !isObject(body) || typeof body.access_token !== "string" || typeof body.matrix_server_name !== "string") {
    ctx.rec.fail("openid", "OpenID token", asked, typeof reply === "string" ? reply : describeReply(reply), "Clients need an OpenID token to ask a JWT service for a LiveKit token.",
      "Guests cannot have one (expected); otherwise check the homeserver's log.");
    return undefined;
  }
  const token = body as unknown as OpenIdToken;
  ctx.rec.pass("openid", "OpenID token", asked, `200, token ${redact(token.access_token)}, matrix_server_name ${token.matrix_server_name}, expires_in ${String(token.expires_in)}`);
  await checkUserinfo(ctx, token.access_token, token.matrix_server_name);
  return token;
}

/**
 * The JWT service as a browser meets it, before any token: `/healthz`, and the CORS preflight
 * Element Call's `POST /get_token` triggers. Read-only, so it runs without credentials too.
 */
async function checkService(ctx: DoctorContext, t: Transport, st: TransportState): Promise<boolean> {
  const service = String(t.livekit_service_url);
  const healthId = `livekit.${st.n}.healthz`;
  const healthAsked = `GET ${join(service, "/healthz")}`;
  try {
    const health = await ctx.http.get(join(service, "/healthz"));
    if (health.status === 200) ctx.rec.pass(healthId, `#${st.n} JWT service`, healthAsked, "200");
    else ctx.rec.warn(healthId, `#${st.n} JWT service`, healthAsked, describeReply(health), "The service answers, but not its health check (older lk-jwt-service, or a proxy serving something else).");
  } catch (err) {
    if (err instanceof PlainHttpRefused) {
      ctx.rec.skip(healthId, `#${st.n} JWT service`, healthAsked, `${service} is plain http: pass --insecure-http to test it`);
      return false;
    }
    ctx.rec.fail(healthId, `#${st.n} JWT service`, healthAsked, (err as HttpFailure).message, "Clients cannot reach the JWT service the transport names.",
      "Check livekit_service_url and that the reverse proxy passes it on (Switchboard's bundled service: proxy /livekit/jwt/ like /_matrix/).");
    return false;
  }
  const corsId = `livekit.${st.n}.service-cors`;
  const corsAsked = `OPTIONS ${join(service, "/get_token")} (a browser's CORS preflight)`;
  try {
    const preflight = await ctx.http.request("OPTIONS", join(service, "/get_token"), {
      headers: { origin: "https://call.element.io", "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
    });
    const problem = preflight.status >= 300 ? describeReply(preflight) : corsProblem(preflight);
    if (problem) {
      ctx.rec.fail(corsId, `#${st.n} JWT service CORS`, corsAsked, problem,
        "Browsers (Element Call) refuse to send the token request: the reverse proxy in front of the JWT service blocks OPTIONS or drops or duplicates its CORS headers.",
        "Pass OPTIONS through to the JWT service untouched, and add no CORS headers of the proxy's own.");
    } else {
      ctx.rec.pass(corsId, `#${st.n} JWT service CORS`, corsAsked, `${preflight.status}, Access-Control-Allow-Origin: * (once)`);
    }
  } catch (err) {
    ctx.rec.fail(corsId, `#${st.n} JWT service CORS`, corsAsked, (err as HttpFailure).message, "The preflight got no answer.", "Pass OPTIONS through to the JWT service.");
  }
  return true;
}

async function serviceToken(ctx: DoctorContext, t: Transport, st: TransportState, openid: OpenIdToken, memberId: string): Promise<void> {
  const service = String(t.livekit_service_url);
  const id = `livekit.${st.n}.service-token`;
  const title = `#${st.n} service token`;
  const deviceId = ctx.session!.deviceId ?? "DOCTOR";
  let asked = `POST ${join(service, "/get_token")} with the OpenID token`;
  let reply: HttpReply;
  try {
    reply = await ctx.http.request("POST", join(service, "/get_token"), {
      json: { room_id: ctx.roomId, slot_id: SLOT_ID, openid_token: openid, member: { id: memberId, claimed_user_id: ctx.session!.userId, claimed_device_id: deviceId } },
    });
    if (reply.status === 404 || reply.status === 405) {
      asked = `POST ${join(service, "/sfu/get")} with the OpenID token (no /get_token there)`;
      reply = await ctx.http.request("POST", join(service, "/sfu/get"), { json: { room: ctx.roomId, openid_token: openid, device_id: deviceId } });
    }
  } catch (err) {
    ctx.rec.fail(id, title, asked, (err as HttpFailure).message, "The JWT service stopped answering.", "See its log.");
    return;
  }
  if (reply.status === 200) return judgeToken(ctx, st, id, title, asked, reply, "the JWT service");
  const fault = sfuFault(reply);
  if (fault === "create") return reportCreateFault(ctx, st, reply, "the JWT service", id, title, asked);
  if (fault) return reportSfuFault(ctx, st, fault, reply, "the JWT service", id, title, asked);
  if (reply.status === 401) {
    const userinfoFailed = ctx.rec.failed("openid.userinfo");
    ctx.rec.fail(id, title, asked, describeReply(reply),
      userinfoFailed
        ? "The service could not verify the OpenID token: the userinfo lookup fails (see OpenID userinfo above)."
        : "The service could not verify the OpenID token, although the doctor's own userinfo lookup works: the service's machine resolves or trusts differently (private DNS, private CA), or reaches another server.",
      userinfoFailed ? "Fix the userinfo lookup (above)." : "Test the lookup from the JWT service's machine: curl https://<server>/_matrix/federation/v1/openid/userinfo?access_token=x should answer 401 M_UNKNOWN_TOKEN.");
    return;
  }
  ctx.rec.fail(id, title, asked, describeReply(reply), "The JWT service refused the token request.", "See the JWT service's log; an old lk-jwt-service may need an upgrade.");
}

export async function checkLiveKit(ctx: DoctorContext): Promise<void> {
  const transports = (ctx.transports ?? []).filter((t) => LIVEKIT_TYPES.has(t.type) && !transportProblem(t, ctx.opts.insecureHttp));
  if (transports.length === 0) {
    ctx.rec.skip("livekit", "LiveKit", "each LiveKit transport", ctx.transports ? "no usable LiveKit transport (see above)" : "no transports known (see above)");
    return;
  }
  let openid: OpenIdToken | undefined | null;
  const memberId = `doctor-${randomBytes(6).toString("hex")}`;
  for (const [i, t] of transports.entries()) {
    const st: TransportState = { n: i + 1, authRecorded: false, tokens: [] };
    if (typeof t.url === "string") {
      st.sfuUrl = t.url;
      st.sfuReachable = await probeSfu(ctx, `livekit.${st.n}.sfu`, `#${st.n} SFU reachable`, t.url);
    }
    const serviceUp = typeof t.livekit_service_url === "string" ? await checkService(ctx, t, st) : false;
    if (!ctx.session || !ctx.roomId) {
      ctx.rec.skip(`livekit.${st.n}.token`, `#${st.n} LiveKit token`, "a LiveKit token for the transport", "needs credentials and the throwaway room");
      continue;
    }
    ctx.rec.progress(`asking for LiveKit tokens (transport #${st.n})`);
    if (typeof t.url === "string") await homeserverToken(ctx, t, st, memberId);
    if (typeof t.livekit_service_url === "string") {
      if (openid === undefined) openid = (await requestOpenId(ctx)) ?? null;
      if (!serviceUp) {
        ctx.rec.skip(`livekit.${st.n}.service-token`, `#${st.n} service token`, `POST ${join(String(t.livekit_service_url), "/get_token")}`, "the JWT service was not reached (see above)");
      } else if (openid) await serviceToken(ctx, t, st, openid, memberId);
    }
    const first = st.tokens[0];
    if (!first || st.authRecorded || st.verdict !== undefined) continue;
    if (st.sfuReachable === undefined) st.sfuReachable = await probeSfu(ctx, `livekit.${st.n}.sfu`, `#${st.n} SFU reachable`, first.sfuUrl);
    if (st.sfuReachable) await sfuVerdict(ctx, st, first);
  }
}
