/** Migrations 12 onwards: encryption, sliding sync, MSC4140, LiveKit, federation (see ../migrations.ts). Append here. */
import type { Migration } from "./types.js";

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

/** Migration 26's table; on SQLite the key holds the rows (`WITHOUT ROWID`). */
const pushActionStaging = (options: string) => `
  CREATE TABLE event_push_actions_staging (
    room_id TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    actions TEXT NOT NULL,
    notify INTEGER NOT NULL,
    highlight INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (room_id, stream_ordering, user_id)
  ) ${options};
  CREATE INDEX event_push_actions_staging_user ON event_push_actions_staging(user_id, stream_ordering);
`;

export const STEPS_FROM_12: Migration[] = [
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
  // 22: whether a user who left a room had ever joined it (what unlocks "shared" history for
  // them) is one lookup in that room's slice of their membership history, not a read of all of it.
  `
  CREATE INDEX membership_history_user_room ON membership_history(user_id, room_id, stream_ordering);
  `,
  // 23: a push action is keyed by (user, room, position) instead of (user, event): an event's
  // position is as unique as its ID, and the key now serves the per-room counts that had an index
  // of their own. Every send into a room writes a row per member into each of the table's
  // B-trees, so two fewer (on SQLite the key holds the rows, WITHOUT ROWID) is a page or two less
  // per member per send. An event's actions are found through its position (events by ID).
  {
    sqlite: `
    CREATE TABLE event_push_actions_keyed (
      user_id TEXT NOT NULL,
      room_id TEXT NOT NULL,
      event_id TEXT NOT NULL,
      stream_ordering INTEGER NOT NULL,
      thread_id TEXT NOT NULL,
      actions TEXT NOT NULL,
      notify INTEGER NOT NULL,
      highlight INTEGER NOT NULL,
      ts INTEGER NOT NULL,
      PRIMARY KEY (user_id, room_id, stream_ordering)
    ) WITHOUT ROWID;
    INSERT INTO event_push_actions_keyed (user_id, room_id, event_id, stream_ordering, thread_id, actions, notify, highlight, ts)
      SELECT user_id, room_id, event_id, stream_ordering, thread_id, actions, notify, highlight, ts FROM event_push_actions WHERE true
      ON CONFLICT DO NOTHING;
    DROP TABLE event_push_actions;
    ALTER TABLE event_push_actions_keyed RENAME TO event_push_actions;
    CREATE INDEX event_push_actions_user ON event_push_actions(user_id, stream_ordering);
    CREATE INDEX event_push_actions_ts ON event_push_actions(ts);
    `,
    postgres: `
    ALTER TABLE event_push_actions DROP CONSTRAINT event_push_actions_pkey;
    DROP INDEX event_push_actions_room;
    ALTER TABLE event_push_actions ADD PRIMARY KEY (user_id, room_id, stream_ordering);
    `,
  },
  // 24: a soft-failed event (it passed the auth rules against the state before it, not against
  // the room's current state) keeps the state group after it, so events built on it are judged
  // on that state; it stays out of the events table, out of every timeline and of current state.
  `
  ALTER TABLE event_outliers ADD COLUMN state_group TEXT;
  `,
  // 25: a redaction received before the event it redacts (backfill comes newest first; a fetched
  // event may arrive after its redaction) waits here, by target, until that event is stored.
  `
  CREATE TABLE pending_redactions (
    room_id TEXT NOT NULL,
    target_event_id TEXT NOT NULL,
    redaction_event_id TEXT NOT NULL,
    PRIMARY KEY (target_event_id, redaction_event_id)
  );
  `,
  // 26: push actions are first written here, keyed by room and position, and moved in batches to
  // event_push_actions (keyed by user) a moment later. Written straight into the user-keyed
  // B-trees (three of them), an event's actions touched two or three pages per recipient (each
  // user's rows are elsewhere in the tree): in a room of ten, some 18 of a send's 40 pages. Here
  // an event's rows sit side by side; the one per-user index, over a table that holds a moment's
  // rows, keeps a pusher's reads indexed. The move writes a user's rows of many events together.
  { sqlite: pushActionStaging("WITHOUT ROWID"), postgres: pushActionStaging("") },
  // 27: when the badge in last_badge was read, in microseconds since the epoch (badgeStamp in
  // services/push/push_content.ts): a delivery that records its badge late must not overwrite a
  // badge read and sent after it.
  `
  ALTER TABLE pushers ADD COLUMN last_badge_read_us INTEGER;
  `,
  // 28: on SQLite a transaction ID's row lives in its key's B-tree (WITHOUT ROWID). The table and
  // the index of its key were two B-trees, and every send wrote to both: about one page in
  // twenty of a send's writes. PostgreSQL keeps every table apart from its indexes.
  {
    sqlite: `
    CREATE TABLE event_txns_keyed (
      user_id TEXT NOT NULL,
      device_id TEXT NOT NULL,
      txn_id TEXT NOT NULL,
      event_id TEXT NOT NULL,
      PRIMARY KEY (user_id, device_id, txn_id)
    ) WITHOUT ROWID;
    INSERT INTO event_txns_keyed (user_id, device_id, txn_id, event_id) SELECT user_id, device_id, txn_id, event_id FROM event_txns;
    DROP TABLE event_txns;
    ALTER TABLE event_txns_keyed RENAME TO event_txns;
    `,
    postgres: "SELECT 1;",
  },
  // 29: event_push_actions loses its (user, position) index. Filing staged actions writes a row
  // per recipient into each of the table's B-trees, each row in its own user's part of the tree:
  // in a room of a thousand members, a thousand scattered pages per B-tree for every batch moved,
  // and on SQLite each is a whole page in the WAL. The index served /notifications alone, which
  // the key (user first) serves too: it reads the user's rows and sorts them, and read receipts
  // (forgetRead) and the retention keep those few.
  "DROP INDEX event_push_actions_user;",
];
