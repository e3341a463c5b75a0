/**
 * A real call: two Element Call 0.26.1 pages, each in its own headless Chromium with a fake
 * camera and microphone, as two users of one room, join the same call through Switchboard and a
 * real LiveKit SFU (livekit-server 1.11 on loopback): in compatibility mode (state events) in an
 * encrypted room, and in Matrix 2.0 mode (sticky events) in an unencrypted and an encrypted one
 * (the latter around a bug of Element Call 0.26.1's bundled matrix-js-sdk, ENCRYPTED_STICKY_BUG).
 *
 * Checked from the SFU's own API: both participants in the one LiveKit room, each publishing
 * audio and video. From each page: its WebRTC statistics show the other's media arriving and
 * being decoded (encrypted end to end, with keys sent as to-device messages through Switchboard).
 * Element Call 0.26.1 takes its token from the bundled JWT service (OpenID) in both modes; the
 * homeserver flow is exercised with LiveKit's own client in livekit_real_sfu.test.ts.
 *
 * Then one browser is killed: the other page shows the participant gone, Switchboard sends the
 * delayed leave that the page handed over (long before it would fire by itself), and the SFU
 * has no trace of it. How long each step took is written to test-artifacts, not asserted.
 */
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test, type TestContext } from "node:test";
import { TokenVerifier, TrackType } from "livekit-server-sdk";
import { openCallPage, type CallPage, type Inbound, type SentRequest } from "../helpers/call_page.js";
import { chromiumMissing, serveElementCall, type StaticApp } from "../helpers/element_call.js";
import { freePort } from "../helpers/ports.js";
import { eventually, NO_LIMIT } from "../helpers/livekit.js";
import { sfuMissing, startLiveKitSfu, type LiveKitSfu } from "../helpers/livekit_sfu.js";
import { quietSdkLogs } from "../helpers/matrix-sdk.js";
import { User } from "../helpers/rooms.js";
import { parseSyncToken } from "../../src/services/sync/tokens.js";
import { startServer, teardown, type TestServer } from "../helpers/server.js";

const ARTIFACTS = fileURLToPath(new URL("../../../test-artifacts/", import.meta.url));
const LK_PATH = "/livekit/jwt";
const CALL_MEMBER = "org.matrix.msc3401.call.member";
const RTC_MEMBER = "org.matrix.msc4143.rtc.member";
/** Guards against a hung test; no assertion depends on how long anything takes. */
const GIVE_UP_MS = 90_000;

type Mode = "compatibility" | "matrix_2_0";

/**
 * ENCRYPTED_STICKY_BUG, in Element Call 0.26.1's bundled matrix-js-sdk (git 24929be, before npm
 * 43.0.0, whose RoomStickyEventsStore waits for decryption): /sync hands each sticky event to the
 * room's sticky store at once, while an encrypted one is still `m.room.encrypted` (decryption is
 * asynchronous). So (1) the store's update names no call-membership event and the MatrixRTC
 * session never recalculates its members: no page sees any membership, its own included, no media
 * key is sent or set ("key set not found"), until something else (a room member change) makes it
 * recalculate, by when the events are decrypted; (2) the join sits in the store under
 * `m.room.encrypted` without its sticky key, so the clear sticky leave that the delayed event sends
 * does not replace it and the other page keeps showing the crashed participant. Synapse 1.163
 * serves an encrypted sticky event exactly as Switchboard does (same fields, in the timeline).
 */
const MEMBERS_CHANGED = /Memberships for call in room \S+ have changed: emitting \((\d+) members\)/;

/**
 * The workaround for (1): a change to Alice's room member event makes each page recalculate its
 * call members from the (by then decrypted) sticky events; repeated until both pages say they see
 * both members, since a page may not have decrypted both joins at the first change. A page that
 * re-joined (matrix-js-sdk's "Missing own membership: force re-join", which (1) provokes) counts
 * three: by (2), its first encrypted join is not replaced by its second.
 */
async function nudgeMembershipRecalculation(alice: User, roomId: string, pages: CallPage[]): Promise<void> {
  let n = 0;
  await eventually(
    async () => {
      const seesBoth = (c: CallPage) => c.console.some((l) => Number(MEMBERS_CHANGED.exec(l)?.[1]) >= 2);
      if (pages.every(seesBoth)) return true;
      await alice.putState(roomId, "m.room.member", alice.userId, { membership: "join", displayname: `Alice (${++n})` });
      await new Promise((resolve) => setTimeout(resolve, 2000));
      return pages.every(seesBoth) ? true : undefined;
    },
    GIVE_UP_MS,
    "both pages to see both call memberships",
  );
}

