/**
 * Element Call, the real app, in a real browser (Debian's headless Chromium),
 * logged in to Switchboard with LiveKit configured, in compatibility mode
 * (call membership as state events) and in Matrix 2.0 mode (sticky events).
 *
 * "Join call" must lead, in this order, to: the transports lookup, an OpenID
 * token, a LiveKit JWT from Switchboard's own service (verified here against
 * the configured secret), the delayed leave, and the membership join. A
 * matrix-js-sdk client running its sync loop in the same room sees the
 * member arrive.
 *
 * No LiveKit SFU can run on this machine (none is packaged for npm or
 * Debian). A local stand-in answers LiveKit's server API (the room service
 * calls Switchboard makes) and receives the browser's WebSocket connection
 * with the JWT, but cannot speak LiveKit's signalling protocol. It holds that
 * connection unanswered while the test takes its screenshot of the call, then
 * drops it: the app's LiveKit connection fails, the app leaves the call, and
 * the other client sees the membership cleared. Media, and the SFU's own
 * checks of the JWT, are beyond what can be tested here.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test, type TestContext } from "node:test";
import { TokenVerifier } from "livekit-server-sdk";
import type { MatrixClient } from "matrix-js-sdk";
import type { MatrixRTCSession } from "matrix-js-sdk/lib/matrixrtc/index.js";
import type { Browser, Page, Request } from "playwright-core";
import { finalised, waitFor } from "./helpers/delayed.js";
import { chromiumMissing, launchChromium, serveElementCall, type StaticApp } from "./helpers/element_call.js";
import { freePort } from "./helpers/ports.js";
import { FakeLiveKit, LK_KEY, LK_SECRET, NO_LIMIT } from "./helpers/livekit.js";
import { quietSdkLogs } from "./helpers/matrix-sdk.js";
import { enc, User } from "./helpers/rooms.js";
import { SdkClients } from "./helpers/sdk_clients.js";
import { startServer, teardown, type TestServer } from "./helpers/server.js";

const ARTIFACTS = fileURLToPath(new URL("../../test-artifacts/", import.meta.url));
const LK_PATH = "/livekit/jwt";
const CALL_MEMBER = "org.matrix.msc3401.call.member";
const RTC_MEMBER = "org.matrix.msc4143.rtc.member";
const DELAY = "org.matrix.msc4140.delay";
const STICKY = "org.matrix.msc4354.sticky_duration_ms";
const SLOT = "m.call#ROOM";
/** Guards against a hung test; no assertion depends on how long anything takes. */
const GIVE_UP_MS = 45_000;

type Mode = "compatibility" | "matrix_2_0";

/** One request the page sent to the homeserver, with its answer. */
interface Seen {
  seq: number;
  method: string;
  path: string;
  query: URLSearchParams;
  body: unknown;
  status?: number;
  failed?: string;
  reply?: unknown;
}

type Kind = "transports" | "openid" | "jwt" | "delayedLeave" | "join" | "leave";

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const MEMBER_WRITE = new RegExp(`/rooms/[^/]+/(state/${CALL_MEMBER}|send/${RTC_MEMBER})/[^/]+$`);

function kindOf(e: Seen): Kind | undefined {
  if (e.method === "GET" && e.path.endsWith("/rtc/transports")) return "transports";
  if (e.method === "POST" && /\/user\/[^/]+\/openid\/request_token$/.test(e.path)) return "openid";
  if (e.method === "POST" && (e.path === `${LK_PATH}/sfu/get` || e.path === `${LK_PATH}/get_token`)) return "jwt";
  if (e.method === "POST" && /\/delayed_events\/[^/]+\/send$/.test(e.path)) return "leave";
  if (e.method === "PUT" && MEMBER_WRITE.test(e.path)) {
    if (e.query.has(DELAY)) return "delayedLeave";
    // A join carries the call's details; a leave is empty content, or only the sticky key.
    return isObject(e.body) && "application" in e.body ? "join" : "leave";
  }
  return undefined;
}

/** Records, from the browser's side, every request the page sends to the homeserver and its status. */
class Recorder {
  readonly seen: Seen[] = [];
  readonly #pending: Promise<void>[] = [];
  #seq = 0;

