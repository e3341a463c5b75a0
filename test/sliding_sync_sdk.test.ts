/**
 * matrix-js-sdk 43's `SlidingSync` (simplified sliding sync, in the dialect Synapse speaks)
 * against Switchboard: the room list growing range by range with an exact count, a room
 * subscription, lazy members, every extension, incremental updates, and a connection that
 * expires and is started again after `M_UNKNOWN_POS`.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { MatrixClient, MatrixEvent } from "matrix-js-sdk";
import type { MSC3575List, SlidingSync } from "matrix-js-sdk/lib/sliding-sync.js";
import { loadSdk, quietSdkLogs } from "./helpers/matrix-sdk.js";
import { enc, ok, User } from "./helpers/rooms.js";
import { SdkClients } from "./helpers/sdk_clients.js";
import { startServer, type TestServer } from "./helpers/server.js";

const DAY = 24 * 3600_000;
/** Long-polls of a few seconds keep the loop turning; no assertion depends on it. */
const POLL_MS = 2000;
/** A guard against a hung test, not a performance assertion. */
const GIVE_UP_MS = 20_000;

let offset = 0;
const clock = { now: () => Date.now() + offset };
let server: TestServer;
let sdk: Awaited<ReturnType<typeof loadSdk>>;
let slidingSyncModule: typeof import("matrix-js-sdk/lib/sliding-sync.js");
let n = 0;
const running: { client: MatrixClient; sync: SlidingSync }[] = [];

before(async () => {
  server = await startServer({}, { clock });
  await SdkClients.create(server.baseUrl); // patches the SDK's long timers and Promise.withResolvers
  sdk = await loadSdk();
  slidingSyncModule = await import("matrix-js-sdk/lib/sliding-sync.js");
});
after(async () => {
  for (const { client, sync } of running) {
    sync.stop();
    client.stopClient();
  }
  await server?.stop();
});

const user = () => User.register(server.baseUrl, `sss${++n}`);

const LIST: MSC3575List = {
  ranges: [[0, 2]],
  timeline_limit: 5,
  required_state: [
    ["m.room.name", ""],
    ["m.room.member", "$ME"],
    ["m.room.member", "$LAZY"],
  ],
};

async function startSliding(u: User, lists: Record<string, MSC3575List> = { all: LIST }, opts: { rustCrypto?: boolean } = {}) {
  const client = sdk.createClient({ baseUrl: server.baseUrl, accessToken: u.token, userId: u.userId, deviceId: u.deviceId });
  // The Rust crypto stack (WASM), in memory: with it the SDK also asks for the e2ee extension.
  if (opts.rustCrypto) await client.initRustCrypto({ useIndexedDB: false });
  const sync = new slidingSyncModule.SlidingSync(server.baseUrl, new Map(Object.entries(lists)), { timeline_limit: 10, required_state: [["*", "*"]] }, client, POLL_MS);
  running.push({ client, sync });
  await client.startClient({ slidingSync: sync });
  return { client, sync };
}

/** Resolves once `check` holds, looking after every response the connection processes and in between. */
function until(sync: SlidingSync, what: string, check: () => boolean): Promise<void> {
  if (check()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      clearInterval(poll);
      sync.off(sdk.SlidingSyncEvent.Lifecycle, look);
      if (err) reject(err);
      else resolve();
    };
    const look = () => {
      if (check()) done();
    };
    const timer = setTimeout(() => done(new Error(`gave up waiting for ${what}`)), GIVE_UP_MS);
    const poll = setInterval(look, 50);
    sync.on(sdk.SlidingSyncEvent.Lifecycle, look);
  });
}

/** `until` for a check that has to ask something asynchronously. */
async function untilAsync(sync: SlidingSync, what: string, check: () => Promise<boolean>): Promise<void> {
  let holds = false;
  let asking = false;
  const ask = () => {
    if (asking) return;
    asking = true;
    void check().then(
      (v) => ((holds ||= v), (asking = false)),
      () => (asking = false),
    );
  };
  ask();
  const poll = setInterval(ask, 100);
  try {
    await until(sync, what, () => holds);
  } finally {
    clearInterval(poll);
  }
}

async function knowsDevice(client: MatrixClient, other: User): Promise<boolean> {
  const devices = await client.getCrypto()?.getUserDeviceInfo([other.userId], true);
  return devices?.get(other.userId)?.has(other.deviceId) ?? false;
}