/**
 * Waits until each page's crypto has fetched the other page's device keys. Element Call offers
 * "Join call" before its crypto has uploaded this device's keys, and a page that joins before it
 * knows the other device shares its room key with nobody (the Rust SDK logs "The room key doesn't
 * need to be shared with anyone"): the other page can then never decrypt that join, which is right
 * for a device that did not exist yet, and not what this test is about. Two devices that have
 * shared a room before know each other; this makes the test start from there. Seen under CPU
 * load, when one page's first key upload was answered after the other page had already joined.
 */
async function devicesKnowEachOther(callers: CallPage[], users: User[]): Promise<void> {
  await Promise.all(
    callers.map((c, i) => {
      const other = users[1 - i]!;
      return eventually(
        () =>
          c.requests.some((r) => {
            const reply = r.reply as { device_keys?: Record<string, Record<string, unknown>> } | undefined;
            return r.path.endsWith("/keys/query") && r.status === 200 && reply?.device_keys?.[other.userId]?.[other.deviceId] !== undefined;
          })
            ? true
            : undefined,
        GIVE_UP_MS,
        `${users[i]!.userId}'s page to fetch the device keys of ${other.userId}`,
      );
    }),
  );
}

/**
 * Waits until each page has asked /sync for what comes after `position` of the events stream:
 * matrix-js-sdk sends its next /sync only once it has processed the answer before.
 */
async function syncedPast(callers: CallPage[], users: User[], position: number): Promise<void> {
  const past = (r: SentRequest) => r.path.endsWith("/sync") && r.since !== undefined && parseSyncToken(r.since).events >= position;
  await Promise.all(
    callers.map((c, i) => eventually(() => (c.requests.some(past) ? true : undefined), GIVE_UP_MS, `${users[i]!.userId}'s page to sync past both joins`)),
  );
}

const skip = sfuMissing() || chromiumMissing();

const localpart = (userId: string) => userId.slice(1, userId.indexOf(":"));

/**
 * What a failure message carries besides its own words (CI shows only the message): each page's
 * latest LiveKit and call lines, and the SFU's latest lines about the room's participants.
 */
function callDiagnostics(callers: CallPage[], names: string[], sfu: LiveKitSfu, lkRoom: string): string {
  const short = (l: string) => (l.length > 200 ? `${l.slice(0, 200)}…` : l);
  const pages = callers.map((c, i) => {
    const lines = c.console.filter((l) => /connection state changed|signal (connecting|connected|closed)|could not|failed to|ConnectionError|re-join|Participant (connected|disconnected)/i.test(l));
    return `${names[i]}'s page:\n  ${lines.slice(-8).map(short).join("\n  ")}`;
  });
  // "time LEVEL logger source message {fields}": the time, level, message and participant.
  const sfuLines = sfu
    .log()
    .split("\n")
    .filter((l) => l.includes(lkRoom) && /starting RTC session|participant (active|closing)|mediaTrack published|ERROR/.test(l))
    .map((l) => {
      const [time, level, , , msg] = l.split("\t");
      return `${time} ${level} ${msg} ${/"participant": "([^"]*)"/.exec(l)?.[1] ?? ""}`;
    });
  return `${pages.join("\n")}\nthe SFU:\n  ${sfuLines.slice(-10).map(short).join("\n  ")}`;
}

/** A request log line for the artifacts: bodies and replies too (not /sync's), with passwords and tokens left out. */
function requestLine(r: SentRequest): string {
  const hide = (key: string, value: unknown) => (/password|token/i.test(key) && typeof value === "string" ? "[hidden]" : value);
  const shown = r.path.includes("/sync") ? "" : ` ${JSON.stringify(r.body ?? null, hide)} ${JSON.stringify(r.reply ?? null, hide)}`;
  const time = (ms?: number) => (ms === undefined ? "-" : new Date(ms).toISOString().slice(11, 23));
  return `${time(r.sentAt)} ${time(r.answeredAt)} ${r.method} ${r.path} -> ${r.status ?? "-"}${shown}`;
}

