/** Migrations 1 to 11: the schema up to several processes, media and push (see ../migrations.ts). */
import type { Migration } from "./types.js";

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


export const STEPS_1_TO_11: Migration[] = [
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
];
