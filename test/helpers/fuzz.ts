/**
 * The fuzz run behind test/fuzz.test.ts and `npm run fuzz`: the route table of the real
 * server, one raw HTTP request per generated case (node:http, so that paths go out exactly as
 * written: `..`, `%00` and broken percent-encoding are not normalised away as `fetch` would),
 * and the checks every answer must pass.
 */
import http from "node:http";
import pino from "pino";
import { registerRoutes } from "../../src/api/routes.js";
import type { ListenerResource } from "../../src/config/sections/server.js";
import { createHttpApp } from "../../src/http/server.js";
import type { Services } from "../../src/services/index.js";
import { bodyCase, pathParam, queryString, type KnownIds, type Rng } from "./fuzz_inputs.js";

export interface RouteInfo {
  method: string;
  url: string;
  bodySchema: object | undefined;
}

/**
 * Every route `registerRoutes` adds for `resources`, read with an onRoute hook on a second app
 * built the way the homeserver builds its listeners (never started); the requests go to the
 * real server. Fastify's automatic HEAD and OPTIONS routes are left out.
 */
export async function collectRoutes(services: Services, resources: Set<ListenerResource>, livekitPrefix?: string): Promise<RouteInfo[]> {
  const app = createHttpApp({ logger: pino({ level: "silent" }), bodyLimit: 1024, trustProxy: false, ownCorsPrefix: livekitPrefix });
  const routes: RouteInfo[] = [];
  app.addHook("onRoute", (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const bodySchema = (route.schema as { body?: object } | undefined)?.body;
    for (const method of methods) if (method !== "HEAD" && method !== "OPTIONS") routes.push({ method, url: route.url, bodySchema });
  });
  registerRoutes(app, services, resources);
  await app.ready();
  await app.close();
  return routes;
}

/** The route's path with every `:param` replaced. */
export function fillPath(url: string, param: (name: string) => string): string {
  return url
    .split("/")
    .map((seg) => (seg.startsWith(":") ? param(seg.slice(1)) : seg))
    .join("/");
}

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

/** One raw request; rejects if no answer comes within `timeoutMs` (a hang guard, not a speed limit). */
export function send(
  baseUrl: string,
  method: string,
  path: string,
  headers: Record<string, string>,
  body: string | undefined,
  timeoutMs = 30_000,
): Promise<Answer> {
  const base = new URL(baseUrl);
  // Node sends a GET's or DELETE's body without a length unless told; a real client states it.
  if (body !== undefined) headers = { ...headers, "content-length": String(Buffer.byteLength(body)) };
  return new Promise((resolve, reject) => {
    const req = http.request({ agent, host: base.hostname, port: base.port, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
    // A body refused early (413) may end the connection while it is still being written.
    req.on("socket", (s) => s.on("error", () => undefined));
    req.end(body);
  });
}

export function closeFuzzAgent(): void {
  agent.destroy();
}

export interface FuzzCase {
  route: RouteInfo;
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string | undefined;
  label: string;
}

export interface Tokens {
  /** The token of the user whose data is compared before and after. */
  valid: string;
  /** For routes that would end `valid`'s session or membership if they succeeded. */
  throwaway: (route: RouteInfo) => string | undefined;
}

function authHeader(rng: Rng, route: RouteInfo, tokens: Tokens): { header?: string; label: string } {
  const federation = route.url.startsWith("/_matrix/federation/") || route.url.startsWith("/_matrix/key/");
  const r = rng.int(federation ? 12 : 10);
  if (r < 3) return { label: "no auth" };
  if (r < 7) return { header: `Bearer ${tokens.throwaway(route) ?? tokens.valid}`, label: "valid token" };
  if (r === 7) return { header: "Bearer syt_not_a_real_token", label: "unknown token" };
  if (r === 8) return { header: rng.pick(["Bearer", "Bearer a b", "Basic YTpi", "bearer\u00e9", ""]), label: "malformed auth" };
  return {
    header: rng.pick([
      'X-Matrix origin="localhost",key="ed25519:a",sig="abc"',
      'X-Matrix origin=localhost,destination=localhost,key="ed25519:a",sig="%00"',
      "X-Matrix origin=",
      'X-Matrix origin="\u00e9",key="",sig=""',
      "X-Matrix " + "a=b,".repeat(1000),
    ]),
    label: "X-Matrix",
  };
}

/** One generated request for `route`; all randomness is drawn here, before anything is sent. */
export function makeCase(rng: Rng, route: RouteInfo, ids: KnownIds, tokens: Tokens, bodyLimit: number): FuzzCase {
  const method = route.method === "GET" && rng.chance(0.1) ? "HEAD" : route.method;
  const path = fillPath(route.url, (name) => pathParam(rng, name, ids)) + queryString(rng);
  const headers: Record<string, string> = {};
  const auth = authHeader(rng, route, tokens);
  if (auth.header !== undefined) headers.authorization = auth.header;
  const sendsBody = method !== "GET" && method !== "HEAD" ? rng.chance(0.95) : rng.chance(0.1);
  const body = sendsBody ? bodyCase(rng, route.bodySchema as never, ids, bodyLimit) : { text: undefined, contentType: undefined, label: "no body" };
  if (body.contentType !== undefined) headers["content-type"] = body.contentType;
  return { route, method, path, headers, body: body.text, label: `${auth.label}, ${body.label}` };
}

/**
 * The LiveKit service answers as lk-jwt-service does: CORS headers only on its token endpoints
 * (a browser never calls the health check or LiveKit's webhook), and empty 405 bodies.
 */
export function livekitWithoutCors(pathUnderPrefix: string): boolean {
  return !/^(get_token|sfu\/get|delegate_delayed_leave)(\?|$)/.test(pathUnderPrefix);
}

/** What is wrong with an answer, or undefined when nothing is. */
export function problemWith(c: FuzzCase, a: Answer, livekitPrefix: string | undefined): string | undefined {
  if (a.status >= 500) return `${a.status}: ${a.text.slice(0, 300)}`;
  const livekit = livekitPrefix !== undefined && c.path.startsWith(livekitPrefix);
  if (!(livekit && livekitWithoutCors(c.path.slice(livekitPrefix.length))) && a.headers["access-control-allow-origin"] !== "*") {
    return `${a.status} without the CORS header`;
  }
  if (a.status < 400 || c.method === "HEAD") return undefined;
  if (livekit && a.status === 405 && a.text === "") return undefined;
  let body: unknown;
  try {
    body = JSON.parse(a.text);
  } catch {
    return `${a.status} with a body that is not JSON: ${a.text.slice(0, 200)}`;
  }
  const b = body as Record<string, unknown> | null;
  // User-interactive authentication answers 401 with its flows, and an errcode only after a failed stage.
  if (a.status === 401 && b && Array.isArray(b.flows) && b.errcode === undefined) return undefined;
  if (!b || typeof b.errcode !== "string" || !b.errcode.startsWith("M_") || typeof b.error !== "string") {
    return `${a.status} without the Matrix error envelope: ${a.text.slice(0, 200)}`;
  }
  return undefined;
}

export function describeCase(c: FuzzCase): string {
  const body = c.body === undefined ? "(none)" : JSON.stringify(c.body.length > 160 ? `${c.body.slice(0, 160)}… (${c.body.length} chars)` : c.body);
  const path = c.path.length > 200 ? `${c.path.slice(0, 200)}… (${c.path.length} chars)` : c.path;
  return `${c.method} ${path} [${c.label}] headers=${JSON.stringify(c.headers).slice(0, 200)} body=${body}`;
}
