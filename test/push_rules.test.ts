/**
 * Per-user push rules (spec: Push Rules API): adding, placing, enabling, changing and deleting
 * rules, the errors, the merged ruleset in `GET /pushrules/` and in `m.push_rules` account data
 * in `/sync`, the evaluator using each recipient's own rules, matrix-js-sdk driving it, and a
 * change made in one process taking effect in another.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import type { MatrixClient } from "matrix-js-sdk";
import { removeTestData, TEST_POSTGRES } from "./helpers/database.js";
import { quietSdkLogs } from "./helpers/matrix-sdk.js";
import { assertError, enc, ok, User } from "./helpers/rooms.js";
import { SdkClients } from "./helpers/sdk_clients.js";
import { startServer, teardown, type TestServer } from "./helpers/server.js";

let server: TestServer;
let alice: User;
let bob: User;

before(async () => {
  server = await startServer({ allow_guest_access: true });
  alice = await User.register(server.baseUrl, "alice");
  bob = await User.register(server.baseUrl, "bob");
});
after(async () => server?.stop());

type Rule = { rule_id: string; default: boolean; enabled: boolean; actions: unknown[]; conditions?: unknown[]; pattern?: string };
type Rules = Record<string, Rule[]>;

const rules = async (user: User): Promise<Rules> => (ok(await user.req("GET", "/pushrules/")) as { global: Rules }).global;
const ids = (list: Rule[]) => list.map((r) => r.rule_id);
const put = (user: User, pathTail: string, body: unknown) => user.req("PUT", `/pushrules/global/${pathTail}`, body);

/** Polls until `check` holds (a condition, not a duration: it waits as long as the test may run). */
async function eventually(check: () => Promise<boolean>): Promise<void> {
  while (!(await check())) await sleep(20);
}

async function counts(user: User, roomId: string) {
  const body = ok(await user.req("GET", "/sync")) as { rooms: { join: Record<string, { unread_notifications: unknown }> } };
  return body.rooms.join[roomId]?.unread_notifications;
}

