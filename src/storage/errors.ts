/** Errors of opening storage that callers tell apart, in a module that loads no database driver. */

/** The database could not be reached or refused us; the message names what was tried. */
export class DatabaseUnavailableError extends Error {}

/** Another live process on the same PostgreSQL database already uses this `--worker-id`. */
export class DuplicateWorkerError extends Error {}

/**
 * A value the database cannot store: PostgreSQL's text holds no NUL character, nor its jsonb a
 * `\u0000` escape. Input a client sent, refused as such (400) rather than failing as a 500.
 */
export class UnstorableTextError extends Error {}
