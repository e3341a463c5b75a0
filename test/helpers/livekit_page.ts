/**
 * A bare LiveKit client in a browser page: LiveKit's own JS SDK (`livekit-client`), served
 * with an empty page, connecting with a token a test obtained (for example from MSC4195's
 * homeserver flow) and publishing the fake camera and microphone. Element Call 0.26.1 only
 * takes the OpenID path, so this is how the homeserver flow meets a real client.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import type { Browser, Page } from "playwright-core";
import { serveFixed, type StaticApp } from "./element_call.js";

interface LiveKitGlobals {
  LivekitClient: {
    Room: new () => {
      connect(url: string, token: string): Promise<void>;
      disconnect(): Promise<void>;
      localParticipant: { setCameraEnabled(on: boolean): Promise<unknown>; setMicrophoneEnabled(on: boolean): Promise<unknown> };
    };
  };
  lkRoom?: InstanceType<LiveKitGlobals["LivekitClient"]["Room"]>;
}

/** Serves the page: `/` (empty) and `/livekit-client.js` (the SDK's UMD build). */
export async function serveLiveKitPage(): Promise<StaticApp> {
  const require = createRequire(import.meta.url);
  const dist = path.dirname(require.resolve("livekit-client"));
  const sdk = readFileSync(path.join(dist, "livekit-client.umd.js"));
  return serveFixed({
    "/": { headers: { "content-type": "text/html" }, body: '<!doctype html><html><head><script src="/livekit-client.js"></script></head><body></body></html>' },
    "/livekit-client.js": { headers: { "content-type": "text/javascript" }, body: sdk },
  });
}

/** Opens the page, connects to the SFU with `jwt` and publishes camera and microphone. */
export async function connectLiveKit(browser: Browser, origin: string, url: string, jwt: string): Promise<Page> {
  const context = await browser.newContext({ permissions: ["camera", "microphone"] });
  const page = await context.newPage();
  await page.goto(`${origin}/`);
  await page.evaluate(
    async ([u, t]) => {
      const g = globalThis as unknown as LiveKitGlobals;
      const room = new g.LivekitClient.Room();
      await room.connect(u!, t!);
      g.lkRoom = room;
      await room.localParticipant.setCameraEnabled(true);
      await room.localParticipant.setMicrophoneEnabled(true);
    },
    [url, jwt],
  );
  return page;
}

/** Leaves the LiveKit room as a user hanging up would. */
export async function disconnectLiveKit(page: Page): Promise<void> {
  await page.evaluate(async () => {
    await (globalThis as unknown as LiveKitGlobals).lkRoom?.disconnect();
  });
}
