/**
 * Forward-only schema migrations for both dialects, with one version number each. Append;
 * never change what a released step does. The index + 1 is the schema version recorded in the
 * database.
 *
 * A step is written once, in SQL both dialects read, and `ddlFor` adapts the one thing that
 * differs in every table: on PostgreSQL each INTEGER column is a BIGINT (SQLite's integers are
 * 64-bit already; timestamps in milliseconds need it). A step that differs in more than that
 * names both texts.
 */
import type { Dialect } from "./executor.js";

export type Migration = string | { readonly sqlite: string; readonly postgres: string };

/** The v5 trigger, SQLite only. Migration 6 moved its rule into code (DeviceStore) for both dialects. */
const DEVICE_KEYS_DELETED_TRIGGER = `
  -- A deleted device (its keys go with it, by the cascade) is a change the user's contacts must hear of.
  CREATE TRIGGER e2e_device_keys_deleted AFTER DELETE ON e2e_device_keys BEGIN
    INSERT INTO device_list_changes (user_id) VALUES (old.user_id);
  END;
`;

const V5_E2EE = `
  CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
  );
  CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
  );
  CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
  );
  CREATE TABLE device_list_changes (
    stream_id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL
  );
  CREATE INDEX device_list_changes_user ON device_list_changes(user_id, stream_id);
  CREATE TABLE to_device_messages (
    stream_id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
  );
  CREATE INDEX to_device_inbox ON to_device_messages(user_id, device_id, stream_id);
  CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
  );
  CREATE TABLE sticky_events (
    stream_ordering INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL,
    expires_ts INTEGER NOT NULL
  );
  CREATE INDEX sticky_events_room ON sticky_events(room_id, stream_ordering);
  CREATE INDEX sticky_events_expiry ON sticky_events(expires_ts);
  `;


/** Migration 20's tables, around the outbox's ID column (which differs by dialect). */
const federationTransactions = (idColumn: string) => `
  CREATE TABLE federation_outbox (
    id ${idColumn},
    destination TEXT NOT NULL,
    event_id TEXT,
    edu_type TEXT,
    json TEXT NOT NULL,
    created_ts INTEGER NOT NULL
  );
  CREATE INDEX federation_outbox_destination ON federation_outbox(destination, id);
  CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    retry_interval_ms INTEGER NOT NULL DEFAULT 0,
    retry_at INTEGER,
    failing_since INTEGER,
    claimed_by TEXT,
    lease_until INTEGER
  );
  CREATE TABLE federation_inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT,
    claimed_by TEXT NOT NULL,
    claimed_ts INTEGER NOT NULL,
    PRIMARY KEY (origin, txn_id)
  );
  CREATE INDEX federation_inbound_txns_ts ON federation_inbound_txns(claimed_ts);
  CREATE TABLE federation_inbound_to_device (
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    received_ts INTEGER NOT NULL,
    PRIMARY KEY (sender, message_id)
  );
  CREATE INDEX federation_inbound_to_device_ts ON federation_inbound_to_device(received_ts);
`;

