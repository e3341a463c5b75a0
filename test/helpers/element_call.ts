/**
 * Element Call (npm `@element-hq/element-call-embedded`, a built static web
 * app) served from a small HTTP server, and Debian's Chromium driven through
 * `playwright-core`, which never downloads a browser of its own. Other browser
 * tests use the Chromium launcher and `serveFixed` for pages of their own.
 */
import { createReadStream, existsSync, statSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { createRequire } from "node:module";
import path from "node:path";
import type { Browser } from "playwright-core";

/** Debian's `chromium` package (apt); CI installs it. */
export const CHROMIUM = "/usr/bin/chromium";

/** Headless, no sandbox (containers run as root), nothing phoning home, fake camera and microphone that need no prompt. */
export const CHROMIUM_FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
  "--disable-sync",
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
];

/** A reason to skip, only outside CI: in CI (`CI` set) `.ci/run` installs Chromium, so its absence must fail loudly. */
export function chromiumMissing(): string | false {
  if (existsSync(CHROMIUM) || process.env.CI) return false;
  return `${CHROMIUM} is absent (Debian package \`chromium\`; .ci/run installs it)`;
}

/** `extraArgs`: e.g. `--allow-loopback-in-peer-connection` for WebRTC with an SFU on loopback. */
export async function launchChromium(extraArgs: string[] = []): Promise<Browser> {
  const { chromium } = await import("playwright-core");
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_FLAGS, ...extraArgs] });
}

/** The app's `dist` folder inside the npm package. */
export function elementCallDist(): string {
  const require = createRequire(import.meta.url);
  return path.join(path.dirname(require.resolve("@element-hq/element-call-embedded/package.json")), "dist");
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".css": "text/css",
  ".json": "application/json",
  ".map": "application/json",
  // Streaming compilation of the crypto WASM needs the right type.
  ".wasm": "application/wasm",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".ttf": "font/ttf",
  ".mp3": "audio/mpeg",
  ".ogg": "audio/ogg",
};

export interface StaticApp {
  /** The page origin, e.g. `http://127.0.0.1:1234`. */
  origin: string;
  close(): Promise<void>;
}

/**
 * Serves the app as a single-page app: `/room/assets/*` (where the page
 * loads its scripts from when opened at `/room/`) maps to `dist/assets/*`,
 * `config.json` is the given one, and any other path gets `index.html`.
 */
export async function serveElementCall(config: Record<string, unknown>): Promise<StaticApp> {
  const dist = elementCallDist();
  const configJson = JSON.stringify(config);
  const server = http.createServer((req, res) => {
    let p: string;
    try {
      p = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    } catch {
      res.writeHead(400).end();
      return;
    }
    p = p.replace(/^\/room(?=\/)/, "");
    if (p === "/config.json") {
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(configJson);
      return;
    }
    let file = path.join(dist, path.normalize(p));
    if (!file.startsWith(dist + path.sep) || !existsSync(file) || !statSync(file).isFile()) file = path.join(dist, "index.html");
    res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
    createReadStream(file).pipe(res);
  });
  return listenOnLoopback(server);
}

/** What a fixed-response server answers at one path, whatever the method. */
export interface FixedResponse {
  headers: Record<string, string>;
  body: string | Buffer;
}

/**
 * A tiny web server of fixed responses by path (others get 404), on a loopback port of its
 * own: an origin of its own, for pages that must be cross-origin to the server under test.
 */
export async function serveFixed(routes: Record<string, FixedResponse>): Promise<StaticApp> {
  const server = http.createServer((req, res) => {
    const route = routes[new URL(req.url ?? "/", "http://x").pathname];
    if (route) res.writeHead(200, route.headers).end(route.body);
    else res.writeHead(404).end();
  });
  return listenOnLoopback(server);
}

async function listenOnLoopback(server: http.Server): Promise<StaticApp> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

