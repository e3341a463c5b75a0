/**
 * Forward-only schema migrations. Append; never edit a released step. The
 * index + 1 is the schema version recorded in the database.
 */
export const MIGRATIONS: string[] = [
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
];
