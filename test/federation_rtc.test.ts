/**
 * MSC4195 over federation (issue #13 §2): a user asks their own homeserver for a token on another
 * homeserver's SFU (`server_name`), and their server relays the request to
 * `POST /_matrix/federation/v1/rtc/livekit/get_token`, signed with its key. The SFU's server
 * verifies the signature, that the user is the origin's and is joined, and issues a
 * subscribe-only token. Two Switchboards over TLS with a test CA; LiveKit's API is a stand-in.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { TokenVerifier } from "livekit-server-sdk";
import { livekitIdentity, livekitRoomAlias } from "../src/services/livekit/naming.js";
import { signedRequest, signerOf, TestFederation, type FederatedServer } from "./helpers/federation.js";
import { FakeLiveKit, LK_KEY, LK_SECRET } from "./helpers/livekit.js";
import { User } from "./helpers/rooms.js";
import { NO_LIMIT, request } from "./helpers/server.js";

const CLIENT = "/_matrix/client/unstable/io.element.msc4195/rtc/livekit/get_token";
const FED = "/_matrix/federation/v1/rtc/livekit/get_token";
const FED_UNSTABLE = "/_matrix/federation/unstable/io.element.msc4195/rtc/livekit/get_token";
const SLOT = "m.call#ROOM";

describe("MSC4195 get_token across homeservers", () => {
  const fed = new TestFederation(["a.test", "b.test", "nolk.test"]);
  const sfuA = new FakeLiveKit();
  const sfuB = new FakeLiveKit();
  let urlA: string;
  let a: FederatedServer;
  let b: FederatedServer;
  let nolk: FederatedServer;
  let bob: User;
  let bobRoom: string;
  let aliceRoom: string;

  const livekit = (url: string) => ({ rc_rtc_transports: NO_LIMIT, livekit: { url, api_key: LK_KEY, api_secret: LK_SECRET } });
  const ask = (body: Record<string, unknown>) => request(b.server.baseUrl, "POST", CLIENT, { token: bob.token, body });

  before(async () => {
    urlA = await sfuA.start();
    const urlB = await sfuB.start();
    await fed.frontsUp();
    a = await fed.start("a.test", livekit(urlA));
    b = await fed.start("b.test", livekit(urlB));
    nolk = await fed.start("nolk.test");
    bob = await User.register(b.server.baseUrl, "bob");
    bobRoom = await bob.createRoom({});
    const alice = await User.register(a.server.baseUrl, "alice");
    aliceRoom = await alice.createRoom({});
  });
  after(async () => {
    await fed.close();
    await sfuA.stop();
    await sfuB.stop();
  });

  /**
   * Until federation joins exist, bob's membership of alice's room is written into storage
   * directly, on the SFU's server and on his own, as a federated room would have it on both.
   */
  async function joinBob(on: FederatedServer): Promise<void> {
    const storage = on.server.homeserver.storage;
    if (!(await storage.rooms.getRoom(aliceRoom))) {
      await storage.rooms.createRoom({ roomId: aliceRoom, roomVersion: "11", creator: "@alice:a.test", createdTs: Date.now(), isPublic: false });
    }
    await storage.transaction((tx) =>
      tx.rooms.appendEvent({
        eventId: `$bobjoin-${on.name}`,
        roomId: aliceRoom,
        type: "m.room.member",
        stateKey: bob.userId,
        sender: bob.userId,
        originServerTs: Date.now(),
        depth: 10,
        json: JSON.stringify({ type: "m.room.member", state_key: bob.userId, sender: bob.userId, room_id: aliceRoom, content: { membership: "join" } }),
        membership: "join",
      }),
    );
  }

  test("not joined on the SFU's server: its 403 M_FORBIDDEN comes back, through a signed relay", async () => {
    const seen = a.front.requests.length;
    const res = await ask({ server_name: "a.test", url: urlA, room_id: bobRoom, slot_id: SLOT, member_id: "m1" });
    assert.equal(res.status, 403, JSON.stringify(res.body));
    assert.equal(res.body.errcode, "M_FORBIDDEN");
    // a.test saw the relayed request, and fetched b.test's key to check its signature.
    assert.ok(a.front.requests.slice(seen).includes(`POST ${FED}`));
    assert.ok(b.front.requests.includes("GET /_matrix/key/v2/server"), "a.test fetched b.test's key to verify the request");
  });

  test("an SFU URL that is not the remote server's: its 400 M_INVALID_PARAM comes back", async () => {
    const res = await ask({ server_name: "a.test", url: "wss://elsewhere.example", room_id: bobRoom, slot_id: SLOT, member_id: "m1" });
    assert.equal(res.status, 400);
    assert.equal(res.body.errcode, "M_INVALID_PARAM");
  });

  test("joined there: the relay brings a subscribe-only token for the member's identity; no room is created", async () => {
    await joinBob(a);
    await joinBob(b);
    const creates = sfuA.of("CreateRoom").length;
    const seen = a.front.requests.length;
    const res = await request(b.server.baseUrl, "POST", CLIENT, {
      token: bob.token,
      body: { server_name: "a.test", url: urlA, room_id: aliceRoom, slot_id: SLOT, member: { id: "m1", claimed_device_id: "BOBDEV" } },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(a.front.requests.slice(seen), [`POST ${FED}`]);
    const claims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(res.body.jwt as string);
    assert.equal(claims.sub, livekitIdentity(bob.userId, "BOBDEV", "m1"));
    assert.equal(claims.video?.room, livekitRoomAlias(aliceRoom, SLOT));
    assert.equal(claims.video?.canPublish, false, "remote users publish to their own server's SFU");
    assert.equal(claims.video?.canSubscribe, true);
    assert.notEqual(claims.video?.roomCreate, true);
    assert.equal(sfuA.of("CreateRoom").length, creates);
    // The newest body form (member_id alone) takes the requester's device.
    const newest = await ask({ server_name: "a.test", url: urlA, room_id: aliceRoom, slot_id: SLOT, member_id: "m2" });
    assert.equal(newest.status, 200, JSON.stringify(newest.body));
    const newestClaims = await new TokenVerifier(LK_KEY, LK_SECRET).verify(newest.body.jwt as string);
    assert.equal(newestClaims.sub, livekitIdentity(bob.userId, bob.deviceId, "m2"));
    // The unstable path serves the same.
    const unstable = await signedRequest(a, signerOf(b), "POST", FED_UNSTABLE, {
      body: { user_id: bob.userId, room_id: aliceRoom, slot_id: SLOT, member: { id: "m1", claimed_device_id: "BOBDEV" } },
    });
    assert.equal(unstable.status, 200, JSON.stringify(unstable.body));
  });

  test("the SFU's server refuses a user of another server, bad signatures, and missing fields", async () => {
    const body = { user_id: "@mallory:c.test", url: urlA, room_id: aliceRoom, slot_id: SLOT, member: { id: "m1", claimed_device_id: "D" } };
    const foreign = await signedRequest(a, signerOf(b), "POST", FED, { body });
    assert.equal(foreign.status, 403);
    assert.equal(foreign.body.errcode, "M_FORBIDDEN");
    const own = { ...body, user_id: bob.userId };
    const unsigned = await request(a.server.baseUrl, "POST", FED, { body: own });
    assert.equal(unsigned.status, 401);
    assert.equal(unsigned.body.errcode, "M_UNAUTHORIZED");
    const forged = await signedRequest(a, { ...signerOf(b), privateKey: generateKeyPairSync("ed25519").privateKey }, "POST", FED, { body: own });
    assert.equal(forged.status, 401);
    assert.equal(forged.body.errcode, "M_UNAUTHORIZED");
    const wrongDestination = await signedRequest(a, signerOf(b), "POST", FED, { body: own, destination: "nolk.test" });
    assert.equal(wrongDestination.status, 401);
    assert.equal(wrongDestination.body.errcode, "M_UNAUTHORIZED");
    const noDevice = await signedRequest(a, signerOf(b), "POST", FED, { body: { ...own, member: undefined, member_id: "m1" } });
    assert.equal(noDevice.status, 400);
    assert.equal(noDevice.body.errcode, "M_MISSING_PARAM");
    const noUser = await signedRequest(a, signerOf(b), "POST", FED, { body: { room_id: aliceRoom, slot_id: SLOT } });
    assert.equal(noUser.status, 400);
    assert.equal(noUser.body.errcode, "M_MISSING_PARAM");
    const notUser = await signedRequest(a, signerOf(b), "POST", FED, { body: { ...own, user_id: "bob" } });
    assert.equal(notUser.status, 400);
    assert.equal(notUser.body.errcode, "M_INVALID_PARAM");
  });

  test("a server without the endpoint (no LiveKit): both paths tried, then 502 M_UNKNOWN", async () => {
    const seen = nolk.front.requests.length;
    const res = await ask({ server_name: "nolk.test", url: "wss://sfu.nolk.test", room_id: bobRoom, slot_id: SLOT, member_id: "m1" });
    assert.equal(res.status, 502);
    assert.equal(res.body.errcode, "M_UNKNOWN");
    assert.deepEqual(nolk.front.requests.slice(seen).filter((r) => r.startsWith("POST")), [`POST ${FED}`, `POST ${FED_UNSTABLE}`]);
  });

  test("an unreachable server: 502 M_UNKNOWN; a room the user is not in here: 403 before any relay", async () => {
    const gone = await ask({ server_name: "gone.test", url: "wss://sfu.gone.test", room_id: bobRoom, slot_id: SLOT, member_id: "m1" });
    assert.equal(gone.status, 502);
    assert.equal(gone.body.errcode, "M_UNKNOWN");
    const seen = a.front.requests.length;
    const notHere = await ask({ server_name: "a.test", url: urlA, room_id: "!nowhere:b.test", slot_id: SLOT, member_id: "m1" });
    assert.equal(notHere.status, 403);
    assert.equal(notHere.body.errcode, "M_FORBIDDEN");
    assert.equal(a.front.requests.length, seen);
  });
});
