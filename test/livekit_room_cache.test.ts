/**
 * What `get_token` asks of the SFU when many clients join one call: the LiveKit room is made
 * once per room and process for a few seconds (requests meanwhile share that creation, a failed
 * one is tried again, a `room_finished` webhook forgets it), the room service's own token is
 * reused, and the user's token is signed here with exactly the SDK's bytes.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { AccessToken, claimsToJwtPayload, TokenVerifier } from "livekit-server-sdk";
import { LiveKitTokenSigner } from "../src/services/livekit/jwt.js";
import { livekitRoomAlias } from "../src/services/livekit/naming.js";
import { RoomCache, ROOM_KNOWN_FOR_MS } from "../src/services/livekit/room_cache.js";
import { FakeLiveKit, LK_KEY, LK_SECRET, postWebhook, startLiveKitServer } from "./helpers/livekit.js";
import { User } from "./helpers/rooms.js";
import { request, type TestServer } from "./helpers/server.js";

const V1 = "/_matrix/client/v1/rtc/livekit";

describe("the LiveKit token signer", () => {
  test("signs the same bytes as the SDK's AccessToken, and the SDK verifies them", async () => {
    const grants = { roomJoin: true, room: "abc", canPublish: true, canSubscribe: true, canUpdateOwnMetadata: false, roomCreate: false, hidden: false };
    const signer = new LiveKitTokenSigner(LK_KEY, LK_SECRET, claimsToJwtPayload);
    // Both carry the current second: try again in the rare case a second ended between the two.
    for (let attempt = 0; ; attempt++) {
      const ours = signer.sign({ video: grants }, "@a:x|DEV|m", 3600);
      const sdk = new AccessToken(LK_KEY, LK_SECRET, { identity: "@a:x|DEV|m", ttl: 3600 });
      sdk.addGrant(grants);
      const theirs = await sdk.toJwt();
      if (ours !== theirs && attempt < 3) continue;
      assert.equal(ours, theirs);
      const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(ours);
      assert.equal(claims.sub, "@a:x|DEV|m");
      break;
    }
  });
});

describe("RoomCache", () => {
  const clock = { t: 1_000_000, now() { return this.t; } };

  test("concurrent callers share one creation; a made room is not made again until its entry expires", async () => {
    const cache = new RoomCache(clock);
    let made = 0;
    let release!: () => void;
    const create = () => new Promise<void>((resolve) => ((made++), (release = resolve)));
    const waiting = [cache.ensure("r", create), cache.ensure("r", create), cache.ensure("r", create)];
    assert.equal(made, 1);
    release();
    await Promise.all(waiting);
    await cache.ensure("r", async () => void made++);
    assert.equal(made, 1);
    clock.t += ROOM_KNOWN_FOR_MS;
    await cache.ensure("r", async () => void made++);
    assert.equal(made, 2);
  });

  test("a failed creation fails its waiters and is not kept: the next caller tries again", async () => {
    const cache = new RoomCache(clock);
    const failing = () => Promise.reject(new Error("SFU down"));
    const both = [cache.ensure("f", failing), cache.ensure("f", failing)];
    for (const p of both) await assert.rejects(p, /SFU down/);
    let made = 0;
    await cache.ensure("f", async () => void made++);
    assert.equal(made, 1);
    assert.equal(cache.size, 1);
  });

  test("forget drops a made room, but not a creation under way", async () => {
    const cache = new RoomCache(clock);
    let made = 0;
    await cache.ensure("g", async () => void made++);
    cache.forget("g");
    await cache.ensure("g", async () => void made++);
    assert.equal(made, 2);
    let release!: () => void;
    const pending = cache.ensure("h", () => new Promise<void>((resolve) => (release = resolve)));
    cache.forget("h");
    const again = cache.ensure("h", async () => void made++);
    release();
    await Promise.all([pending, again]);
    assert.equal(made, 2);
  });
});

describe("get_token against the SFU's room service", () => {
  let server: TestServer;
  let sfu: FakeLiveKit;
  let alice: User;
  let roomId: string;
  before(async () => {
    sfu = new FakeLiveKit();
    server = await startLiveKitServer({ livekit: { url: await sfu.start() } });
    alice = await User.register(server.baseUrl, "alice");
    roomId = await alice.createRoom({});
  });
  after(async () => {
    await server.stop();
    await sfu.stop();
  });

  const getToken = (slot: string, member: string) =>
    request(server.baseUrl, "POST", `${V1}/get_token`, { token: alice.token, body: { room_id: roomId, slot_id: slot, member_id: member } });
  const createsOf = (slot: string) => sfu.of("CreateRoom").filter((c) => c.body.name === livekitRoomAlias(roomId, slot));

  test("many requests for one call, at once and after, create its LiveKit room once", async () => {
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => getToken("burst", `m${i}`)));
    for (const res of answers) assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal((await getToken("burst", "late")).status, 200);
    assert.equal(createsOf("burst").length, 1);
  });

  test("CreateRoom for different rooms is authorised with one reused token, allowed to create rooms only", async () => {
    assert.equal((await getToken("one", "m")).status, 200);
    assert.equal((await getToken("two", "m")).status, 200);
    const [a, b] = [createsOf("one")[0]!, createsOf("two")[0]!];
    assert.equal(a.authorization, b.authorization);
    const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(a.authorization!.slice("Bearer ".length));
    assert.deepEqual(claims.video, { roomCreate: true });
  });

  test("a room_finished webhook for the room makes the next request create it again", async () => {
    assert.equal((await getToken("closed", "m")).status, 200);
    assert.equal(createsOf("closed").length, 1);
    assert.equal(await postWebhook(server.baseUrl, { event: "room_finished", room: { name: livekitRoomAlias(roomId, "closed") } }), 200);
    assert.equal((await getToken("closed", "m")).status, 200);
    assert.equal(createsOf("closed").length, 2);
  });
});
