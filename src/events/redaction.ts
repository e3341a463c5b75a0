/**
 * The redaction algorithm ("strip non-essential keys"), used for redactions and for the
 * signatures and reference hashes that must survive them.
 *
 * - Room version 10: content/rooms/fragments/v9-redactions.md in matrix-org/matrix-spec.
 * - Room version 11: content/rooms/fragments/v11-redactions.md.
 */
import type { RoomVersion } from "./room_versions.js";
import { isRecord, type Pdu } from "./types.js";

/** Top-level keys kept by the room version 1-10 rules (v9-redactions fragment). */
const TOP_LEVEL_KEYS_V10: readonly string[] = [
  "event_id",
  "type",
  "room_id",
  "sender",
  "state_key",
  "content",
  "hashes",
  "signatures",
  "depth",
  "prev_events",
  "prev_state",
  "auth_events",
  "origin",
  "origin_server_ts",
  "membership",
];

/** v11 drops `origin`, `membership` and `prev_state` (v11-redactions fragment). */
const TOP_LEVEL_KEYS_V11: readonly string[] = TOP_LEVEL_KEYS_V10.filter(
  (k) => k !== "origin" && k !== "membership" && k !== "prev_state",
);

const CONTENT_KEYS_V10: Readonly<Record<string, readonly string[]>> = {
  "m.room.member": ["membership", "join_authorised_via_users_server"],
  "m.room.create": ["creator"],
  "m.room.join_rules": ["join_rule", "allow"],
  "m.room.power_levels": ["ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"],
  "m.room.history_visibility": ["history_visibility"],
};

const CONTENT_KEYS_V11: Readonly<Record<string, readonly string[]>> = {
  "m.room.member": ["membership", "join_authorised_via_users_server"],
  "m.room.join_rules": ["join_rule", "allow"],
  "m.room.power_levels": [
    "ban",
    "events",
    "events_default",
    "invite",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
  ],
  "m.room.history_visibility": ["history_visibility"],
  "m.room.redaction": ["redacts"],
};

/**
 * The redacted form of `pdu` under `version`'s rules: a new object (the input is not
 * modified; kept values are shared, not copied). As the algorithm says, every key not
 * on the list is stripped, `unsigned` included; a server that wants to show clients
 * `unsigned.redacted_because` adds it back itself.
 */
export function redact(pdu: Pdu, version: RoomVersion): Pdu {
  const keep = version.updatedRedactionRules ? TOP_LEVEL_KEYS_V11 : TOP_LEVEL_KEYS_V10;
  const source = pdu as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of keep) {
    if (Object.hasOwn(source, key) && source[key] !== undefined) out[key] = source[key];
  }
  out.content = redactContent(pdu.type, isRecord(pdu.content) ? pdu.content : {}, version);
  return out as unknown as Pdu;
}

/** The content that survives redaction for an event of `type`. */
export function redactContent(
  type: string,
  content: Record<string, unknown>,
  version: RoomVersion,
): Record<string, unknown> {
  if (version.updatedRedactionRules && type === "m.room.create") return { ...content };
  const table = version.updatedRedactionRules ? CONTENT_KEYS_V11 : CONTENT_KEYS_V10;
  const allowed = Object.hasOwn(table, type) ? table[type] : undefined;
  const out: Record<string, unknown> = {};
  for (const key of allowed ?? []) {
    if (Object.hasOwn(content, key) && content[key] !== undefined) out[key] = content[key];
  }
  if (version.updatedRedactionRules && type === "m.room.member") {
    // v11 keeps `third_party_invite.signed`, and nothing else of `third_party_invite`.
    const tpi = content.third_party_invite;
    if (isRecord(tpi) && Object.hasOwn(tpi, "signed") && tpi.signed !== undefined) {
      out.third_party_invite = { signed: tpi.signed };
    }
  }
  return out;
}