  constructor(page: Page, origin: string) {
    const entries = new Map<Request, Seen>();
    page.on("request", (r) => {
      if (!r.url().startsWith(origin)) return;
      const url = new URL(r.url());
      let body: unknown;
      const text = r.postData();
      if (text) {
        try {
          body = JSON.parse(text);
        } catch {
          body = text;
        }
      }
      const entry: Seen = { seq: ++this.#seq, method: r.method(), path: decodeURIComponent(url.pathname), query: url.searchParams, body };
      entries.set(r, entry);
      this.seen.push(entry);
    });
    page.on("requestfinished", (r) => {
      const entry = entries.get(r);
      if (!entry) return;
      this.#pending.push(
        (async () => {
          const res = await r.response();
          entry.status = res?.status();
          if (res && kindOf(entry) !== undefined) entry.reply = await res.json().catch(() => undefined);
        })().catch((err: unknown) => {
          // A request that finishes while the page closes has no response left to read; the
          // entry then shows why instead of an unhandled rejection after the test.
          entry.failed ??= `response unreadable: ${err instanceof Error ? err.message : String(err)}`;
        }),
      );
    });
    page.on("requestfailed", (r) => {
      const entry = entries.get(r);
      if (entry) entry.failed = r.failure()?.errorText ?? "failed";
    });
  }