describe("the push rules API", () => {
  test("user rules come before the server defaults of their kind, below .m.rule.master, placed by before/after", async () => {
    const cond = [{ kind: "event_match", key: "content.body", pattern: "lunch" }];
    ok(await put(alice, "override/first", { conditions: cond, actions: ["notify"] }));
    ok(await put(alice, "override/second", { conditions: cond, actions: [] }));
    let override = ids((await rules(alice)).override!);
    // A new rule without placement goes first (as in Synapse).
    assert.deepEqual(override.slice(0, 3), [".m.rule.master", "second", "first"]);
    assert.equal(override[3], ".m.rule.suppress_notices");
    ok(await alice.req("PUT", `/pushrules/global/override/third?before=${enc("second")}`, { conditions: cond, actions: [] }));
    ok(await alice.req("PUT", `/pushrules/global/override/fourth?after=${enc("second")}`, { conditions: cond, actions: [] }));
    override = ids((await rules(alice)).override!);
    assert.deepEqual(override.slice(0, 5), [".m.rule.master", "third", "second", "fourth", "first"]);

    const one = ok(await alice.req("GET", "/pushrules/global/override/fourth"));
    assert.deepEqual(one, { rule_id: "fourth", default: false, enabled: true, conditions: cond, actions: [] });
    ok(await put(alice, "content/lunchtime", { pattern: "lunch*", actions: ["notify", { set_tweak: "highlight" }] }));
    ok(await put(alice, `room/${enc("!quiet:localhost")}`, { actions: [] }));
    ok(await put(alice, `sender/${enc(bob.userId)}`, { actions: ["notify", { set_tweak: "sound", value: "default" }] }));
    const all = await rules(alice);
    assert.deepEqual(ids(all.content!), ["lunchtime", ".m.rule.contains_user_name"]);
    assert.deepEqual(all.content![0], { rule_id: "lunchtime", default: false, enabled: true, pattern: "lunch*", actions: ["notify", { set_tweak: "highlight" }] });
    assert.deepEqual(all.room, [{ rule_id: "!quiet:localhost", default: false, enabled: true, actions: [] }]);
    assert.deepEqual(ids(all.sender!), [bob.userId]);
    // Other users keep the defaults.
    assert.deepEqual(ids((await rules(bob)).override!).slice(0, 2), [".m.rule.master", ".m.rule.suppress_notices"]);

    for (const id of ["first", "second", "third", "fourth"]) ok(await alice.req("DELETE", `/pushrules/global/override/${id}`));
    assert.equal(ids((await rules(alice)).override!)[1], ".m.rule.suppress_notices");
    assertError(await alice.req("GET", "/pushrules/global/override/first"), 404, "M_NOT_FOUND");
  });

  test("enabled and actions, on user rules and on server-default rules", async () => {
    ok(await put(alice, "underride/mine", { conditions: [{ kind: "event_match", key: "type", pattern: "org.example.ping" }], actions: ["notify"] }));
    ok(await put(alice, "underride/mine/enabled", { enabled: false }));
    assert.deepEqual(ok(await alice.req("GET", "/pushrules/global/underride/mine/enabled")), { enabled: false });
    ok(await put(alice, "underride/mine/actions", { actions: ["notify", { set_tweak: "sound", value: "bell" }] }));
    assert.deepEqual(ok(await alice.req("GET", "/pushrules/global/underride/mine/actions")), { actions: ["notify", { set_tweak: "sound", value: "bell" }] });

    ok(await put(alice, "override/.m.rule.master/enabled", { enabled: true }));
    assert.deepEqual(ok(await alice.req("GET", "/pushrules/global/override/.m.rule.master")), {
      rule_id: ".m.rule.master",
      default: true,
      enabled: true,
      conditions: [],
      actions: [],
    });
    ok(await put(alice, "override/.m.rule.master/enabled", { enabled: false }));
    ok(await put(alice, "underride/.m.rule.message/actions", { actions: ["notify", { set_tweak: "sound", value: "default" }] }));
    const message = (await rules(alice)).underride!.find((r) => r.rule_id === ".m.rule.message")!;
    assert.deepEqual(message.actions, ["notify", { set_tweak: "sound", value: "default" }]);
    assert.equal(message.default, true);
    ok(await put(alice, "underride/.m.rule.message/actions", { actions: ["notify"] }));
    ok(await alice.req("DELETE", "/pushrules/global/underride/mine"));
  });

  test("errors: unknown rules, bad kinds, reserved and bad IDs, bad placement, bad bodies, guests", async () => {
    const body = { conditions: [], actions: ["notify"] };
    assertError(await alice.req("GET", "/pushrules/global/override/nope"), 404, "M_NOT_FOUND");
    assertError(await alice.req("DELETE", "/pushrules/global/override/nope"), 404, "M_NOT_FOUND");
    assertError(await put(alice, "override/nope/enabled", { enabled: true }), 404, "M_NOT_FOUND");
    assertError(await put(alice, "override/nope/actions", { actions: [] }), 404, "M_NOT_FOUND");
    assertError(await put(alice, "override/.m.rule.nope/enabled", { enabled: true }), 404, "M_NOT_FOUND");
    // A server-default rule of another kind is not there either.
    assertError(await put(alice, "underride/.m.rule.master/actions", { actions: [] }), 404, "M_NOT_FOUND");
    assertError(await alice.req("DELETE", "/pushrules/global/override/.m.rule.nope"), 404, "M_NOT_FOUND");

    assertError(await put(alice, "nonsense/mine", body), 400, "M_INVALID_PARAM");
    assertError(await put(alice, "nonsense/mine/enabled", { enabled: true }), 400, "M_INVALID_PARAM");
    assertError(await put(alice, "postcontent/mine", body), 400, "M_INVALID_PARAM");
    assertError(await alice.req("DELETE", "/pushrules/global/nonsense/mine"), 400, "M_INVALID_PARAM");
    assertError(await put(alice, "override/.mine", body), 400, "M_INVALID_PARAM");
    assertError(await put(alice, "override/.m.rule.master", body), 400, "M_INVALID_PARAM");
    assertError(await put(alice, `override/${enc("a/b")}`, body), 400, "M_INVALID_PARAM");
    assertError(await put(alice, `override/${enc("a\\b")}`, body), 400, "M_INVALID_PARAM");
    assertError(await put(alice, `override/${"x".repeat(300)}`, body), 400, "M_INVALID_PARAM");
    assertError(await alice.req("DELETE", "/pushrules/global/override/.m.rule.master"), 400, "M_INVALID_PARAM");

    // The spec's example: placing against a rule that is not one of the user's.
    assertError(await alice.req("PUT", "/pushrules/global/override/mine?before=nope", body), 400, "M_UNKNOWN");
    assertError(await alice.req("PUT", `/pushrules/global/override/mine?after=${enc(".m.rule.master")}`, body), 400, "M_UNKNOWN");
    assertError(await alice.req("GET", "/pushrules/global/override/mine"), 404, "M_NOT_FOUND");

    assertError(await put(alice, "override/mine", {}), 400, "M_BAD_JSON");
    assertError(await put(alice, "override/mine", { actions: "notify" }), 400, "M_BAD_JSON");
    assertError(await put(alice, "override/mine", { actions: ["explode"] }), 400, "M_BAD_JSON");
    assertError(await put(alice, "override/mine", { actions: [{ value: 1 }] }), 400, "M_BAD_JSON");
    assertError(await put(alice, "override/mine", { conditions: "x", actions: [] }), 400, "M_BAD_JSON");
    assertError(await put(alice, "override/mine", { conditions: [{ key: "type" }], actions: [] }), 400, "M_BAD_JSON");
    assertError(await put(alice, "content/mine", { actions: [] }), 400, "M_BAD_JSON");
    assertError(await put(alice, "content/mine", { pattern: 3, actions: [] }), 400, "M_BAD_JSON");
    assertError(await put(alice, "override/.m.rule.master/enabled", { enabled: "yes" }), 400, "M_BAD_JSON");
    assertError(await put(alice, "override/.m.rule.master/enabled", {}), 400, "M_BAD_JSON");
    assertError(await put(alice, "override/.m.rule.master/actions", { actions: ["explode"] }), 400, "M_BAD_JSON");
    assertError(await put(alice, "override/.m.rule.master/actions", []), 400, "M_BAD_JSON");
    assertError(
      await fetch(`${server.baseUrl}/_matrix/client/v3/pushrules/global/override/mine`, {
        method: "PUT",
        headers: { authorization: `Bearer ${alice.token}`, "content-type": "application/json" },
        body: "{not json",
      }).then(async (r) => ({ status: r.status, headers: r.headers, body: (await r.json()) as Record<string, unknown> })),
      400,
      "M_NOT_JSON",
    );

    const guest = ok(await fetch(`${server.baseUrl}/_matrix/client/v3/register?kind=guest`, { method: "POST", body: "{}", headers: { "content-type": "application/json" } }).then(
      async (r) => ({ status: r.status, headers: r.headers, body: (await r.json()) as Record<string, unknown> }),
    )) as { user_id: string; access_token: string; device_id: string };
    const asGuest = new User(server.baseUrl, guest.user_id, guest.access_token, guest.device_id);
    ok(await asGuest.req("GET", "/pushrules/"));
    assertError(await put(asGuest, "override/mine", body), 403, "M_GUEST_ACCESS_FORBIDDEN");
    // Nothing was stored by any of it.
    assert.ok(!ids((await rules(alice)).override!).includes("mine"));
  });

  test("every change reaches /sync as m.push_rules account data, with the whole merged ruleset", async () => {
    const first = ok(await alice.req("GET", "/sync")) as { next_batch: string };
    ok(await put(alice, "override/.m.rule.suppress_notices/enabled", { enabled: false }));
    const next = ok(await alice.req("GET", `/sync?since=${enc(first.next_batch)}&timeout=0`)) as {
      account_data: { events: { type: string; content: { global: Rules } }[] };
    };
    const event = next.account_data.events.find((e) => e.type === "m.push_rules");
    assert.ok(event, "m.push_rules came down /sync");
    assert.deepEqual(event.content.global, await rules(alice));
    assert.equal(event.content.global.override!.find((r) => r.rule_id === ".m.rule.suppress_notices")!.enabled, false);
    ok(await put(alice, "override/.m.rule.suppress_notices/enabled", { enabled: true }));
    // Account data of this type stays server-managed.
    assertError(await alice.req("PUT", `/user/${enc(alice.userId)}/account_data/m.push_rules`, { global: {} }), 405, "M_BAD_JSON");
  });
});

