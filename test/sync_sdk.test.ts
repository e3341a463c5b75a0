/**
 * Several matrix-js-sdk clients, each running its real `/sync` loop (with
 * MSC4222 state_after, as the SDK asks for it), must agree on what happened
 * in a room.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { MatrixClient, Room } from "matrix-js-sdk";
import { SdkClients } from "./helpers/sdk_clients.js";
import { registerUser, request, startServer, type TestServer } from "./helpers/server.js";
import type { Ev, Login } from "./helpers/sync.js";

const C = "/_matrix/client/v3";
const enc = encodeURIComponent;

describe("matrix-js-sdk clients syncing", () => {
  let server: TestServer;
  let clients: SdkClients;
  let n = 0;

  before(async () => {
    server = await startServer();
    clients = await SdkClients.create(server.baseUrl);
  });
  after(async () => server?.stop());

  async function user(): Promise<Login> {
    return registerUser(server.baseUrl, `sdk${++n}`);
  }

  const start = (login: Login, timelineLimit?: number) => clients.start(login, { timelineLimit });
  const until = (client: MatrixClient, what: string, check: () => boolean) => clients.until(client, what, check);
  const stopAll = () => clients.stopAll();

  const membership = (client: MatrixClient, roomId: string, userId: string) =>
    client.getRoom(roomId)?.currentState.getMember(userId)?.membership;

  /** A room's current state as the client holds it: "type|state_key" → event ID. */
  function stateOf(room: Room): Map<string, string> {
    const out = new Map<string, string>();
    for (const [type, byKey] of room.currentState.events) {
      for (const [key, event] of byKey) out.set(`${type}|${key}`, event.getId()!);
    }
    return out;
  }

  const messageIds = (room: Room | null) =>
    (room?.getLiveTimeline().getEvents() ?? []).filter((e) => e.getType() === "m.room.message").map((e) => e.getId()!);

  test("create, invite, join, message, set state, leave, ban: every client ends up with the same room state", async () => {
    try {
      const [aliceLogin, bobLogin, carolLogin] = [await user(), await user(), await user()];
      const [alice, bob, carol] = [await start(aliceLogin), await start(bobLogin), await start(carolLogin)];
      const { room_id: roomId } = await alice.createRoom({ name: "Lifecycle" });

      await alice.invite(roomId, bobLogin.user_id);
      await alice.invite(roomId, carolLogin.user_id);
      await until(bob, "the invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
      await until(carol, "the invite", () => carol.getRoom(roomId)?.getMyMembership() === "invite");
      assert.equal(bob.getRoom(roomId)!.name, "Lifecycle", "the invite carries the room name");

      await bob.joinRoom(roomId);
      await carol.joinRoom(roomId);
      await until(alice, "both joins", () => membership(alice, roomId, bobLogin.user_id) === "join" && membership(alice, roomId, carolLogin.user_id) === "join");

      const hello = (await alice.sendTextMessage(roomId, "hello")).event_id;
      const hi = (await bob.sendTextMessage(roomId, "hi")).event_id;
      await alice.setRoomTopic(roomId, "our topic");
      await alice.sendStateEvent(roomId, "org.example.custom" as never, { v: 1 } as never, "k");
      await until(carol, "messages and state", () => carol.getRoom(roomId)?.currentState.getStateEvents("org.example.custom", "k") !== null);
      assert.deepEqual(messageIds(carol.getRoom(roomId)), [hello, hi]);

      await bob.leave(roomId);
      await until(alice, "Bob's leave", () => membership(alice, roomId, bobLogin.user_id) === "leave");
      await until(bob, "his own leave", () => bob.getRoom(roomId)?.getMyMembership() === "leave");
      // The room is invite-only: coming back takes a new invite.
      await alice.invite(roomId, bobLogin.user_id);
      await until(bob, "the second invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
      await bob.joinRoom(roomId);
      await until(alice, "Bob's return", () => membership(alice, roomId, bobLogin.user_id) === "join");
      await alice.ban(roomId, bobLogin.user_id, "bye");
      await until(carol, "the ban", () => membership(carol, roomId, bobLogin.user_id) === "ban");
      await until(bob, "his own ban", () => bob.getRoom(roomId)?.getMyMembership() === "ban");
      const last = (await carol.sendTextMessage(roomId, "after the ban")).event_id;
      await until(alice, "the last message", () => messageIds(alice.getRoom(roomId)).includes(last));
      // Carol's own message joins her timeline only when her sync echoes it back.
      await until(carol, "her own echo", () => messageIds(carol.getRoom(roomId)).includes(last));

      const onServer = await request(server.baseUrl, "GET", `${C}/rooms/${enc(roomId)}/state`, { token: aliceLogin.access_token });
      const expected = new Map((onServer.body as unknown as Ev[]).map((e) => [`${e.type}|${e.state_key}`, e.event_id!]));
      assert.deepEqual(stateOf(alice.getRoom(roomId)!), expected, "Alice's state is the server's");
      assert.deepEqual(stateOf(carol.getRoom(roomId)!), expected, "Carol's state is the server's");
      assert.equal(alice.getRoom(roomId)!.currentState.getStateEvents("m.room.topic", "")!.getContent().topic, "our topic");
      // Bob's view stops at his ban: everything up to it agrees with the others.
      const bobState = stateOf(bob.getRoom(roomId)!);
      for (const [key, id] of bobState) if (key !== `m.room.member|${carolLogin.user_id}`) assert.equal(id, expected.get(key), key);
      assert.deepEqual(messageIds(alice.getRoom(roomId)), messageIds(carol.getRoom(roomId)));
    } finally {
      stopAll();
    }
  });

  test("10 clients send at once: every timeline holds every event exactly once, in the same order", async () => {
    try {
      const logins: Login[] = [];
      for (let i = 0; i < 10; i++) logins.push(await user());
      const owner = logins[0]!;
      const created = await request(server.baseUrl, "POST", `${C}/createRoom`, { token: owner.access_token, body: { preset: "public_chat" } });
      const roomId = created.body.room_id as string;
      for (const l of logins.slice(1)) {
        const joined = await request(server.baseUrl, "POST", `${C}/join/${enc(roomId)}`, { token: l.access_token, body: {} });
        assert.equal(joined.status, 200);
      }
      const all = await Promise.all(logins.map((l) => start(l, 200)));
      const perClient = 5;
      await Promise.all(
        all.map(async (client, i) => {
          for (let j = 0; j < perClient; j++) await client.sendTextMessage(roomId, `from ${i} #${j}`);
        }),
      );
      const total = all.length * perClient;
      await Promise.all(all.map((c) => until(c, "every message", () => messageIds(c.getRoom(roomId)).length >= total)));

      const page = await request(server.baseUrl, "GET", `${C}/rooms/${enc(roomId)}/messages?dir=f&limit=1000`, { token: owner.access_token });
      const serverOrder = (page.body.chunk as Ev[]).filter((e) => e.type === "m.room.message").map((e) => e.event_id);
      assert.equal(serverOrder.length, total);
      for (const client of all) {
        const seen = messageIds(client.getRoom(roomId));
        assert.equal(new Set(seen).size, seen.length, `${client.getUserId()} holds no event twice`);
        assert.deepEqual(seen, serverOrder, `${client.getUserId()} holds every event in server order`);
      }
    } finally {
      stopAll();
    }
  });

  test("account data, typing and receipts reach the SDK's models", async () => {
    try {
      const [aliceLogin, bobLogin] = [await user(), await user()];
      const [alice, bob] = [await start(aliceLogin), await start(bobLogin)];
      const { room_id: roomId } = await alice.createRoom({ preset: clients.sdk.Preset.PublicChat });
      await bob.joinRoom(roomId);
      await until(alice, "Bob's join", () => membership(alice, roomId, bobLogin.user_id) === "join");

      await alice.setAccountData("org.example.pref" as never, { on: true } as never);
      await until(alice, "global account data", () => alice.getAccountData("org.example.pref" as never)?.getContent().on === true);
      await alice.setRoomAccountData(roomId, "org.example.room" as never, { n: 2 } as never);
      await until(alice, "room account data", () => alice.getRoom(roomId)?.getAccountData("org.example.room" as never)?.getContent().n === 2);

      await bob.sendTyping(roomId, true, 20000);
      await until(alice, "Bob typing", () => alice.getRoom(roomId)?.getMember(bobLogin.user_id)?.typing === true);
      await bob.sendTyping(roomId, false, 0);
      await until(alice, "Bob no longer typing", () => alice.getRoom(roomId)?.getMember(bobLogin.user_id)?.typing === false);

      const { event_id: eventId } = await alice.sendTextMessage(roomId, "read this");
      await until(bob, "the message", () => messageIds(bob.getRoom(roomId)).includes(eventId));
      const event = bob.getRoom(roomId)!.findEventById(eventId)!;
      await bob.sendReadReceipt(event);
      await until(alice, "Bob's receipt", () => alice.getRoom(roomId)?.getEventReadUpTo(bobLogin.user_id) === eventId);

      await bob.setRoomReadMarkers(roomId, eventId);
      await until(bob, "the read marker", () => bob.getRoom(roomId)?.getAccountData("m.fully_read")?.getContent().event_id === eventId);
    } finally {
      stopAll();
    }
  });
});
