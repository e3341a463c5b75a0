/**
 * Rule 4 of the room version 10/11 authorisation rules: `m.room.member` events
 * (content/rooms/v10.md and v11.md in matrix-org/matrix-spec).
 */
import type { KeyObject } from "node:crypto";
import { AuthError, type AuthContext } from "./auth_common.js";
import { decodeBase64, decodeBase64Url } from "./base64.js";
import { isValidUserId, serverNameOf } from "./ids.js";
import { roomCreator } from "./power_levels.js";
import { verifyJsonSignature, verifyKeyFromBytes } from "./signing.js";
import { EventTypes, isRecord, membershipOf, type Pdu } from "./types.js";

/** Allows (returns) or rejects (throws) an `m.room.member` event. */
export function checkMembership(ctx: AuthContext): void {
  const { pdu, state } = ctx;
  // 4.1
  const target = pdu.state_key;
  const membership = pdu.content.membership;
  if (typeof target !== "string") throw new AuthError("m.room.member must have a state_key", "4.1");
  if (typeof membership !== "string") throw new AuthError("m.room.member must have content.membership", "4.1");

  // 4.2
  if (Object.hasOwn(pdu.content, "join_authorised_via_users_server")) checkAuthorisingServerSignature(ctx);

  const targetMembership = membershipOf(state(EventTypes.member, target));
  const senderMembership =
    pdu.sender === target ? targetMembership : membershipOf(state(EventTypes.member, pdu.sender));

  switch (membership) {
    case "join":
      return checkJoin(ctx, target, targetMembership);
    case "invite":
      return checkInvite(ctx, target, targetMembership, senderMembership);
    case "leave":
      return checkLeave(ctx, target, targetMembership, senderMembership);
    case "ban":
      return checkBan(ctx, target, senderMembership);
    case "knock":
      if (ctx.version.knockJoinRule) return checkKnock(ctx, target, targetMembership);
      break;
  }
  // 4.8
  throw new AuthError(`unknown membership ${JSON.stringify(membership)}`, "4.8");
}

function joinRuleOf(ctx: AuthContext): string {
  const rule = ctx.state(EventTypes.joinRules, "")?.content.join_rule;
  // With no join rules event the room is invite-only (as Synapse and others behave).
  return typeof rule === "string" ? rule : "invite";
}

function checkAuthorisingServerSignature(ctx: AuthContext): void {
  const via = ctx.pdu.content.join_authorised_via_users_server;
  if (typeof via !== "string" || !isValidUserId(via)) {
    throw new AuthError("join_authorised_via_users_server is not a valid user ID", "4.2.1");
  }
  const server = serverNameOf(via) as string;
  const verify = ctx.options.verifyServerSignature;
  if (!verify) {
    throw new AuthError(`cannot check the signature of ${server} that join_authorised_via_users_server requires`, "4.2.1");
  }
  if (!verify(ctx.pdu, server)) {
    throw new AuthError(`the event is not signed by ${server}, the server of join_authorised_via_users_server`, "4.2.1");
  }
}

