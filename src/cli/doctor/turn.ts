/** TURN: the credentials the homeserver hands out, tried for real against each TURN URI. */
import { isObject, type DoctorContext } from "./context.js";
import { describeError, describeReply, trustedCas } from "./http.js";
import { redact } from "./report.js";
import { call } from "./session.js";
import { allocate, streamChannel, StunTimeout, udpChannel, type StunChannel } from "./stun.js";

interface TurnUri {
  secure: boolean;
  host: string;
  port: number;
  /**
   * What clients try: the one named, TCP (TLS) for `turns:`, and for a `turn:` URI without
   * `?transport=` both UDP and TCP (RFC 7065 leaves it to the client, and browsers use both).
   */
  transports: ("udp" | "tcp")[];
}

/** `turn:host[:port][?transport=udp|tcp]`, `turns:…`; undefined for anything else. */
export function parseTurnUri(uri: string): TurnUri | undefined {
  const m = /^(turns?):(\[[^\]]+\]|[^:?]+)(?::(\d+))?(?:\?transport=(udp|tcp))?$/i.exec(uri.trim());
  if (!m) return undefined;
  const secure = m[1]!.toLowerCase() === "turns";
  return {
    secure,
    host: m[2]!.replace(/^\[|\]$/g, ""),
    port: m[3] ? Number(m[3]) : secure ? 5349 : 3478,
    transports: secure ? ["tcp"] : m[4] ? [m[4].toLowerCase() as "udp" | "tcp"] : ["udp", "tcp"],
  };
}

export async function checkTurn(ctx: DoctorContext): Promise<void> {
  const { rec } = ctx;
  const path = "/_matrix/client/v3/voip/turnServer";
  const asked = `GET ${path}`;
  if (!ctx.session) {
    rec.skip("turn", "TURN credentials", asked, "needs an access token");
    return;
  }
  const reply = await call(ctx, "GET", path);
  const body = typeof reply === "string" ? undefined : reply.json;
  if (typeof reply === "string" || reply.status !== 200 || !isObject(body)) {
    rec.fail("turn", "TURN credentials", asked, typeof reply === "string" ? reply : describeReply(reply), "Clients cannot get TURN credentials.", "See the homeserver's log for this request.");
    return;
  }
  const uris = Array.isArray(body.uris) ? body.uris.filter((u): u is string => typeof u === "string") : [];
  if (uris.length === 0) {
    rec.warn("turn", "TURN credentials", asked, "200 {}: no TURN server configured",
      "Clients behind strict NATs cannot relay media for 1:1 calls; LiveKit group calls use the SFU's own TURN instead.",
      "Set turn_uris and turn_shared_secret (the same value as coturn's static-auth-secret).");
    return;
  }
  const username = typeof body.username === "string" ? body.username : "";
  const password = typeof body.password === "string" ? body.password : "";
  rec.pass("turn", "TURN credentials", asked, `200, ${uris.length} URI${uris.length === 1 ? "" : "s"}, username ${username}, password ${redact(password)}, ttl ${String(body.ttl)}`);
  for (const [i, uri] of uris.entries()) {
    const target = parseTurnUri(uri);
    if (!target) {
      rec.fail(`turn.${i + 1}`, `TURN ${uri}`, `Allocate on ${uri} with those credentials`, "not a turn: or turns: URI", "Clients skip a TURN URI they cannot read.",
        "Write it as turn:HOST:PORT?transport=udp (or tcp), or turns:HOST:PORT.");
      continue;
    }
    const both = target.transports.length > 1;
    for (const transport of target.transports) {
      await allocateOn(ctx, both ? `turn.${i + 1}.${transport}` : `turn.${i + 1}`, uri, target, transport, both, username, password);
    }
  }
}

/** One real Allocate on one URI over one transport, released at once. */
async function allocateOn(ctx: DoctorContext, id: string, uri: string, target: TurnUri, transport: "udp" | "tcp", both: boolean, username: string, password: string): Promise<void> {
  const { rec } = ctx;
  const title = `TURN ${uri.split("?")[0]} ${transport}`;
  const allocAsked = `Allocate on ${uri}${both ? ` over ${transport.toUpperCase()} (no ?transport=, so clients try UDP and TCP)` : ""} with those credentials`;
  rec.progress(`TURN Allocate on ${uri} (${transport})`);
  const timeoutMs = Math.min(ctx.opts.timeoutMs ?? 10_000, 5_000);
  let channel: StunChannel | undefined;
  try {
    channel = transport === "udp"
      ? await udpChannel(target.host, target.port, timeoutMs)
      : await streamChannel(target.host, target.port, timeoutMs, target.secure ? { ca: trustedCas(ctx.opts.ca) } : undefined);
    const outcome = await allocate(channel, username, password);
    if (outcome.ok) {
      rec.pass(id, title, allocAsked, `allocated${outcome.relayed ? ` relay ${outcome.relayed}` : ""}${outcome.realm ? ` (realm ${outcome.realm})` : ""}, then released it`);
    } else if (outcome.stage === "credentials" && outcome.errorCode === 401) {
      rec.fail(id, title, allocAsked, `401 ${outcome.reason ?? "Unauthorized"} after sending the credentials`,
        "The TURN server does not accept the homeserver's credentials: turn_shared_secret differs from the TURN server's static-auth-secret (or the clocks differ by more than the credential's lifetime).",
        "Set turn_shared_secret to exactly coturn's static-auth-secret (with use-auth-secret), and keep both machines' clocks in sync.");
    } else {
      rec.fail(id, title, allocAsked, `error ${outcome.errorCode ?? "?"} ${outcome.reason ?? ""} (${outcome.stage === "challenge" ? "to the first, unauthenticated request" : "with the credentials"})`.trim(),
        "The TURN server refused the allocation.", "See the TURN server's log (quota, allowed peers, realm).");
    }
  } catch (err) {
    const why = err instanceof StunTimeout ? err.message : describeError(err);
    rec.fail(id, title, allocAsked, why, `Nothing answered TURN on ${target.host}:${target.port} over ${target.secure ? "TLS" : transport.toUpperCase()}.`,
      both
        ? `Check that the TURN server runs and listens on that port over ${transport.toUpperCase()} too, and that the firewall lets ${transport.toUpperCase()} through; or name the one transport it serves with ?transport=.`
        : "Check that the TURN server runs, listens on that address and port, and that the firewall lets it through (UDP too).");
  } finally {
    channel?.close();
  }
}