describe("concurrent changes", () => {
  test("changes of one user made at once all land, and m.push_rules ends as the merged ruleset", async () => {
    const user = await User.register(server.baseUrl, "henry");
    const cond = [{ kind: "event_match", key: "type", pattern: "org.example.x" }];
    const names = Array.from({ length: 8 }, (_, i) => `rule-${i}`);
    const replies = await Promise.all([
      ...names.map((id) => put(user, `override/${id}`, { conditions: cond, actions: [] })),
      put(user, "underride/.m.rule.message/enabled", { enabled: false }),
      put(user, "content/.m.rule.contains_user_name/actions", { actions: [] }),
    ]);
    for (const r of replies) ok(r);
    const merged = await rules(user);
    assert.deepEqual(ids(merged.override!).filter((id) => id.startsWith("rule-")).sort(), names);
    const data = ok(await user.req("GET", `/user/${enc(user.userId)}/account_data/m.push_rules`)) as { global: Rules };
    assert.deepEqual(data.global, merged);
  });
});

describe("the evaluator uses each recipient's rules", () => {
  test("a muted room stops counting, a sender rule highlights, a disabled default stops notifying", async () => {
    const carol = await User.register(server.baseUrl, "carol");
    const dave = await User.register(server.baseUrl, "dave");
    const roomId = await alice.createRoom({ preset: "public_chat" });
    await carol.join(roomId);
    await dave.join(roomId);
    await alice.send(roomId, "before muting");
    assert.deepEqual(await counts(carol, roomId), { notification_count: 1, highlight_count: 0 });

    ok(await put(carol, `room/${enc(roomId)}`, { actions: ["dont_notify"] }));
    await alice.send(roomId, "after muting");
    assert.deepEqual(await counts(carol, roomId), { notification_count: 1, highlight_count: 0 });
    // Dave's rules are his own: he still counts both.
    assert.deepEqual(await counts(dave, roomId), { notification_count: 2, highlight_count: 0 });

    ok(await put(dave, `sender/${enc(alice.userId)}`, { actions: ["notify", { set_tweak: "highlight" }] }));
    await alice.send(roomId, "from a favourite");
    assert.deepEqual(await counts(dave, roomId), { notification_count: 3, highlight_count: 1 });

    ok(await put(dave, `sender/${enc(alice.userId)}/enabled`, { enabled: false }));
    ok(await put(dave, "underride/.m.rule.message/enabled", { enabled: false }));
    await alice.send(roomId, "nobody cares");
    assert.deepEqual(await counts(dave, roomId), { notification_count: 3, highlight_count: 1 });

    ok(await carol.req("DELETE", `/pushrules/global/room/${enc(roomId)}`));
    await alice.send(roomId, "unmuted");
    assert.deepEqual(await counts(carol, roomId), { notification_count: 2, highlight_count: 0 });
  });
});

