/**
 * `npm run bench`, the call: how long from "Join call" until two Element Call 0.26.1 pages (each
 * in its own headless Chromium with a fake camera and microphone) both receive and decode each
 * other's media, through Switchboard and a real LiveKit SFU on loopback, in an encrypted room in
 * compatibility mode. A figure to watch, with no target; prints one JSON document. Without the
 * SFU binary or Chromium it reports why it was skipped.
 */
import { chromiumMissing, serveElementCall } from "../test/helpers/element_call.js";
import { freePort } from "../test/helpers/ports.js";
import { openCallPage, type CallPage, type Inbound } from "../test/helpers/call_page.js";
import { sfuMissing, startLiveKitSfu } from "../test/helpers/livekit_sfu.js";
import { User } from "../test/helpers/rooms.js";
import { startServer } from "../test/helpers/server.js";
import { printReport, runMain } from "./entry.js";

const GIVE_UP_MS = 120_000;
const log = (msg: string) => console.error(`[bench call] ${msg}`);

async function until<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + GIVE_UP_MS;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function main(): Promise<number> {
  const skipped = sfuMissing() || chromiumMissing();
  if (skipped) return printReport({ benchmark: "Element Call join to media", skipped }, [], [], log);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const sfu = await startLiveKitSfu({ webhookUrl: `${base}/livekit/jwt/sfu_webhook` });
  const pages: CallPage[] = [];
  const server = await startServer({
    public_baseurl: `${base}/`,
    listeners: [{ port, bind_addresses: ["127.0.0.1"] }],
    livekit: { url: sfu.url, api_key: sfu.apiKey, api_secret: sfu.apiSecret },
  }).catch(async (err: unknown) => {
    await sfu.stop();
    throw err;
  });
  const app = await serveElementCall({ default_server_config: { "m.homeserver": { base_url: server.baseUrl, server_name: "localhost" } } });
  try {
    const alice = await User.register(server.baseUrl, "bench_alice");
    const bob = await User.register(server.baseUrl, "bench_bob");
    const roomId = await alice.createRoom({
      invite: [bob.userId],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
      power_level_content_override: { events: { "org.matrix.msc3401.call.member": 0 } },
    });
    await bob.join(roomId);
    for (const u of [alice, bob]) {
      pages.push(await openCallPage({ appOrigin: app.origin, homeserver: server.baseUrl, login: { user_id: u.userId, device_id: u.deviceId, access_token: u.token }, roomId }));
    }
    for (const p of pages) await p.page.getByRole("button", { name: "Join call" }).waitFor({ timeout: GIVE_UP_MS });
    log("both pages ready; joining");
    const joined = Date.now();
    await Promise.all(pages.map((p) => p.page.getByRole("button", { name: "Join call" }).click()));
    const receiving = (i: Inbound) => i.videoFramesDecoded > 0 && i.audioBytes > 0;
    const each = await Promise.all(pages.map((p, i) => until(`media at page ${i}`, async () => (receiving(await p.inbound()) ? Date.now() - joined : undefined))));
    const report = {
      benchmark: "Element Call 0.26.1: from clicking Join call (both pages at once) to both pages decoding the other's audio and video",
      date: new Date().toISOString(),
      mode: "compatibility, encrypted room",
      sfu: "livekit-server 1.11 on loopback",
      join_to_each_page_receiving_ms: each,
      join_to_both_receiving_ms: Math.max(...each),
    };
    log(`both receiving after ${report.join_to_both_receiving_ms} ms`);
    return printReport(report, [], [], log);
  } finally {
    await Promise.all(pages.map((p) => p.close()));
    await app.close();
    await server.stop();
    await sfu.stop();
  }
}

runMain(main);