/** 4.3 */
function checkJoin(ctx: AuthContext, target: string, targetMembership: string | undefined): void {
  const { pdu, version } = ctx;
  // 4.3.1: the creator's own first join, straight after the create event.
  if (
    pdu.prev_events.length === 1 &&
    target === roomCreator(ctx.create, version) &&
    pdu.prev_events[0] === ctx.createEventId()
  ) {
    return;
  }
  if (pdu.sender !== target) throw new AuthError(`${pdu.sender} cannot join on behalf of ${target}`, "4.3.2");
  if (targetMembership === "ban") throw new AuthError(`${target} is banned from the room`, "4.3.3");

  const rule = joinRuleOf(ctx);
  const invitedOrJoined = targetMembership === "invite" || targetMembership === "join";
  if (rule === "invite" || (rule === "knock" && version.knockJoinRule)) {
    if (invitedOrJoined) return;
    throw new AuthError(`the room's join rule is "${rule}" and ${target} is not invited`, "4.3.4");
  }
  if (
    (rule === "restricted" && version.restrictedJoinRule) ||
    (rule === "knock_restricted" && version.knockRestrictedJoinRule)
  ) {
    if (invitedOrJoined) return;
    const via = pdu.content.join_authorised_via_users_server;
    if (typeof via !== "string") {
      throw new AuthError(`the room's join rule is "${rule}" and the join names no authorising user`, "4.3.5.2");
    }
    const viaMembership = membershipOf(ctx.state(EventTypes.member, via));
    if (viaMembership !== "join") {
      throw new AuthError(`the authorising user ${via} is not joined to the room`, "4.3.5.2");
    }
    const viaLevel = ctx.levels.userLevel(via);
    if (viaLevel < ctx.levels.invite) {
      throw new AuthError(
        `the authorising user ${via} may not invite (needs ${ctx.levels.invite}, has ${viaLevel})`,
        "4.3.5.2",
      );
    }
    return;
  }
  if (rule === "public") return;
  throw new AuthError(`the room's join rule "${rule}" does not allow joining`, "4.3.7");
}

/** 4.4 */
function checkInvite(
  ctx: AuthContext,
  target: string,
  targetMembership: string | undefined,
  senderMembership: string | undefined,
): void {
  const { pdu, levels } = ctx;
  if (Object.hasOwn(pdu.content, "third_party_invite")) {
    checkThirdPartyInvite(ctx, target, targetMembership);
    return;
  }
  if (senderMembership !== "join") {
    throw new AuthError(`sender ${pdu.sender} is not joined to the room, so cannot invite`, "4.4.2");
  }
  if (targetMembership === "join") throw new AuthError(`${target} is already joined to the room`, "4.4.3");
  if (targetMembership === "ban") throw new AuthError(`${target} is banned from the room`, "4.4.3");
  const senderLevel = levels.userLevel(pdu.sender);
  if (senderLevel >= levels.invite) return;
  throw new AuthError(`power level too low to invite (needs ${levels.invite}, has ${senderLevel})`, "4.4.5");
}

/** 4.4.1 */
function checkThirdPartyInvite(ctx: AuthContext, target: string, targetMembership: string | undefined): void {
  const { pdu } = ctx;
  if (targetMembership === "ban") throw new AuthError(`${target} is banned from the room`, "4.4.1.1");
  const tpi = pdu.content.third_party_invite;
  const signed = isRecord(tpi) ? tpi.signed : undefined;
  if (!isRecord(signed)) throw new AuthError("third_party_invite has no signed object", "4.4.1.2");
  const { mxid, token } = signed;
  if (typeof mxid !== "string" || typeof token !== "string") {
    throw new AuthError("third_party_invite.signed must have mxid and token", "4.4.1.3");
  }
  if (mxid !== target) throw new AuthError(`third_party_invite.signed.mxid ${mxid} is not ${target}`, "4.4.1.4");
  const invite = ctx.state(EventTypes.thirdPartyInvite, token);
  if (!invite) throw new AuthError("no m.room.third_party_invite in the room matches the token", "4.4.1.5");
  if (invite.sender !== pdu.sender) {
    throw new AuthError("the sender did not send the matching m.room.third_party_invite", "4.4.1.6");
  }
  if (signedByInviteKey(signed, invite)) return;
  throw new AuthError("third_party_invite.signed is not signed by any key of the m.room.third_party_invite", "4.4.1.8");
}