const texts = (client: MatrixClient, roomId: string) =>
  (client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? []).filter((e) => e.getType() === "m.room.message").map((e) => e.getContent().body as string);

describe("matrix-js-sdk SlidingSync", () => {
  test("the room list grows range by range to the exact count; new messages, names and invites arrive", async () => {
    const [alice, bob] = [await user(), await user()];
    const rooms: string[] = [];
    for (let i = 0; i < 7; i++) rooms.push(await alice.createRoom({ name: `Room ${i}` }));
    const { client, sync } = await startSliding(alice);
    await until(sync, "the first range", () => client.getRooms().length === 3);
    assert.equal(sync.getListData("all")!.joinedCount, 7);
    sync.setListRanges("all", [[0, 4]]);
    await until(sync, "the second range", () => client.getRooms().length === 5);
    sync.setListRanges("all", [[0, 6]]);
    await until(sync, "every room", () => client.getRooms().length === 7);
    assert.deepEqual(client.getRooms().map((r) => r.name).sort(), rooms.map((_, i) => `Room ${i}`).sort());

    await alice.send(rooms[0]!, "hello there");
    await until(sync, "the message", () => texts(client, rooms[0]!).includes("hello there"));
    await alice.putState(rooms[1]!, "m.room.name", "", { name: "Renamed" });
    await alice.send(rooms[1]!, "after rename");
    await until(sync, "the new name", () => client.getRoom(rooms[1]!)?.name === "Renamed");

    const invite = await bob.createRoom({ name: "For Alice" });
    ok(await bob.act("invite", invite, alice.userId));
    await until(sync, "the invite", () => client.getRoom(invite)?.getMyMembership() === "invite");
    await until(sync, "the count", () => sync.getListData("all")!.joinedCount === 8);
  });

  test("a room subscription brings a room outside the list", async () => {
    const alice = await user();
    const hidden = await alice.createRoom({ name: "Hidden" });
    await alice.send(hidden, "in the hidden room");
    await alice.createRoom({ name: "Newer" });
    const { client, sync } = await startSliding(alice, { all: { ...LIST, ranges: [[0, 0]] } });
    await until(sync, "the list", () => client.getRooms().length === 1);
    assert.equal(client.getRoom(hidden), null);
    sync.modifyRoomSubscriptions(new Set([hidden]));
    await until(sync, "the subscribed room", () => texts(client, hidden).includes("in the hidden room"));
    assert.equal(client.getRoom(hidden)!.name, "Hidden");
  });

  test("lazy members: only the members the timeline needs, more as they speak", async () => {
    const [alice, bob, carol] = [await user(), await user(), await user()];
    const roomId = await alice.createRoom({ name: "Lazy", preset: "public_chat" });
    await bob.join(roomId);
    await carol.join(roomId);
    await bob.send(roomId, "bob here");
    const { client, sync } = await startSliding(alice, { all: { ...LIST, timeline_limit: 1 } });
    await until(sync, "the room", () => texts(client, roomId).includes("bob here"));
    const state = () => client.getRoom(roomId)!.currentState;
    assert.ok(state().getMember(bob.userId), "the sender is loaded");
    assert.ok(state().getMember(alice.userId), "$ME is loaded");
    assert.equal(state().getStateEvents("m.room.member", carol.userId), null, "a silent member is not");
    await carol.send(roomId, "carol here");
    await until(sync, "carol's member event", () => state().getStateEvents("m.room.member", carol.userId) !== null);
  });

  test("extensions: account data, typing, receipts, to-device and sticky events reach the client", async () => {
    const [alice, bob] = [await user(), await user()];
    const roomId = await alice.createRoom({ name: "Busy", preset: "public_chat" });
    await bob.join(roomId);
    const eventId = await alice.send(roomId, "read this");
    const { client, sync } = await startSliding(alice);
    await until(sync, "the room", () => texts(client, roomId).includes("read this"));
    assert.ok(client.getAccountData("m.push_rules" as never), "m.push_rules comes with the account data");

    ok(await alice.req("PUT", `/user/${enc(alice.userId)}/account_data/org.example.setting`, { on: true }));
    await until(sync, "account data", () => client.getAccountData("org.example.setting" as never)?.getContent().on === true);

    ok(await bob.req("PUT", `/rooms/${enc(roomId)}/typing/${enc(bob.userId)}`, { typing: true, timeout: 30_000 }));
    await until(sync, "typing", () => client.getRoom(roomId)?.getMember(bob.userId)?.typing === true);

    ok(await bob.req("POST", `/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, {}));
    await until(sync, "the receipt", () => client.getRoom(roomId)?.getEventReadUpTo(bob.userId) === eventId);

    const received: string[] = [];
    client.on(sdk.ClientEvent.ToDeviceEvent, (e) => received.push(e.getType()));
    ok(await bob.req("PUT", "/sendToDevice/org.example.hello/t1", { messages: { [alice.userId]: { [alice.deviceId]: { hi: 1 } } } }));
    await until(sync, "the to-device message", () => received.includes("org.example.hello"));

    const sticky = ok(await bob.req("PUT", `/rooms/${enc(roomId)}/send/org.example.sticky/s1?org.matrix.msc4354.sticky_duration_ms=60000`, { k: 1 }));
    await until(sync, "the sticky event", () => [...client.getRoom(roomId)!._unstable_getStickyEvents()].some((e) => e.getId() === sticky.event_id));
  });

  test("e2ee and to_device: two Rust-crypto clients exchange an encrypted message over sliding sync", async () => {
    await quietSdkLogs(["error"]);
    const [alice, bob] = [await user(), await user()];
    const roomId = await alice.createRoom({
      name: "Secret",
      invite: [bob.userId],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await bob.join(roomId);
    const a = await startSliding(alice, { all: LIST }, { rustCrypto: true });
    const b = await startSliding(bob, { all: LIST }, { rustCrypto: true });
    const bothJoined = (c: MatrixClient) =>
      c.getRoom(roomId)?.getMember(alice.userId)?.membership === "join" && c.getRoom(roomId)?.getMember(bob.userId)?.membership === "join";
    await until(a.sync, "both members", () => bothJoined(a.client));
    await until(b.sync, "both members", () => bothJoined(b.client));
    // Each must have the other's device keys before the room key is shared.
    await untilAsync(a.sync, "Bob's device keys", () => knowsDevice(a.client, bob));
    await untilAsync(b.sync, "Alice's device keys", () => knowsDevice(b.client, alice));
    const decrypted = new Promise<string>((resolve) => {
      const look = (e: MatrixEvent) => {
        if (e.getRoomId() === roomId && e.getType() === "m.room.message" && !e.isDecryptionFailure()) resolve(e.getContent().body as string);
      };
      b.client.on(sdk.MatrixEventEvent.Decrypted, look);
      b.client.on(sdk.RoomEvent.Timeline, (e) => {
        if (e.getRoomId() === roomId && e.isEncrypted()) b.client.decryptEventIfNeeded(e).then(() => look(e), () => undefined);
      });
    });
    await a.client.sendTextMessage(roomId, "only for Bob");
    let body: string | undefined;
    void decrypted.then((text) => (body = text));
    await until(b.sync, "the decrypted message", () => body === "only for Bob");

    // A new device of Alice's reaches Bob as a device-list change (the e2ee extension).
    const second = await alice.newDevice();
    const c = await startSliding(second, { all: LIST }, { rustCrypto: true });
    await untilAsync(c.sync, "the new device's own keys", () => knowsDevice(c.client, second));
    await untilAsync(b.sync, "Alice's new device", async () => {
      const devices = await b.client.getCrypto()!.getUserDeviceInfo([alice.userId], false);
      return devices.get(alice.userId)?.has(second.deviceId) ?? false;
    });
  });

  test("after the connection expires the server answers M_UNKNOWN_POS and the client starts again", async () => {
    const alice = await user();
    const roomId = await alice.createRoom({ name: "Expiring" });
    const { client, sync } = await startSliding(alice);
    await until(sync, "the room", () => client.getRoom(roomId) !== null);
    const errors: string[] = [];
    sync.on(sdk.SlidingSyncEvent.Lifecycle, (_state, _resp, err) => {
      if (err) errors.push((err as { errcode?: string }).errcode ?? String(err));
    });
    offset += 8 * DAY;
    try {
      await until(sync, "M_UNKNOWN_POS", () => errors.includes("M_UNKNOWN_POS"));
      await alice.send(roomId, "after expiry");
      await until(sync, "a message on the new connection", () => texts(client, roomId).includes("after expiry"));
    } finally {
      offset -= 8 * DAY;
    }
  });
});
