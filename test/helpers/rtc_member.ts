/**
 * A call participant in its own process, so that a test can kill it with
 * SIGKILL mid-call. Joins the room's MatrixRTC session in compatibility mode
 * (state events, with a delayed leave) and prints `JOINED <delay_id>` once its
 * membership and its delayed leave are in place; then stays until killed.
 *
 * argv: baseUrl userId accessToken deviceId roomId delayMs restartMs
 */
import { loadSdk } from "./matrix-sdk.js";

const [baseUrl, userId, accessToken, deviceId, roomId, delayMs, restartMs] = process.argv.slice(2);
if (!baseUrl || !userId || !accessToken || !deviceId || !roomId || !delayMs || !restartMs) {
  console.error("usage: rtc_member baseUrl userId accessToken deviceId roomId delayMs restartMs");
  process.exit(2);
}

const sdk = await loadSdk();
const client = sdk.createClient({ baseUrl, userId, accessToken, deviceId });
const prepared = new Promise<void>((resolve, reject) => {
  client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
    if (state === "PREPARED") resolve();
    if (state === "ERROR") reject(data?.error ?? new Error("sync error"));
  });
});
await client.startClient();
await prepared;
const room = client.getRoom(roomId);
if (!room) throw new Error(`not in ${roomId}`);
const session = client.matrixRTC.getRoomSession(room);
session.joinRoomSession([{ type: "livekit", livekit_service_url: "https://livekit.invalid" }], undefined, {
  delayedLeaveEventDelayMs: Number(delayMs),
  delayedLeaveEventRestartMs: Number(restartMs),
  manageMediaKeys: false,
});
// Joined once our own membership is in the session and the leave is scheduled.
for (;;) {
  const mine = session.memberships.some((m) => m.sender === userId && m.deviceId === deviceId);
  if (mine && session.delayId) break;
  await new Promise((resolve) => setTimeout(resolve, 50));
}
process.stdout.write(`JOINED ${session.delayId}\n`);
