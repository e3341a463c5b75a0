/**
 * The OpenID userinfo lookup a separate JWT service (lk-jwt-service, or another homeserver's
 * bundled one) makes for this server's users, step by step as servers find each other:
 * `/.well-known/matrix/server`, SRV, then port 8448, over verified TLS.
 */
import { isIP } from "node:net";
import { systemDialer } from "../../services/livekit/outbound.js";
import { splitServerName } from "../../services/federation/discovery.js";
import { isObject, type DoctorContext } from "./context.js";
import { describeReply, errcodeOf, HttpFailure, isTlsError, type HttpReply } from "./http.js";

interface Target {
  host: string;
  port: number;
  /** The name the certificate must carry. */
  tlsName: string;
  how: string;
}

async function findTarget(ctx: DoctorContext, serverName: string, steps: string[]): Promise<Target> {
  const { host, port } = splitServerName(serverName);
  if (isIP(host) || port !== undefined) {
    steps.push(`${serverName} names its port or is an address: no delegation lookup`);
    return { host, port: port ?? 8448, tlsName: host, how: "as named" };
  }
  const scheme = ctx.opts.insecureHttp ? "http" : "https";
  try {
    const reply = await ctx.http.get(`${scheme}://${host}/.well-known/matrix/server`);
    const body = reply.json;
    if (reply.status === 200 && isObject(body) && typeof body["m.server"] === "string") {
      const delegated = splitServerName(body["m.server"]);
      steps.push(`/.well-known/matrix/server → ${body["m.server"]}`);
      if (isIP(delegated.host) || delegated.port !== undefined) {
        return { host: delegated.host, port: delegated.port ?? 8448, tlsName: delegated.host, how: "well-known" };
      }
      return srvOr8448(ctx, delegated.host, steps);
    }
    steps.push(`/.well-known/matrix/server → ${describeReply(reply)}`);
  } catch (err) {
    steps.push(`/.well-known/matrix/server → ${(err as HttpFailure).message}`);
  }
  return srvOr8448(ctx, host, steps);
}

async function srvOr8448(ctx: DoctorContext, host: string, steps: string[]): Promise<Target> {
  const dialer = ctx.opts.dialer ?? systemDialer;
  for (const service of ["_matrix-fed._tcp", "_matrix._tcp"]) {
    const records = await dialer.resolveSrv(`${service}.${host}`).catch(() => []);
    const usable = records.filter((r) => r.name && r.name !== ".").sort((a, b) => a.priority - b.priority || b.weight - a.weight);
    if (usable.length) {
      steps.push(`SRV ${service}.${host} → ${usable[0]!.name}:${usable[0]!.port}`);
      return { host: usable[0]!.name.replace(/\.$/, ""), port: usable[0]!.port, tlsName: host, how: "SRV" };
    }
  }
  steps.push(`no SRV record for ${host}: port 8448`);
  return { host, port: 8448, tlsName: host, how: "8448" };
}

const USERINFO_FIX =
  "Keep /_matrix/federation/v1/openid/userinfo reachable even without federation: Switchboard serves it on listeners whose resources include federation or openid; at the reverse proxy, pass that path through.";

export async function checkUserinfo(ctx: DoctorContext, openidToken: string, matrixServerName: string): Promise<void> {
  const { rec } = ctx;
  const id = "openid.userinfo";
  const title = "OpenID userinfo";
  const steps: string[] = [];
  const target = await findTarget(ctx, matrixServerName, steps);
  const scheme = ctx.opts.insecureHttp ? "http" : "https";
  const hostPart = isIP(target.host) === 6 ? `[${target.host}]` : target.host;
  const url = `${scheme}://${hostPart}:${target.port}/_matrix/federation/v1/openid/userinfo?access_token=`;
  const asked = `as a JWT service would, for ${matrixServerName}: ${steps.join("; ")}; GET ${url}…`;
  let reply: HttpReply;
  try {
    reply = await ctx.http.request("GET", url + encodeURIComponent(openidToken), { servername: isIP(target.tlsName) ? undefined : target.tlsName });
  } catch (err) {
    const failure = err as HttpFailure;
    // The step that failed leads `got`: TLS, or the connection to the target found by well-known, SRV or the 8448 fallback.
    if (isTlsError(failure)) {
      rec.fail(id, title, asked, `TLS failed (${target.host}:${target.port}, certificate for ${target.tlsName}): ${failure.message}`,
        `JWT services verify TLS: the certificate on ${target.host}:${target.port} is not one they trust (self-signed or private CA, or not for ${target.tlsName}).`,
        "Use a publicly trusted certificate for the federation endpoint.");
    } else if (target.how === "8448") {
      rec.fail(id, title, asked, `port 8448 failed (${target.host}:8448): ${failure.message}`,
        `No /.well-known/matrix/server and no SRV record, so JWT services try port 8448 on ${target.host}, which does not answer.`,
        "Serve /.well-known/matrix/server on the server name's host (Switchboard: serve_server_wellknown: true, and proxy /.well-known/matrix/), or open port 8448.");
    } else {
      rec.fail(id, title, asked, `connecting failed (${target.host}:${target.port}, from ${target.how}): ${failure.message}`,
        `JWT services cannot reach ${target.host}:${target.port}, found through ${target.how}.`,
        "Make that host and port reachable from the JWT service's machine, with the same DNS as the rest of the world.");
    }
    return;
  }
  const body = reply.json;
  if (reply.status === 200 && isObject(body) && typeof body.sub === "string") {
    const domain = body.sub.slice(body.sub.indexOf(":") + 1);
    if (body.sub !== ctx.session?.userId || domain !== matrixServerName) {
      rec.fail(id, title, asked, `200, sub ${body.sub}`, `The server reached is not the one the token names (sub ${body.sub}, matrix_server_name ${matrixServerName}): JWT services refuse it.`,
        "Make the server name's delegation (/.well-known/matrix/server, SRV) point at this homeserver.");
      return;
    }
    rec.pass(id, title, asked, `200, sub ${body.sub}${scheme === "http" ? " (over plain http because of --insecure-http; JWT services use https)" : ""}`);
    return;
  }
  if (reply.status === 401 && errcodeOf(reply) === "M_UNKNOWN_TOKEN") {
    rec.fail(id, title, asked, describeReply(reply), "A homeserver answered, but not the one that issued the token (another server behind that name, split DNS, or stale delegation).",
      "Point /.well-known/matrix/server (or SRV) of the server name at this homeserver.");
    return;
  }
  rec.fail(id, title, asked, describeReply(reply),
    "The userinfo path is not served there: blocked at the reverse proxy (often with the rest of /_matrix/federation/), or the listener lacks the federation/openid resource. JWT services then answer 401 M_UNAUTHORIZED and calls fail to connect.",
    USERINFO_FIX);
}
