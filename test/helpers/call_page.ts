/**
 * One Element Call participant for the end-to-end call tests: its own Chromium process (so a
 * test can SIGKILL it like a crash), Element Call logged in through localStorage, a log of the
 * requests the page sent to the homeserver, its console, and WebRTC statistics of every peer
 * connection the page opened.
 */
import type { Browser, BrowserServer, Page } from "playwright-core";
import { CHROMIUM, CHROMIUM_FLAGS } from "./element_call.js";

export interface SentRequest {
  method: string;
  path: string;
  body: unknown;
  status?: number;
  reply?: unknown;
  /** For /sync, the `since` token: the page has taken in everything before it. */
  since?: string;
  /** When the page sent it and when its answer came (ms since the epoch): orders requests across pages. */
  sentAt: number;
  answeredAt?: number;
}

/** What the page receives, summed over its peer connections' `inbound-rtp` reports. */
export interface Inbound {
  videoFramesDecoded: number;
  videoBytes: number;
  audioBytes: number;
}

export interface CallPage {
  page: Page;
  requests: SentRequest[];
  console: string[];
  inbound(): Promise<Inbound>;
  /** The end of a browser that crashes: SIGKILL to its process. */
  kill(): void;
  close(): Promise<void>;
}

interface PageGlobals {
  localStorage: { setItem(key: string, value: string): void };
  RTCPeerConnection: new (...args: unknown[]) => RtcPc;
  callPcs?: RtcPc[];
}
interface RtcPc {
  connectionState: string;
  getStats(): Promise<Map<string, Record<string, unknown>>>;
}

export async function openCallPage(opts: {
  appOrigin: string;
  homeserver: string;
  login: { user_id: string; device_id: string; access_token: string };
  roomId: string;
}): Promise<CallPage> {
  const { chromium } = await import("playwright-core");
  const server: BrowserServer = await chromium.launchServer({
    executablePath: CHROMIUM,
    headless: true,
    // The SFU offers only loopback candidates here.
    args: [...CHROMIUM_FLAGS, "--allow-loopback-in-peer-connection"],
  });
  const browser: Browser = await chromium.connect(server.wsEndpoint());
  const context = await browser.newContext({ permissions: ["camera", "microphone"], viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  const requests: SentRequest[] = [];
  const lines: string[] = [];
  page.on("console", (m) => lines.push(`${m.type()}: ${m.text()}`));
  page.on("request", (r) => {
    if (!r.url().startsWith(opts.homeserver)) return;
    let body: unknown;
    try {
      body = r.postData() ? JSON.parse(r.postData()!) : undefined;
    } catch {
      body = r.postData();
    }
    const url = new URL(r.url());
    const entry: SentRequest = { method: r.method(), path: decodeURIComponent(url.pathname), body, sentAt: Date.now() };
    if (url.searchParams.has("since")) entry.since = url.searchParams.get("since")!;
    requests.push(entry);
    void r
      .response()
      .then(async (res) => {
        entry.status = res?.status();
        if (res && /get_token|sfu\/get|delayed|\/state\/|\/send\/|\/keys\/query/.test(entry.path)) entry.reply = await res.json().catch(() => undefined);
        entry.answeredAt = Date.now();
      })
      .catch(() => undefined);
  });
  const auth = JSON.stringify({ ...opts.login, passwordlessUser: false });
  await page.addInitScript((value: string) => {
    const g = globalThis as unknown as PageGlobals;
    g.localStorage.setItem("matrix-auth-store", value);
    // Keep every peer connection, to read its statistics; the constructor is otherwise unchanged.
    const Original = g.RTCPeerConnection;
    const pcs: RtcPc[] = [];
    g.callPcs = pcs;
    const Wrapped = function (...args: unknown[]) {
      const pc = new Original(...args);
      pcs.push(pc);
      return pc;
    } as unknown as PageGlobals["RTCPeerConnection"];
    Wrapped.prototype = Original.prototype;
    Object.setPrototypeOf(Wrapped, Original);
    g.RTCPeerConnection = Wrapped;
  }, auth);
  await page.goto(`${opts.appOrigin}/room/#?roomId=${encodeURIComponent(opts.roomId)}`);
  return {
    page,
    requests,
    console: lines,
    inbound: () =>
      page.evaluate(async () => {
        const sum = { videoFramesDecoded: 0, videoBytes: 0, audioBytes: 0 };
        for (const pc of (globalThis as unknown as PageGlobals).callPcs ?? []) {
          if (pc.connectionState === "closed") continue;
          for (const report of (await pc.getStats()).values()) {
            if (report.type !== "inbound-rtp") continue;
            if (report.kind === "video") {
              sum.videoFramesDecoded += Number(report.framesDecoded ?? 0);
              sum.videoBytes += Number(report.bytesReceived ?? 0);
            } else if (report.kind === "audio") sum.audioBytes += Number(report.bytesReceived ?? 0);
          }
        }
        return sum;
      }),
    kill: () => server.process().kill("SIGKILL"),
    close: async () => {
      await browser.close().catch(() => undefined);
      await server.close().catch(() => undefined);
    },
  };
}
