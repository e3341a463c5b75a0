/**
 * Badge-only pushes (as Synapse's HTTP pusher sends them): when a read receipt changes the
 * user's unread count, each of their pushers gets a push with only `counts`, so the app's icon
 * follows reading on another device; a receipt that changes nothing sends nothing.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ALLOW_LOOPBACK, Gateway, pusherBody } from "./helpers/push_gateway.js";
import { enc, ok, User } from "./helpers/rooms.js";
import { startServer, teardown, until, type TestServer } from "./helpers/server.js";

let server: TestServer;
let gateway: Gateway;
let alice: User;
let bob: User;

before(async () => {
  gateway = await new Gateway().start();
  server = await startServer({ ...ALLOW_LOOPBACK });
  alice = await User.register(server.baseUrl, "alice");
  bob = await User.register(server.baseUrl, "bob");
});
after(() => teardown(() => server?.stop(), () => gateway?.stop()));

const badgeOnly = () => gateway.received.filter((n) => !n.event_id);

describe("badge-only pushes", () => {
  test("a receipt that lowers the count pushes the new badge; one that changes nothing does not", async () => {
    ok(await bob.req("POST", "/pushers/set", pusherBody(gateway.url, { data: { url: gateway.url, format: "event_id_only" } })));
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await bob.join(roomId);
    await alice.send(roomId, "one");
    const two = await alice.send(roomId, "two");
    await until(() => gateway.received.some((n) => n.event_id === two));
    assert.equal(gateway.received.find((n) => n.event_id === two)!.counts.unread, 2);
    assert.equal(badgeOnly().length, 0);

    ok(await bob.req("POST", `/rooms/${enc(roomId)}/receipt/m.read/${enc(two)}`, {}));
    await until(() => badgeOnly().length === 1);
    const [badge] = badgeOnly();
    // Synapse's form: no event, room or prio; the pusher's data without its URL.
    assert.deepEqual(badge, {
      id: "",
      type: null,
      sender: "",
      counts: { unread: 0 },
      devices: [{ app_id: "org.example.app.android", pushkey: "key-1", pushkey_ts: badge!.devices[0]!.pushkey_ts, data: { format: "event_id_only" } }],
    });

    // The same receipt again changes nothing: no badge push. (The next message's push is
    // waited for; a badge push for the receipt would have been sent before it.)
    ok(await bob.req("POST", `/rooms/${enc(roomId)}/receipt/m.read.private/${enc(two)}`, {}));
    const three = await alice.send(roomId, "three");
    await until(() => gateway.received.some((n) => n.event_id === three));
    assert.equal(badgeOnly().length, 1, `badge-only pushes: ${JSON.stringify(badgeOnly().map((n) => n.counts))}`);
    assert.equal(gateway.received.find((n) => n.event_id === three)!.counts.unread, 1);

    // A private receipt lowers it too.
    ok(await bob.req("POST", `/rooms/${enc(roomId)}/receipt/m.read.private/${enc(three)}`, {}));
    await until(() => badgeOnly().length === 2);
    assert.equal(badgeOnly()[1]!.counts.unread, 0);
  });

  test("a thread's receipt lowers the badge by that thread's notifications; an unthreaded one by everything before it", async () => {
    const carol = await User.register(server.baseUrl, "carol");
    ok(await carol.req("POST", "/pushers/set", pusherBody(gateway.url, { pushkey: "key-carol", data: { url: gateway.url, format: "event_id_only" } })));
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await carol.join(roomId);
    const root = await alice.send(roomId, "root");
    const inThread = (body: string) => ({ msgtype: "m.text", body, "m.relates_to": { rel_type: "m.thread", event_id: root } });
    await alice.send(roomId, inThread("reply 1"));
    const reply2 = await alice.send(roomId, inThread("reply 2"));
    const main = await alice.send(roomId, "main");
    const carols = () => gateway.received.filter((n) => n.devices[0]!.pushkey === "key-carol");
    await until(() => carols().some((n) => n.event_id === main));
    assert.equal(carols().find((n) => n.event_id === main)!.counts.unread, 4);

    // The thread read up to its last reply: the root and the main-timeline message remain.
    ok(await carol.req("POST", `/rooms/${enc(roomId)}/receipt/m.read/${enc(reply2)}`, { thread_id: root }));
    await until(() => carols().some((n) => !n.event_id));
    assert.equal(carols().filter((n) => !n.event_id).at(-1)!.counts.unread, 2);

    // An unthreaded receipt at the last message reads everything, threads included.
    ok(await carol.req("POST", `/rooms/${enc(roomId)}/receipt/m.read/${enc(main)}`, {}));
    await until(() => carols().filter((n) => !n.event_id).length === 2);
    assert.equal(carols().filter((n) => !n.event_id).at(-1)!.counts.unread, 0);
  });
});