describe("Element Call: two browsers in one encrypted call through a real LiveKit SFU", { skip, timeout: 900_000 }, () => {
  let sfu: LiveKitSfu;
  let server: TestServer;
  const pages: CallPage[] = [];
  const apps: StaticApp[] = [];

  before(async () => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    sfu = await startLiveKitSfu({ webhookUrl: `${base}${LK_PATH}/sfu_webhook` });
    server = await startServer({
      public_baseurl: `${base}/`,
      listeners: [{ port, bind_addresses: ["127.0.0.1"] }],
      livekit: { url: sfu.url, api_key: sfu.apiKey, api_secret: sfu.apiSecret },
      rc_rtc_transports: NO_LIMIT,
    });
    await quietSdkLogs();
    mkdirSync(ARTIFACTS, { recursive: true });
  });

  after(() =>
    teardown(
      () => Promise.all(pages.splice(0).map((p) => p.close())),
      () => Promise.all(apps.splice(0).map((a) => a.close())),
      () => server?.stop(),
      () => sfu?.stop(),
    ),
  );

  /** Waits until `read` shows more than `from` in every field that must grow. */
  async function growth(what: string, read: () => Promise<Inbound>, from: Inbound): Promise<Inbound> {
    return eventually(
      async () => {
        const now = await read();
        return now.videoFramesDecoded > from.videoFramesDecoded && now.audioBytes > from.audioBytes ? now : undefined;
      },
      GIVE_UP_MS,
      what,
    );
  }

  async function runCall(t: TestContext, mode: Mode, n: number, encrypted: boolean): Promise<void> {
    const timings: Record<string, number> = {};
    const alice = await User.register(server.baseUrl, `call_alice${n}`);
    const bob = await User.register(server.baseUrl, `call_bob${n}`);
    const roomId = await alice.createRoom({
      name: `Call ${mode}`,
      invite: [bob.userId],
      initial_state: encrypted ? [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }] : [],
      power_level_content_override: { events: { [CALL_MEMBER]: 0, [RTC_MEMBER]: 0 } },
    });
    await bob.join(roomId);
    const app = await serveElementCall({
      default_server_config: { "m.homeserver": { base_url: server.baseUrl, server_name: "localhost" } },
      ...(mode === "matrix_2_0" ? { matrix_rtc_mode: "matrix_2_0" } : {}),
    });
    apps.push(app);
    const users = [alice, bob];
    const callers: CallPage[] = [];
    for (const u of users) {
      const caller = await openCallPage({
        appOrigin: app.origin,
        homeserver: server.baseUrl,
        login: { user_id: u.userId, device_id: u.deviceId, access_token: u.token },
        roomId,
      });
      pages.push(caller);
      callers.push(caller);
    }
    const [pa, pb] = callers as [CallPage, CallPage];
    const artifact = (name: string) => path.join(ARTIFACTS, `element-call-sfu-${mode}${encrypted ? "" : "-unencrypted"}-${name}`);
    try {
      for (const c of callers) await c.page.getByRole("button", { name: "Join call" }).waitFor({ timeout: GIVE_UP_MS });
      if (encrypted) await devicesKnowEachOther(callers, users);
      const joinedAt = Date.now();
      await Promise.all(callers.map((c) => c.page.getByRole("button", { name: "Join call" }).click()));
      if (encrypted && mode === "matrix_2_0") {
        // Each page sent its join as an encrypted sticky event.
        await Promise.all(
          callers.map((c, i) =>
            eventually(
              () => c.requests.find((r) => r.method === "PUT" && r.path.includes("/send/m.room.encrypted/") && r.status === 200),
              GIVE_UP_MS,
              `${users[i]!.userId}'s encrypted sticky join`,
            ),
          ),
        );
        // Recalculating before a page has its own join makes it re-join (see ENCRYPTED_STICKY_BUG).
        await syncedPast(callers, users, server.homeserver.storage.streams.current("events"));
        await nudgeMembershipRecalculation(alice, roomId, callers);
      }

      // Each page got its token from Switchboard's bundled JWT service (Element Call 0.26.1's only path).
      const tokens = await Promise.all(
        callers.map((c, i) =>
          eventually(
            () => c.requests.find((r) => r.path.startsWith(LK_PATH) && /\/(get_token|sfu\/get)$/.test(r.path) && r.status === 200 && r.reply),
            GIVE_UP_MS,
            `${users[i]!.userId}'s LiveKit token`,
          ),
        ),
      );
      const claims = await Promise.all(tokens.map((r) => new TokenVerifier(sfu.apiKey, sfu.apiSecret).verify((r.reply as { jwt: string }).jwt)));
      const lkRoom = claims[0]!.video!.room!;
      assert.equal(claims[1]!.video!.room, lkRoom, "both in one LiveKit room");
      for (const c of callers) assert.equal(c.requests.filter((r) => /\/rtc\/livekit\/get_token$/.test(r.path)).length, 0, "no homeserver-flow token request");

      // The SFU sees both in that room, each publishing audio and video.
      let seen = "";
      const identities = await eventually(
        async () => {
          const ps = await sfu.rooms.listParticipants(lkRoom).catch(() => []);
          seen = JSON.stringify(ps.map((p) => ({ identity: p.identity, tracks: p.tracks.map((tr) => TrackType[tr.type]) })));
          const full = ps.filter((p) => {
            const kinds = new Set(p.tracks.map((tr) => tr.type));
            return kinds.has(TrackType.AUDIO) && kinds.has(TrackType.VIDEO);
          });
          return full.length === 2 ? full.map((p) => p.identity) : undefined;
        },
        GIVE_UP_MS,
        "both participants publishing audio and video on the SFU",
      ).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}; the SFU has ${seen}\n${callDiagnostics(callers, users.map((u) => u.userId), sfu, lkRoom)}`);
      });
      // Each participant joined with a token Switchboard's service minted for that page.
      const verifier = new TokenVerifier(sfu.apiKey, sfu.apiSecret);
      const minted = new Set<string>();
      for (const c of callers) {
        for (const r of c.requests.filter((x) => x.path.startsWith(LK_PATH) && (x.reply as { jwt?: string } | undefined)?.jwt)) {
          minted.add((await verifier.verify((r.reply as { jwt: string }).jwt)).sub!);
        }
      }
      assert.ok(identities.every((id) => minted.has(id)), `${JSON.stringify(identities)} not all in ${JSON.stringify([...minted])}`);
      timings.join_to_both_publishing_ms = Date.now() - joinedAt;

      // Each page receives and decodes the other's media, and keeps doing so.
      const zero: Inbound = { videoFramesDecoded: 0, videoBytes: 0, audioBytes: 0 };
      const first = await Promise.all(callers.map((c, i) => growth(`media at ${users[i]!.userId}'s page`, () => c.inbound(), zero)));
      timings.join_to_both_receiving_ms = Date.now() - joinedAt;
      const logMark = callers.map((c) => c.console.length);
      await Promise.all(callers.map((c, i) => growth(`more media at ${users[i]!.userId}'s page`, () => c.inbound(), first[i]!)));
      // Keys reached each page: no decryption failure while media kept being decoded.
      callers.forEach((c, i) => {
        const failures = c.console.slice(logMark[i]).filter((l) => /decrypt|MissingKey|InvalidKey/i.test(l) && /error|fail/i.test(l));
        assert.deepEqual(failures, [], `${users[i]!.userId}'s page`);
      });
      // Media keys went as to-device messages through Switchboard, each page to the other's device.
      if (encrypted) callers.forEach((c, i) => {
        const other = users[1 - i]!;
        const sent = c.requests.filter((r) => r.method === "PUT" && r.path.includes("/sendToDevice/") && r.status === 200);
        const toOther = sent.filter((r) => JSON.stringify((r.body as { messages?: unknown })?.messages ?? {}).includes(other.deviceId));
        assert.ok(toOther.length > 0, `${users[i]!.userId} sent no to-device message to ${other.userId}: ${sent.map((r) => r.path).join(", ")}`);
      });
      for (const [i, c] of callers.entries()) await c.page.screenshot({ path: artifact(`${i === 0 ? "alice" : "bob"}.png`) });
      // Bob's tile on Alice's page, before the crash.
      await pa.page.getByText(localpart(bob.userId), { exact: true }).first().waitFor({ timeout: GIVE_UP_MS });

      // The delayed leave Bob's page handed over to Switchboard: its latest one. The page may replace its
      // first: matrix-js-sdk's MembershipManager re-joins (cancelling the delayed leave it had and
      // scheduling another) when a membership update reaches it before its own join, and Element Call
      // then asks for a token again, carrying the new delay ID, which replaces the job.
      const scheduledByBob = () => pb.requests.filter((r) => r.method === "PUT").flatMap((r) => (r.reply as { delay_id?: string } | undefined)?.delay_id ?? []);
      const jobs = server.homeserver.services.livekit!.delegations;
      const bobJob = await eventually(
        async () => {
          const job = jobs.list().find((j) => j.userId === bob.userId && j.room === lkRoom && j.state === "connected" && identities.includes(j.identity));
          if (!job || scheduledByBob().at(-1) !== job.delayId) return undefined;
          return (await server.homeserver.storage.delayedEvents.get(job.delayId))?.status === "scheduled" ? job : undefined;
        },
        GIVE_UP_MS,
        "Bob's delegated leave, connected, holding the delayed leave his page scheduled last",
      ).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}; Bob's page scheduled ${JSON.stringify(scheduledByBob())}, the jobs are ${JSON.stringify(jobs.list())}`);
      });
      const delayId = bobJob.delayId;
      const bobIdentity = bobJob.identity;

      // Crash.
      const killedAt = Date.now();
      pb.kill();
      await Promise.all([
        // Not in an encrypted Matrix 2.0 call: Element Call 0.26.1 keeps Bob's encrypted join (see ENCRYPTED_STICKY_BUG).
        encrypted && mode === "matrix_2_0"
          ? Promise.resolve(t.diagnostic("Alice's page is not asked to show Bob gone: Element Call 0.26.1 keeps an encrypted sticky join after its clear leave"))
          : eventually(async () => ((await pa.page.getByText(localpart(bob.userId), { exact: true }).count()) === 0 ? true : undefined), GIVE_UP_MS, "Alice's page to show Bob gone").then(
              () => (timings.kill_to_gone_on_other_page_ms = Date.now() - killedAt),
            ),
        eventually(
          async () => ((await sfu.rooms.listParticipants(lkRoom).catch(() => [])).some((p) => p.identity === bobIdentity) ? undefined : true),
          GIVE_UP_MS,
          "the SFU to drop Bob",
        ).then(() => (timings.kill_to_gone_on_sfu_ms = Date.now() - killedAt)),
        eventually(
          async () => {
            const r = await server.homeserver.storage.delayedEvents.get(delayId);
            return r?.status === "finalised" ? r : undefined;
          },
          GIVE_UP_MS,
          "Bob's delegated leave to be sent",
        ).then((r) => {
          timings.kill_to_membership_cleared_ms = Date.now() - killedAt;
          assert.equal(r.outcome, "send");
          // Sent by the delegation, not by its own timer.
          assert.ok(r.finalisedTs! < r.sendAt, `finalised at ${r.finalisedTs}, due at ${r.sendAt}`);
        }),
      ]);
      if (mode === "compatibility") {
        const leaveRequest = pb.requests.find((r) => r.method === "PUT" && (r.reply as { delay_id?: string } | undefined)?.delay_id === delayId)!;
        const key = leaveRequest.path.slice(leaveRequest.path.lastIndexOf("/") + 1);
        assert.deepEqual(await alice.getState(roomId, CALL_MEMBER, key), {}, "Bob's membership state is the empty leave");
      }
      await pa.page.screenshot({ path: artifact("alice-after-crash.png") });
      // Alice hangs up: nothing of the call is left on the SFU.
      await pa.close();
      await eventually(async () => ((await sfu.rooms.listParticipants(lkRoom).catch(() => [])).length === 0 ? true : undefined), GIVE_UP_MS, "an empty LiveKit room");
      t.diagnostic(`${mode}: ${JSON.stringify(timings)}`);
    } finally {
      writeFileSync(artifact("timings.json"), JSON.stringify(timings, null, 2) + "\n");
      writeFileSync(artifact("sfu.log"), sfu.log());
      for (const [i, c] of callers.entries()) {
        writeFileSync(artifact(`${i === 0 ? "alice" : "bob"}-requests.txt`), c.requests.map(requestLine).join("\n") + "\n");
        writeFileSync(artifact(`${i === 0 ? "alice" : "bob"}-console.txt`), c.console.join("\n") + "\n");
      }
      await Promise.all(callers.map((c) => c.close()));
    }
  }

  test("compatibility mode (state events, encrypted room): media both ways, then a crash", async (t) => {
    await runCall(t, "compatibility", 1, true);
  });

  // Unencrypted, the whole flow holds for Matrix 2.0 mode, including the other page seeing the crash.
  test("matrix_2_0 mode (sticky events, unencrypted room): media both ways, then a crash", async (t) => {
    await runCall(t, "matrix_2_0", 2, false);
  });

  // Encrypted: everything Switchboard carries is checked (encrypted sticky joins, to-device media
  // keys, media both ways, the delegated leave); the two client-side gaps of ENCRYPTED_STICKY_BUG
  // are worked around (a membership recalculation) or left out (Alice's page seeing Bob gone).
  test("matrix_2_0 mode (sticky events, encrypted room): media both ways, then a crash", async (t) => {
    await runCall(t, "matrix_2_0", 3, true);
  });
});