describe("matrix-js-sdk", () => {
  test("addPushRule and setPushRuleEnabled: the client's rules follow, and a muted room stops counting", async () => {
    await quietSdkLogs();
    const clients = await SdkClients.create(server.baseUrl);
    const erin = await User.register(server.baseUrl, "erin");
    try {
      const client: MatrixClient = await clients.start({ user_id: erin.userId, access_token: erin.token, device_id: erin.deviceId });
      const roomId = await alice.createRoom({ preset: "public_chat" });
      await erin.join(roomId);
      const { PushRuleKind, ConditionKind } = clients.sdk;
      await client.addPushRule("global", PushRuleKind.RoomSpecific, roomId, { actions: [] });
      await client.addPushRule("global", PushRuleKind.Override, "no-pings", {
        actions: [],
        conditions: [{ kind: ConditionKind.EventMatch, key: "content.body", pattern: "ping" }],
      });
      await client.setPushRuleEnabled("global", PushRuleKind.Underride, ".m.rule.encrypted", false);
      // The client learns of its own changes through m.push_rules in /sync.
      await eventually(async () => {
        const r = client.pushRules?.global;
        return (
          r?.room?.some((x) => x.rule_id === roomId) === true &&
          r.override?.some((x) => x.rule_id === "no-pings") === true &&
          r.underride?.find((x) => x.rule_id === ".m.rule.encrypted")?.enabled === false
        );
      });
      // (matrix-js-sdk adds rules of its own to what the server sends, so only the user's are compared.)
      const mine = (list: Rule[] | undefined) => ids((list ?? []).filter((r) => !r.default));
      const onServer = await rules(erin);
      assert.deepEqual(mine(client.pushRules!.global.override as Rule[]), mine(onServer.override));
      assert.deepEqual(mine(client.pushRules!.global.room as Rule[]), [roomId]);

      const muted = await alice.send(roomId, "into the muted room");
      await eventually(async () => client.getRoom(roomId)?.findEventById(muted) !== undefined);
      assert.equal(client.getRoom(roomId)!.getUnreadNotificationCount(), 0);
      assert.deepEqual(await counts(erin, roomId), { notification_count: 0, highlight_count: 0 });

      await client.deletePushRule("global", PushRuleKind.RoomSpecific, roomId);
      const counted = await alice.send(roomId, "now it counts");
      await eventually(async () => client.getRoom(roomId)?.findEventById(counted) !== undefined);
      assert.equal(client.getRoom(roomId)!.getUnreadNotificationCount(), 1);
    } finally {
      clients.stopAll();
    }
  });
});