export const MIGRATIONS: Migration[] = [
  `
  CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    is_guest INTEGER NOT NULL DEFAULT 0,
    is_admin INTEGER NOT NULL DEFAULT 0,
    created_ts INTEGER NOT NULL
  );
  CREATE TABLE profiles (
    user_id TEXT PRIMARY KEY REFERENCES users(user_id),
    displayname TEXT,
    avatar_url TEXT
  );
  CREATE TABLE devices (
    user_id TEXT NOT NULL REFERENCES users(user_id),
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts INTEGER,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
  );
  CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id)
  );
  CREATE INDEX access_tokens_device ON access_tokens(user_id, device_id);
  CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed INTEGER,
    pending INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_time INTEGER
  );
  `,
  `
  CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts INTEGER NOT NULL
  );
  CREATE INDEX openid_tokens_expiry ON openid_tokens(expires_ts);
  `,
  `
  CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    is_public INTEGER NOT NULL DEFAULT 0
  );
  CREATE TABLE events (
    stream_ordering INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL REFERENCES rooms(room_id),
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts INTEGER NOT NULL,
    depth INTEGER NOT NULL,
    json TEXT NOT NULL,
    redacted_by TEXT,
    txn_device_id TEXT,
    txn_id TEXT
  );
  CREATE INDEX events_room ON events(room_id, stream_ordering);
  CREATE INDEX events_state ON events(room_id, type, state_key, stream_ordering) WHERE state_key IS NOT NULL;
  CREATE TABLE event_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
  );
  CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
  );
  CREATE TABLE memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
  );
  CREATE INDEX memberships_user ON memberships(user_id);
  CREATE TABLE membership_history (
    stream_ordering INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL
  );
  CREATE INDEX membership_history_user ON membership_history(user_id, stream_ordering);
  CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
  );
  CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
  );
  CREATE INDEX room_aliases_room ON room_aliases(room_id);
  CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
  );
  CREATE INDEX account_data_stream ON account_data(user_id, stream_id);
  CREATE TABLE filters (
    user_id TEXT NOT NULL,
    filter_id INTEGER NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
  );
  CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    stream_id INTEGER NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
  );
  CREATE INDEX receipts_stream ON receipts(room_id, stream_id);
  `,
  `
  CREATE TABLE delayed_events (
    delay_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    content TEXT NOT NULL,
    delay_ms INTEGER NOT NULL,
    running_since INTEGER NOT NULL,
    send_at INTEGER NOT NULL,
    parent_delay_id TEXT,
    sticky_duration_ms INTEGER,
    status TEXT NOT NULL,
    outcome TEXT,
    reason TEXT,
    finalised_ts INTEGER,
    event_id TEXT,
    error TEXT
  );
  CREATE INDEX delayed_events_pending ON delayed_events(send_at) WHERE status != 'finalised';
  CREATE INDEX delayed_events_user ON delayed_events(user_id, status, running_since);
  CREATE INDEX delayed_events_state ON delayed_events(room_id, type, state_key) WHERE status = 'scheduled' AND state_key IS NOT NULL;
  CREATE INDEX delayed_events_parent ON delayed_events(parent_delay_id) WHERE parent_delay_id IS NOT NULL;
  `,
  { sqlite: V5_E2EE + DEVICE_KEYS_DELETED_TRIGGER, postgres: V5_E2EE },
  // 6: stream positions come from sequences (see streams.ts) instead of MAX()+1 and AUTOINCREMENT.
  {
    sqlite: `
    DROP TRIGGER e2e_device_keys_deleted;
    CREATE TABLE stream_sequences (name TEXT PRIMARY KEY, last_value INTEGER NOT NULL);
    INSERT INTO stream_sequences (name, last_value)
      SELECT 'events', COALESCE(MAX(stream_ordering), 0) FROM events
      UNION ALL SELECT 'account_data', COALESCE(MAX(stream_id), 0) FROM account_data
      UNION ALL SELECT 'receipts', COALESCE(MAX(stream_id), 0) FROM receipts
      UNION ALL SELECT 'to_device', COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'to_device_messages'), 0)
      UNION ALL SELECT 'device_lists', COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'device_list_changes'), 0);
    `,
    postgres: `
    CREATE SEQUENCE stream_events;
    CREATE SEQUENCE stream_account_data;
    CREATE SEQUENCE stream_receipts;
    CREATE SEQUENCE stream_to_device;
    CREATE SEQUENCE stream_device_lists;
    `,
  },
  // 7: UIA sessions and shared-secret registration nonces move out of process memory, so
  // that every process on the database sees them (see sql/auth_state.ts).
  `
  CREATE TABLE uia_sessions (
    session_id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    completed TEXT NOT NULL
  );
  CREATE INDEX uia_sessions_created ON uia_sessions(created_ts);
  CREATE TABLE registration_nonces (
    nonce TEXT PRIMARY KEY,
    issued_ts INTEGER NOT NULL
  );
  CREATE INDEX registration_nonces_issued ON registration_nonces(issued_ts);
  `,
  // 8: several processes on one database. Typing changes take positions from a stream (it
  // starts at the clock's milliseconds, where the clock-based serials of earlier versions
  // stood, so tokens clients hold stay behind it). A delayed event being sent is leased by
  // the process sending it, so that another takes it over if that process dies.
  {
    sqlite: `
    INSERT INTO stream_sequences (name, last_value) VALUES ('typing', CAST(strftime('%s', 'now') AS INTEGER) * 1000);
    ALTER TABLE delayed_events ADD COLUMN claimed_by TEXT;
    ALTER TABLE delayed_events ADD COLUMN lease_until INTEGER;
    `,
    postgres: `
    CREATE SEQUENCE stream_typing;
    SELECT setval('stream_typing', (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    ALTER TABLE delayed_events ADD COLUMN claimed_by TEXT;
    ALTER TABLE delayed_events ADD COLUMN lease_until INTEGER;
    `,
  },
  // 9: the media repository. Files hold the bytes; these rows say which IDs exist (a pending
  // one has no upload yet) and which thumbnails of each have been made.
  `
  CREATE TABLE local_media (
    media_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    content_type TEXT,
    upload_name TEXT,
    size INTEGER,
    sha256 TEXT,
    created_ts INTEGER NOT NULL,
    uploaded_ts INTEGER,
    unused_expires_ts INTEGER,
    width INTEGER,
    height INTEGER,
    animated INTEGER NOT NULL
  );
  CREATE INDEX local_media_pending ON local_media(user_id) WHERE uploaded_ts IS NULL;
  CREATE TABLE local_media_thumbnails (
    media_id TEXT NOT NULL REFERENCES local_media(media_id) ON DELETE CASCADE,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    animated INTEGER NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (media_id, width, height, method, animated)
  );
  `,
  // 10: push-rule outcomes per recipient of each event: notification counts, /notifications.
  `
  CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL,
    thread_id TEXT NOT NULL,
    actions TEXT NOT NULL,
    notify INTEGER NOT NULL,
    highlight INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, event_id)
  );
  CREATE INDEX event_push_actions_room ON event_push_actions(user_id, room_id, stream_ordering);
  CREATE INDEX event_push_actions_user ON event_push_actions(user_id, stream_ordering);
  CREATE INDEX event_push_actions_ts ON event_push_actions(ts);
  `,
  // 11: HTTP pushers. Each remembers how far it has pushed, so delivery survives restarts; the
  // process delivering for one holds it by a lease, so that another takes over if it dies.
  // Deleting the device that set a pusher deletes the pusher.
  `
  CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    device_id TEXT,
    created_ts INTEGER NOT NULL,
    last_stream_ordering INTEGER NOT NULL,
    last_success_ts INTEGER,
    failing_since INTEGER,
    claimed_by TEXT,
    lease_until INTEGER,
    PRIMARY KEY (app_id, pushkey, user_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
  );
  CREATE INDEX pushers_user ON pushers(user_id);
  `,
  // 12: cross-signing keys and their signatures, and server-side key backups. Signatures
  // uploaded separately are kept apart from the keys they sign and merged in when queried.
  // A deleted backup version keeps its row (marked deleted) so that its number is never reused.
  `
  CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
  );
  CREATE TABLE e2e_cross_signing_signatures (
    signer_user_id TEXT NOT NULL,
    signing_key_id TEXT NOT NULL,
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signing_key_id)
  );
  CREATE TABLE e2e_room_keys_versions (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    PRIMARY KEY (user_id, version)
  );
  CREATE TABLE e2e_room_keys (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index INTEGER NOT NULL,
    forwarded_count INTEGER NOT NULL,
    is_verified INTEGER NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
  );
  `,
  // 13: per-user push rules (the server-default ones are code; only a user's changes to them
  // are stored), and an index to find whose m.push_rules account data moved, which is how every
  // process learns that a user's rules changed.
  `
  CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    priority INTEGER NOT NULL,
    conditions TEXT,
    pattern TEXT,
    actions TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    PRIMARY KEY (user_id, kind, rule_id)
  );
  CREATE TABLE push_rule_settings (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled INTEGER,
    actions TEXT,
    PRIMARY KEY (user_id, kind, rule_id)
  );
  CREATE INDEX account_data_type_stream ON account_data(type, stream_id);
  `,
  // 14: sliding-sync (MSC4186) connections, per device, and the state each position of one
  // was answered from (JSON). Deleting the device deletes its connections.
  `
  CREATE TABLE sliding_sync_connections (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    last_used_ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
  );
  CREATE INDEX sliding_sync_connections_used ON sliding_sync_connections(last_used_ts);
  CREATE TABLE sliding_sync_positions (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    position TEXT NOT NULL,
    state TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id, position),
    FOREIGN KEY (user_id, device_id, conn_id) REFERENCES sliding_sync_connections(user_id, device_id, conn_id) ON DELETE CASCADE
  );
  `,
  // 15: delayed events as MSC4140 was accepted. A scheduling request's transaction (device and
  // endpoint-scoped key) makes a retry answer the first delay ID; the list orders a user's
  // events by send time and prunes old finalised ones. A failed send is told by `error` now,
  // and `reason` says what finalised it; rows from before say "error", most were timers.
  `
  ALTER TABLE delayed_events ADD COLUMN txn_device TEXT;
  ALTER TABLE delayed_events ADD COLUMN txn_key TEXT;
  CREATE UNIQUE INDEX delayed_events_txn ON delayed_events(user_id, txn_device, txn_key) WHERE txn_key IS NOT NULL;
  CREATE INDEX delayed_events_user_send ON delayed_events(user_id, send_at);
  CREATE INDEX delayed_events_finalised ON delayed_events(finalised_ts) WHERE status = 'finalised';
  UPDATE delayed_events SET reason = 'delay' WHERE reason = 'error';
  `,
  // 16: delayed leaves handed to the bundled LiveKit service (MSC4195), one per LiveKit room
  // and participant, kept across restarts; `owner` is the process running the job.
  `
  CREATE TABLE livekit_delegations (
    room TEXT NOT NULL,
    identity TEXT NOT NULL,
    user_id TEXT NOT NULL,
    delay_id TEXT NOT NULL,
    delay_ms INTEGER NOT NULL,
    server_name TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    PRIMARY KEY (room, identity)
  );
  `,
  // 17: other servers' signing keys (federation), fetched directly or through notaries and
  // cached until their `valid_until_ts`; the signed response is kept to serve as a notary.
  `
  CREATE TABLE federation_server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts INTEGER NOT NULL,
    expired_ts INTEGER,
    fetched_ts INTEGER NOT NULL,
    response_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
  );
  `,
  // 18: the badge last sent to each pusher's gateway, so that a read receipt sends a badge-only
  // push when (and only when) the user's unread count changed, whichever process handles it.
  `
  ALTER TABLE pushers ADD COLUMN last_badge INTEGER;
  `,
  // 19: rooms as a DAG (federation). A room keeps its forward extremities and the state group of
  // its current state; an event keeps the state group after it. Groups are immutable deltas on a
  // parent (a full map when `prev_group` is NULL). Rows from before have NULLs: their history is
  // one chain, so the state at one of them is the latest state per key up to its position.
  // `outlier` marks state received with a join (visible to state queries, never in a timeline);
  // events known only as auth events, or rejected, live in `event_outliers`.
  `
  ALTER TABLE rooms ADD COLUMN extremities TEXT;
  ALTER TABLE rooms ADD COLUMN state_group TEXT;
  ALTER TABLE events ADD COLUMN state_group TEXT;
  ALTER TABLE events ADD COLUMN outlier INTEGER NOT NULL DEFAULT 0;
  CREATE INDEX events_room_depth ON events(room_id, depth);
  CREATE TABLE state_groups (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group TEXT,
    delta TEXT NOT NULL,
    chain INTEGER NOT NULL
  );
  CREATE TABLE event_outliers (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    json TEXT NOT NULL,
    rejected TEXT,
    received_ts INTEGER NOT NULL
  );
  `,
  // 20: federation transactions. The outbox holds PDUs and EDUs per destination until a
  // transaction carries them (its ID orders them); a destination's row holds its backoff and the
  // lease of the one process delivering for it. Received transactions keep their answer, so a
  // replay gets it again from any process; to-device messages received are remembered by ID.
  // The outbox's ID is the schema's one identity column (PostgreSQL numbers it; a port from
  // SQLite copies the IDs and moves the identity past them).
  {
    sqlite: federationTransactions("INTEGER PRIMARY KEY AUTOINCREMENT"),
    postgres: federationTransactions("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
  },
  // 21: history fetched from other servers (backfill) goes below everything in the events stream:
  // its positions are the negatives of this sequence, so it sorts before what a room had, and
  // no sync token (always positive) ever reaches it.
  {
    sqlite: "INSERT INTO stream_sequences (name, last_value) VALUES ('backfill', 0);",
    postgres: "CREATE SEQUENCE backfill_ordering;",
  },
];

/** The text of a step for a dialect. */
export function ddlFor(step: Migration, dialect: Dialect): string {
  const text = typeof step === "string" ? step : step[dialect];
  if (dialect === "sqlite") return text;
  // Positions are always given explicitly (from sequences), so no column needs an identity.
  return text.replace(/\bINTEGER PRIMARY KEY AUTOINCREMENT\b/g, "BIGINT PRIMARY KEY").replace(/\bINTEGER\b/g, "BIGINT");
}