/** 4.4.1.7: does any signature in `signed` verify against any public key of the invite? */
function signedByInviteKey(signed: Record<string, unknown>, invite: Pdu): boolean {
  const keys: string[] = [];
  if (typeof invite.content.public_key === "string") keys.push(invite.content.public_key);
  if (Array.isArray(invite.content.public_keys)) {
    for (const k of invite.content.public_keys) {
      if (isRecord(k) && typeof k.public_key === "string") keys.push(k.public_key);
    }
  }
  const signatures = isRecord(signed.signatures) ? signed.signatures : {};
  for (const encoded of keys) {
    const key = publicKeyOrUndefined(encoded);
    if (!key) continue;
    for (const [server, byKey] of Object.entries(signatures)) {
      if (!isRecord(byKey)) continue;
      for (const keyId of Object.keys(byKey)) {
        if (keyId.startsWith("ed25519:") && verifyJsonSignature(signed, server, keyId, key)) return true;
      }
    }
  }
  return false;
}

function publicKeyOrUndefined(encoded: string): KeyObject | undefined {
  for (const decode of [decodeBase64, decodeBase64Url]) {
    try {
      const raw = decode(encoded);
      if (raw.length === 32) return verifyKeyFromBytes(raw);
    } catch {
      // try the other alphabet
    }
  }
  return undefined;
}

/** 4.5 */
function checkLeave(
  ctx: AuthContext,
  target: string,
  targetMembership: string | undefined,
  senderMembership: string | undefined,
): void {
  const { pdu, levels } = ctx;
  if (pdu.sender === target) {
    if (targetMembership === "invite" || targetMembership === "join" || targetMembership === "knock") return;
    throw new AuthError(
      `${target} cannot leave: not joined, invited or knocking (membership: ${targetMembership ?? "none"})`,
      "4.5.1",
    );
  }
  if (senderMembership !== "join") {
    throw new AuthError(`sender ${pdu.sender} is not joined to the room, so cannot kick or unban`, "4.5.2");
  }
  const senderLevel = levels.userLevel(pdu.sender);
  if (targetMembership === "ban" && senderLevel < levels.ban) {
    throw new AuthError(`power level too low to unban (needs ${levels.ban}, has ${senderLevel})`, "4.5.3");
  }
  if (senderLevel < levels.kick) {
    throw new AuthError(`power level too low to kick (needs ${levels.kick}, has ${senderLevel})`, "4.5.5");
  }
  requireOutranks(ctx, "kick", target, senderLevel, "4.5.5");
}

/** Kicks and bans need the sender to outrank the target. */
function requireOutranks(ctx: AuthContext, action: string, target: string, senderLevel: number, rule: string): void {
  const targetLevel = ctx.levels.userLevel(target);
  if (targetLevel >= senderLevel) {
    throw new AuthError(`cannot ${action} ${target}: their power level (${targetLevel}) is not below yours (${senderLevel})`, rule);
  }
}

/** 4.6 */
function checkBan(ctx: AuthContext, target: string, senderMembership: string | undefined): void {
  const { pdu, levels } = ctx;
  if (senderMembership !== "join") {
    throw new AuthError(`sender ${pdu.sender} is not joined to the room, so cannot ban`, "4.6.1");
  }
  const senderLevel = levels.userLevel(pdu.sender);
  if (senderLevel < levels.ban) {
    throw new AuthError(`power level too low to ban (needs ${levels.ban}, has ${senderLevel})`, "4.6.3");
  }
  requireOutranks(ctx, "ban", target, senderLevel, "4.6.3");
}

/** 4.7 */
function checkKnock(ctx: AuthContext, target: string, targetMembership: string | undefined): void {
  const { pdu, version } = ctx;
  const rule = joinRuleOf(ctx);
  if (!(rule === "knock" || (rule === "knock_restricted" && version.knockRestrictedJoinRule))) {
    throw new AuthError(`the room's join rule "${rule}" does not allow knocking`, "4.7.1");
  }
  if (pdu.sender !== target) throw new AuthError(`${pdu.sender} cannot knock on behalf of ${target}`, "4.7.2");
  if (targetMembership === "ban" || targetMembership === "invite" || targetMembership === "join") {
    throw new AuthError(`${target} cannot knock: their membership is already ${targetMembership}`, "4.7.4");
  }
}
