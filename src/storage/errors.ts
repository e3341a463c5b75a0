/** Errors of opening storage that callers tell apart, in a module that loads no database driver. */

/** The database could not be reached or refused us; the message names what was tried. */
export class DatabaseUnavailableError extends Error {}

/** Another live process on the same PostgreSQL database already uses this `--worker-id`. */
export class DuplicateWorkerError extends Error {}