describe("several processes on one database", { skip: TEST_POSTGRES ? false : "needs SWITCHBOARD_TEST_POSTGRES" }, () => {
  test("a rule changed through one process is used by the other's evaluator", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "switchboard-pushrules-cluster-"));
    const a = await startServer({}, { dir, homeserver: { workerId: "ra" } });
    const b = await startServer({}, { dir, homeserver: { workerId: "rb" } });
    try {
      const sender = await User.register(a.baseUrl, "frank");
      const onA = await User.register(a.baseUrl, "gina");
      const onB = new User(b.baseUrl, onA.userId, onA.token, onA.deviceId);
      const roomId = await sender.createRoom({ preset: "public_chat" });
      await onA.join(roomId);
      await sender.send(roomId, "counted");
      // A has Gina's rules cached now (it evaluated them); she mutes the room through B.
      assert.deepEqual(await counts(onA, roomId), { notification_count: 1, highlight_count: 0 });
      ok(await put(onB, `room/${enc(roomId)}`, { actions: [] }));
      await eventually(async () => (await rules(onA)).room!.some((r) => r.rule_id === roomId));
      await sender.send(roomId, "not counted");
      assert.deepEqual(await counts(onA, roomId), { notification_count: 1, highlight_count: 0 });
    } finally {
      await teardown(() => a.stop(), () => b.stop(), () => removeTestData(dir));
    }
  });
});
