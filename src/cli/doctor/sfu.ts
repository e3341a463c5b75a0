/**
 * The LiveKit SFU as the client meets it. livekit-client checks a token with an HTTP GET on the
 * WebSocket URL's http(s) form, `/rtc/validate?access_token=…`, before it opens the WebSocket;
 * the doctor does the same, so a key or secret the SFU does not know shows up as its 401. Then
 * it opens the WebSocket itself (`/rtc?access_token=…`), because a reverse proxy that answers
 * plain HTTP but does not pass upgrades lets /rtc/validate through and still breaks every call.
 */
import type { DoctorContext } from "./context.js";
import { describeReply, HttpFailure, PlainHttpRefused, type HttpReply, type UpgradeReply } from "./http.js";
import { redact } from "./report.js";

/** `wss://host/path` → `https://host/path/rtc/validate` (or `…/rtc`, the WebSocket itself). */
export function validateUrl(sfuUrl: string, endpoint = "/rtc/validate"): string {
  const u = new URL(sfuUrl);
  u.protocol = u.protocol === "wss:" || u.protocol === "https:" ? "https:" : "http:";
  u.pathname = `${u.pathname.replace(/\/+$/, "")}${endpoint}`;
  u.search = "";
  return u.toString();
}

/** The query livekit-client sends with the token, on /rtc/validate and on the WebSocket alike. */
const clientQuery = (jwt: string) => `access_token=${encodeURIComponent(jwt)}&auto_subscribe=1&sdk=js&protocol=16`;

/** Whether the SFU answers HTTP at all (any status: without a token LiveKit says 401). */
export async function probeSfu(ctx: DoctorContext, id: string, title: string, sfuUrl: string): Promise<boolean> {
  const url = validateUrl(sfuUrl);
  const asked = `GET ${url} (no token), as the client's first contact with ${sfuUrl}`;
  try {
    const reply = await ctx.http.get(url);
    ctx.rec.pass(id, title, asked, `answers: ${describeReply(reply)}${reply.status === 401 ? " (as expected without a token)" : ""}`);
    return true;
  } catch (err) {
    if (err instanceof PlainHttpRefused) {
      ctx.rec.skip(id, title, asked, `${sfuUrl} is plain ws://: pass --insecure-http to test it`);
      return false;
    }
    ctx.rec.fail(id, title, asked, (err as HttpFailure).message,
      "Clients cannot open the SFU's WebSocket, so the call never connects (\"Waiting for media…\").",
      "Check the transport's / livekit.url host and port, the firewall, and that the reverse proxy in front of the SFU passes WebSocket upgrades.");
    return false;
  }
}

/** The SFU's verdict on a token the homeserver or JWT service issued: true when it accepted it. */
export async function validateJwt(ctx: DoctorContext, id: string, title: string, sfuUrl: string, jwt: string, source: string): Promise<boolean> {
  const url = validateUrl(sfuUrl);
  const asked = `GET ${url}?access_token=${redact(jwt)} (the token from ${source})`;
  let reply: HttpReply;
  try {
    reply = await ctx.http.get(`${url}?${clientQuery(jwt)}`);
  } catch (err) {
    if (err instanceof PlainHttpRefused) {
      ctx.rec.skip(id, title, asked, `${sfuUrl} is plain ws://: pass --insecure-http to test it`);
      return false;
    }
    ctx.rec.fail(id, title, asked, (err as HttpFailure).message, "The SFU did not answer.", "Make the SFU reachable from clients (see the LiveKit docs on ports).");
    return false;
  }
  if (reply.status === 200) {
    ctx.rec.pass(id, title, asked, "200: the SFU knows the API key and the signature matches its secret");
    return true;
  } else if (reply.status === 401) {
    ctx.rec.fail(id, title, asked, `${describeReply(reply)}: the SFU refused the token`,
      "The token is signed with an API key and secret that the SFU does not have: the JWT service's (or Switchboard's livekit.api_key / api_secret) differ from the SFU's keys:.",
      "Give the JWT service (Switchboard: livekit.api_key and livekit.api_secret[_path]) exactly a key and secret pair from the SFU's keys: section, and restart it.");
  } else if (reply.status === 404) {
    ctx.rec.fail(id, title, asked, describeReply(reply),
      "The LiveKit room does not exist on this SFU: the JWT service did not create it (it talks to another SFU, or the user is not full-access), and the SFU has room.auto_create off.",
      "Point the JWT service at the same SFU the transport names, and list this server in its full-access homeservers.");
  } else {
    ctx.rec.fail(id, title, asked, describeReply(reply), "The SFU refused the connection.", "See the SFU's log for this request.");
  }
  return false;
}

/**
 * The WebSocket itself, with a token the SFU has just accepted on /rtc/validate: anything but
 * 101 now is a hop that answers HTTP but does not pass the upgrade. Closed at once, no frame sent.
 */
export async function openRtcSocket(ctx: DoctorContext, id: string, title: string, sfuUrl: string, jwt: string): Promise<void> {
  const url = validateUrl(sfuUrl, "/rtc");
  const wsUrl = url.replace(/^http/, "ws");
  const asked = `WebSocket upgrade to ${wsUrl}?access_token=${redact(jwt)}, closed at once`;
  let reply: UpgradeReply;
  try {
    reply = await ctx.http.openWebSocket(`${url}?${clientQuery(jwt)}`);
  } catch (err) {
    if (err instanceof PlainHttpRefused) {
      ctx.rec.skip(id, title, asked, `${sfuUrl} is plain ws://: pass --insecure-http to test it`);
      return;
    }
    ctx.rec.fail(id, title, asked, (err as HttpFailure).message,
      "The SFU answered /rtc/validate but not the WebSocket: the proxy in front of the SFU does not pass WebSocket upgrades (or closes them).",
      "Pass WebSocket upgrades to the SFU (nginx: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"), with a read timeout of minutes.");
    return;
  }
  if (reply.status === 101 && reply.acceptOk) {
    ctx.rec.pass(id, title, asked, "101 Switching Protocols: the WebSocket opens");
  } else if (reply.status === 101) {
    ctx.rec.fail(id, title, asked, "101, but with a Sec-WebSocket-Accept that does not match the key sent",
      "Browsers drop this WebSocket: something between the client and the SFU answers the upgrade itself, wrongly.",
      "Let the reverse proxy pass the upgrade to the SFU untouched instead of answering it.");
  } else {
    ctx.rec.fail(id, title, asked, `${reply.description} instead of 101`,
      "The SFU answered /rtc/validate, but the WebSocket upgrade did not get through: the proxy in front of the SFU does not pass WebSocket upgrades, so calls never connect (\"Waiting for media…\").",
      "Pass WebSocket upgrades to the SFU (nginx: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\").");
  }
}