  /** Waits for the answers read so far. */
  async settle(): Promise<void> {
    await Promise.all(this.#pending);
  }

  mark(): number {
    return this.#seq;
  }

  /** The first request of this kind after `mark`, optionally matching `also`. */
  first(kind: Kind, mark: number, also: (e: Seen) => boolean = () => true): Seen | undefined {
    return this.seen.find((e) => e.seq > mark && kindOf(e) === kind && also(e));
  }

  /** One line per request, without query strings or bodies (they carry tokens). */
  log(): string {
    return this.seen
      .map((e) => `${String(e.seq).padStart(3)} ${e.method.padEnd(6)} ${e.path} -> ${e.status ?? e.failed ?? "pending"}${kindOf(e) ? `  [${kindOf(e)}]` : ""}`)
      .join("\n");
  }
}

/** unpaddedBase64(SHA-256(canonical JSON of an array of plain strings)), as lk-jwt-service names rooms and members. */
const hashed = (parts: string[]) => createHash("sha256").update(JSON.stringify(parts)).digest("base64").replace(/=+$/, "");

const skip = chromiumMissing();

describe("Element Call in headless Chromium against Switchboard", { skip, timeout: 240_000 }, () => {
  let lk: FakeLiveKit;
  let lkUrl: string;
  let server: TestServer;
  let serviceUrl: string;
  let browser: Browser;
  let sdk: SdkClients;
  const apps: StaticApp[] = [];
  const sessions: MatrixRTCSession[] = [];

  before(async () => {
    lk = new FakeLiveKit();
    lkUrl = await lk.start();
    // The advertised transport is public_baseurl + the service path, so the port must be known up front.
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    server = await startServer({
      public_baseurl: `${base}/`,
      listeners: [{ port, bind_addresses: ["127.0.0.1"] }],
      livekit: { url: lkUrl, api_key: LK_KEY, api_secret: LK_SECRET },
      rc_rtc_transports: NO_LIMIT,
    });
    assert.equal(server.baseUrl, base);
    serviceUrl = `${base}${LK_PATH}`;
    sdk = await SdkClients.create(server.baseUrl);
    await quietSdkLogs();
    browser = await launchChromium();
    mkdirSync(ARTIFACTS, { recursive: true });
  });

  after(() =>
    teardown(
      () => Promise.all(sessions.splice(0).map((s) => s.stop())),
      () => sdk?.stopAll(),
      () => browser?.close(),
      () => Promise.all(apps.splice(0).map((a) => a.close())),
      () => server?.stop(),
      () => lk?.stop(),
    ),
  );

  async function runCall(t: TestContext, mode: Mode, n: number): Promise<void> {
    const alice = await User.register(server.baseUrl, `ec_alice${n}`);
    const bob = await User.register(server.baseUrl, `ec_bob${n}`);
    // Members may write call membership state, as a room Element Call creates allows.
    const roomId = await alice.createRoom({
      name: `Call ${mode}`,
      invite: [bob.userId],
      power_level_content_override: { events: { [CALL_MEMBER]: 0, [RTC_MEMBER]: 0 } },
    });
    await bob.join(roomId);

    // Another member: matrix-js-sdk running its real sync loop, watching the room's MatrixRTC session.
    const bobClient: MatrixClient = await sdk.start({ user_id: bob.userId, access_token: bob.token, device_id: bob.deviceId });
    await sdk.until(bobClient, "the room", () => bobClient.getRoom(roomId) !== null);
    const session = bobClient.matrixRTC.getRoomSession(bobClient.getRoom(roomId)!);
    sessions.push(session);
    const aliceInCall = () => session.memberships.some((m) => m.sender === alice.userId && m.deviceId === alice.deviceId);

    const app = await serveElementCall({
      default_server_config: { "m.homeserver": { base_url: server.baseUrl, server_name: "localhost" } },
      ...(mode === "matrix_2_0" ? { matrix_rtc_mode: "matrix_2_0" } : {}),
    });
    apps.push(app);
    const context = await browser.newContext({ permissions: ["camera", "microphone"], viewport: { width: 1280, height: 720 } });
    const page = await context.newPage();
    const rec = new Recorder(page, server.baseUrl);
    const artifact = (suffix: string) => path.join(ARTIFACTS, `element-call-${mode}${suffix}`);
    try {
      // Logged in as Alice: Element Call reads its session from this localStorage key.
      const auth = JSON.stringify({ user_id: alice.userId, device_id: alice.deviceId, access_token: alice.token, passwordlessUser: false });
      type PageGlobals = { localStorage: { setItem(key: string, value: string): void } };
      await page.addInitScript((value: string) => (globalThis as unknown as PageGlobals).localStorage.setItem("matrix-auth-store", value), auth);
      await page.goto(`${app.origin}/room/#?roomId=${enc(roomId)}`);

      const joinButton = page.getByRole("button", { name: "Join call" });
      await joinButton.waitFor({ timeout: GIVE_UP_MS });
      // The SFU stand-in holds the browser's LiveKit connection until the call has been seen.
      lk.holdSignal();
      const attemptsBefore = lk.signalAttempts.length;
      const signalAttempts = () => lk.signalAttempts.slice(attemptsBefore);
      const mark = rec.mark();
      await joinButton.click();

      await waitFor("Bob's client to see Alice in the call", async () => (aliceInCall() ? true : undefined), GIVE_UP_MS);
      await waitFor("the browser's LiveKit connection", async () => (signalAttempts().length > 0 ? true : undefined), GIVE_UP_MS);
      // Let the call view render its tile before the picture.
      await page.getByText(alice.userId.slice(1, alice.userId.indexOf(":")), { exact: true }).first().waitFor({ timeout: GIVE_UP_MS });
      await page.screenshot({ path: artifact(".png") });
      t.diagnostic(`screenshot: ${artifact(".png")}`);
      await rec.settle();

      // 1-5, in order, from the click on.
      const transports = rec.first("transports", mark);
      const jwt = rec.first("jwt", mark);
      // The page asks for several OpenID tokens at once; the step that counts is the one whose token the JWT request carried.
      const carried = (jwt?.body as { openid_token?: { access_token?: string } } | undefined)?.openid_token?.access_token;
      const openid = rec.first("openid", mark, (e) => (e.reply as { access_token?: string } | undefined)?.access_token === carried);
      const delayedLeave = rec.first("delayedLeave", mark);
      const join = rec.first("join", mark);
      const sequence = { transports, openid, jwt, delayedLeave, join };
      for (const [name, e] of Object.entries(sequence)) {
        assert.ok(e, `no ${name} request after "Join call"; the page sent:\n${rec.log()}`);
        assert.equal(e.status, 200, `${name}: ${e.method} ${e.path} answered ${e.status ?? e.failed}`);
      }
      const order = [transports!, openid!, jwt!, delayedLeave!, join!].map((e) => e.seq);
      assert.deepEqual(order, [...order].sort((a, b) => a - b), `out of order (${order.join(", ")}):\n${rec.log()}`);

      // 1. Switchboard advertises its own JWT service, and that is where the page asked.
      const advertised = (transports!.reply as { rtc_transports: Record<string, unknown>[] }).rtc_transports;
      assert.deepEqual(advertised[0], { type: "livekit", url: lkUrl, livekit_service_url: serviceUrl });
      assert.ok(server.baseUrl + jwt!.path === `${serviceUrl}/${mode === "matrix_2_0" ? "get_token" : "sfu/get"}`, jwt!.path);

      // 2. An OpenID token of this server, which the JWT request then carried.
      assert.equal((openid!.reply as Record<string, unknown>).matrix_server_name, "localhost");

      // 3. A JWT signed with the configured secret, for this room and this member.
      const access = jwt!.reply as { jwt: string; url: string };
      assert.equal(access.url, lkUrl);
      const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(access.jwt);
      assert.equal(claims.iss, LK_KEY);
      const body = jwt!.body as Record<string, unknown>;
      const expectedRoom = hashed([roomId, mode === "matrix_2_0" ? String(body.slot_id) : SLOT]);
      if (mode === "matrix_2_0") {
        const member = body.member as { id: string; claimed_user_id: string; claimed_device_id: string };
        assert.equal(member.claimed_user_id, alice.userId);
        assert.equal(member.claimed_device_id, alice.deviceId);
        assert.equal(claims.sub, hashed([alice.userId, alice.deviceId, member.id]));
      } else {
        assert.equal(claims.sub, `${alice.userId}:${alice.deviceId}`);
      }
      assert.equal(claims.video?.room, expectedRoom);
      assert.equal(claims.video?.roomJoin, true);
      assert.equal(claims.video?.canPublish, true);
      assert.equal(claims.video?.canSubscribe, true);
      // Alice is a full-access user: the service created the LiveKit room (at the stand-in).
      assert.ok(lk.of("CreateRoom").some((c) => c.body.name === expectedRoom), "CreateRoom for the call's LiveKit room");
      // The browser then went to the SFU with a token Switchboard minted.
      const minted = new Set(rec.seen.filter((e) => kindOf(e) === "jwt").map((e) => (e.reply as { jwt?: string } | undefined)?.jwt));
      assert.ok(signalAttempts().every((a) => a.path.startsWith("/rtc") && minted.has(a.token ?? "")), JSON.stringify(signalAttempts()));

      // 4. The delayed leave, scheduled before the join.
      const delayId = (delayedLeave!.reply as { delay_id?: string }).delay_id;
      assert.equal(typeof delayId, "string");
      assert.match(delayedLeave!.query.get(DELAY) ?? "", /^[1-9][0-9]*$/);
      // 5. The join.
      const joinContent = join!.body as Record<string, unknown>;
      if (mode === "matrix_2_0") {
        assert.ok(delayedLeave!.path.includes(`/send/${RTC_MEMBER}/`) && delayedLeave!.query.has(STICKY), delayedLeave!.path);
        assert.ok(join!.path.includes(`/send/${RTC_MEMBER}/`) && join!.query.has(STICKY), join!.path);
        assert.deepEqual(joinContent.member, { device_id: alice.deviceId, user_id: alice.userId, id: (body.member as { id: string }).id });
        assert.equal(joinContent.slot_id, SLOT);
        assert.ok(JSON.stringify(joinContent.transports).includes(serviceUrl));
      } else {
        assert.ok(delayedLeave!.path.includes(`/state/${CALL_MEMBER}/`), delayedLeave!.path);
        assert.deepEqual(delayedLeave!.body, {}, "the delayed leave is the empty membership");
        assert.equal(join!.path, delayedLeave!.path, "the join and the leave write the same state key");
        assert.equal(joinContent.device_id, alice.deviceId);
        assert.equal(joinContent.application, "m.call");
        assert.ok(JSON.stringify(joinContent.foci_preferred).includes(serviceUrl));
      }

      // The SFU connection fails (nothing here can play LiveKit's signalling): the app leaves the call.
      const beforeFailure = rec.mark();
      lk.failSignal();
      // The app says why (its wording, as of Element Call 0.26).
      await page.getByText(/failed to connect to livekit/i).first().waitFor({ timeout: GIVE_UP_MS });
      await page.screenshot({ path: artifact("-sfu-failed.png") });
      await waitFor("Bob's client to see Alice's membership cleared", async () => (aliceInCall() ? undefined : true), GIVE_UP_MS);
      // The leave went out after the join: the app sends its delayed leave early (or an empty
      // membership) once the SFU fails; otherwise Switchboard sends it when the delay runs out.
      const leave = await finalised(alice, delayId!, GIVE_UP_MS);
      assert.equal(leave.outcome, "send");
      await rec.settle();
      const leaveRequest = rec.first("leave", join!.seq);
      if (leaveRequest) assert.ok(leaveRequest.seq > beforeFailure, `the app left before its SFU connection failed:\n${rec.log()}`);
      if (mode === "compatibility") {
        const key = join!.path.slice(join!.path.lastIndexOf("/") + 1);
        assert.deepEqual(await bob.getState(roomId, CALL_MEMBER, key), {}, "Alice's membership state is the empty leave");
      }

      // Everything else the page asked for was answered with success, except these, which are
      // what the app expects: probes, and the one feature this server lacks.
      const expected = [
        // The registration probe: a user-interactive-auth 401 tells it the flows.
        (e: Seen) => e.path.endsWith("/register") && e.status === 401,
        // Key backup is not implemented: the crypto stack takes the 404 as "no backup".
        (e: Seen) => e.path.endsWith("/room_keys/version") && e.status === 404,
        // Delegation probes: a bare POST, where anything but 404 means "supported".
        (e: Seen) => e.path.endsWith("/delegate_delayed_leave") && e.body === undefined && e.status !== 404,
      ];
      const unexpected = rec.seen.filter((e) => (e.status ?? 0) >= 400 && !expected.some((ok) => ok(e)));
      assert.deepEqual(unexpected.map((e) => `${e.method} ${e.path} ${e.status}`), [], rec.log());
    } finally {
      writeFileSync(artifact("-requests.txt"), rec.log() + "\n");
      await context.close();
    }
  }

  test("compatibility mode: state events and a delayed leave", async (t) => {
    await runCall(t, "compatibility", 1);
  });

  test("matrix_2_0 mode: sticky events", async (t) => {
    await runCall(t, "matrix_2_0", 2);
  });
});
