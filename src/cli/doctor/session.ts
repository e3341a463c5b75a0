/** Logging in (or checking a given token), the throwaway room, and cleaning up after both. */
import { isObject, join, type DoctorContext } from "./context.js";
import { describeReply, errcodeOf, HttpFailure, type HttpReply } from "./http.js";
import { redact } from "./report.js";

const CLIENT = "/_matrix/client/v3";
export const DELAYED = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events";

/** The reply, or the network failure's message. */
export async function call(ctx: DoctorContext, method: string, path: string, json?: unknown): Promise<HttpReply | string> {
  try {
    return await ctx.http.request(method, join(ctx.baseUrl!, path), { json, token: ctx.session?.accessToken });
  } catch (err) {
    return (err as HttpFailure).message;
  }
}

/** Cancels a delayed event the doctor scheduled: the split path, else the body form older servers have. */
export async function cancelDelayed(ctx: DoctorContext, delayId: string): Promise<HttpReply | string> {
  const id = encodeURIComponent(delayId);
  const reply = await call(ctx, "POST", `${DELAYED}/${id}/cancel`, {});
  if (typeof reply !== "string" && reply.status === 404 && errcodeOf(reply) === "M_UNRECOGNIZED") return call(ctx, "POST", `${DELAYED}/${id}`, { action: "cancel" });
  return reply;
}

export function domainOf(userId: string): string {
  return userId.slice(userId.indexOf(":") + 1);
}

export async function checkLogin(ctx: DoctorContext): Promise<void> {
  const { opts, rec } = ctx;
  if (!opts.accessToken && !opts.user) {
    rec.skip("login", "login", "password login or --access-token", "no credentials given: the checks that need an account are skipped, and nothing on the server is changed");
    return;
  }
  if (opts.accessToken) {
    const asked = `GET ${CLIENT}/account/whoami with token ${redact(opts.accessToken)}`;
    ctx.session = { accessToken: opts.accessToken, userId: "", ownDevice: false };
    const reply = await call(ctx, "GET", `${CLIENT}/account/whoami`);
    const body = typeof reply === "string" ? undefined : reply.json;
    if (typeof reply === "string" || reply.status !== 200 || !isObject(body) || typeof body.user_id !== "string") {
      ctx.session = undefined;
      rec.fail("login", "login", asked, typeof reply === "string" ? reply : describeReply(reply), "The access token is not valid on this server.",
        "Pass a current access token (Element: Settings › Help & About › Access token), or --user and --password.");
      return;
    }
    ctx.session.userId = body.user_id;
    ctx.session.deviceId = typeof body.device_id === "string" ? body.device_id : undefined;
    rec.pass("login", "login", asked, `200, ${body.user_id}${ctx.session.deviceId ? ` (device ${ctx.session.deviceId})` : ""}`);
  } else {
    const asked = `POST ${CLIENT}/login (m.login.password as ${opts.user}, password not shown)`;
    const reply = await call(ctx, "POST", `${CLIENT}/login`, {
      type: "m.login.password",
      identifier: { type: "m.id.user", user: opts.user },
      password: opts.password,
      initial_device_display_name: "switchboard doctor",
    });
    const body = typeof reply === "string" ? undefined : reply.json;
    if (typeof reply === "string" || reply.status !== 200 || !isObject(body) || typeof body.access_token !== "string" || typeof body.user_id !== "string") {
      rec.fail("login", "login", asked, typeof reply === "string" ? reply : describeReply(reply), "The server refused the password login.",
        "Check the user name and password (or use --access-token for accounts without a password, e.g. single sign-on).");
      return;
    }
    ctx.session = {
      accessToken: body.access_token,
      userId: body.user_id,
      deviceId: typeof body.device_id === "string" ? body.device_id : undefined,
      ownDevice: true,
    };
    rec.pass("login", "login", asked, `200, ${body.user_id}, device ${ctx.session.deviceId ?? "?"}, token ${redact(body.access_token)}`);
  }
  ctx.serverName ??= domainOf(ctx.session.userId);
}

/** A private room for the checks that need one; left again by `cleanUp`. */
export async function createRoom(ctx: DoctorContext): Promise<void> {
  if (!ctx.session) return;
  const asked = `POST ${CLIENT}/createRoom (private, for the doctor's own checks)`;
  const reply = await call(ctx, "POST", `${CLIENT}/createRoom`, { preset: "private_chat", name: "switchboard doctor (throwaway)", visibility: "private" });
  const body = typeof reply === "string" ? undefined : reply.json;
  if (typeof reply === "string" || reply.status !== 200 || !isObject(body) || typeof body.room_id !== "string") {
    ctx.rec.fail("room", "throwaway room", asked, typeof reply === "string" ? reply : describeReply(reply), "The account may not create rooms, so the token and delayed-event checks cannot run.",
      "Use an account that may create rooms (or allow room creation for it).");
    return;
  }
  ctx.roomId = body.room_id;
  ctx.rec.pass("room", "throwaway room", asked, `200, ${body.room_id} (the doctor leaves it at the end)`);
}

export async function cleanUp(ctx: DoctorContext): Promise<void> {
  if (!ctx.session) return;
  const done: string[] = [];
  const problems: string[] = [];
  // A delayed event that has not fired (the run was interrupted, or it never arrived) would fire into the left room.
  for (const delayId of ctx.pendingDelays) {
    const cancelled = await cancelDelayed(ctx, delayId);
    if (typeof cancelled !== "string" && cancelled.status === 200) done.push(`cancelled delayed event ${delayId}`);
    // 404/409: it fired meanwhile (or is gone), so there is nothing to cancel.
    else if (typeof cancelled === "string" || ![404, 409].includes(cancelled.status)) problems.push(`cancelling delayed event ${delayId}: ${typeof cancelled === "string" ? cancelled : describeReply(cancelled)}`);
  }
  if (ctx.roomId) {
    const room = encodeURIComponent(ctx.roomId);
    const left = await call(ctx, "POST", `${CLIENT}/rooms/${room}/leave`, {});
    if (typeof left !== "string" && left.status === 200) {
      done.push(`left ${ctx.roomId}`);
      await call(ctx, "POST", `${CLIENT}/rooms/${room}/forget`, {});
    } else problems.push(`leaving ${ctx.roomId}: ${typeof left === "string" ? left : describeReply(left)}`);
  }
  if (ctx.session.ownDevice) {
    const out = await call(ctx, "POST", `${CLIENT}/logout`, {});
    if (typeof out !== "string" && out.status === 200) done.push(`logged out device ${ctx.session.deviceId ?? ""}`.trim());
    else problems.push(`logging out: ${typeof out === "string" ? out : describeReply(out)}`);
  }
  if (done.length === 0 && problems.length === 0) return;
  const asked = "cancel any delayed event still scheduled, leave the throwaway room, log the doctor's device out";
  if (problems.length) ctx.rec.warn("cleanup", "clean up", asked, problems.join("; "), "The doctor could not tidy up after itself.", "Leave the room \"switchboard doctor (throwaway)\" and remove the device by hand.");
  else ctx.rec.pass("cleanup", "clean up", asked, done.join(", "));
}
