/**
 * Where and how to connect, resolved once from `database.args`: the `dsn` URL first, then
 * each explicit key over the part it names (as the config reference promises), then the
 * libpq environment variables and defaults. The driver is handed only these resolved values,
 * so the start-up error names exactly the server it tried.
 */
import { readFileSync } from "node:fs";
import os from "node:os";
import type { ConnectionOptions } from "node:tls";

export interface ConnectionSettings {
  dsn?: string;
  host?: string;
  port?: number;
  user?: string;
  password?: string;
  database?: string;
  /** libpq's sslmode: disable, allow, prefer, require, verify-ca, verify-full. */
  sslmode?: string;
  /** A PEM file of CAs to trust (libpq's `sslrootcert`); otherwise Node's built-in list and NODE_EXTRA_CA_CERTS. */
  sslrootcert?: string;
}

export interface ResolvedConnection {
  host: string;
  port: number;
  user: string;
  password?: string;
  database: string;
  sslmode: string;
  sslrootcert?: string;
}

export class ConnectionSettingsError extends Error {}

const SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

/** libpq's default user: the operating system's name for this process's user. */
function osUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    // A container user with no passwd entry has no name; PostgreSQL will say the role is unknown.
    return process.env.USER ?? String(process.getuid?.() ?? "postgres");
  }
}

/** Resolves settings; a malformed `dsn` is reported without repeating it (it may hold a password). */
export function resolveConnection(s: ConnectionSettings): ResolvedConnection {
  let url: URL | undefined;
  if (s.dsn !== undefined) {
    try {
      url = new URL(s.dsn);
    } catch {
      throw new ConnectionSettingsError("`database.args.dsn` is not a valid postgres:// URL");
    }
  }
  const param = (name: string) => url?.searchParams.get(name) ?? undefined;
  const fromUrl = (v: string | undefined) => (v ? decodeURIComponent(v) : undefined);
  const env = process.env;
  const user = s.user ?? fromUrl(url?.username) ?? param("user") ?? env.PGUSER ?? osUser();
  const sslmode = s.sslmode ?? param("sslmode") ?? env.PGSSLMODE ?? "prefer";
  if (!SSL_MODES.includes(sslmode)) {
    throw new ConnectionSettingsError(`\`sslmode\` ${JSON.stringify(sslmode)} (in the dsn or PGSSLMODE) is not one of ${SSL_MODES.join(", ")}`);
  }
  const urlPort = url?.port ? Number(url.port) : param("port") ? Number(param("port")) : undefined;
  return {
    host: s.host ?? (url?.hostname ? decodeURIComponent(url.hostname) : undefined) ?? param("host") ?? env.PGHOST ?? "localhost",
    port: s.port ?? urlPort ?? (env.PGPORT ? Number(env.PGPORT) : 5432),
    user,
    password: s.password ?? fromUrl(url?.password) ?? param("password") ?? env.PGPASSWORD,
    database: s.database ?? fromUrl(url?.pathname.slice(1)) ?? param("dbname") ?? env.PGDATABASE ?? user,
    sslmode,
    sslrootcert: s.sslrootcert ?? param("sslrootcert") ?? env.PGSSLROOTCERT,
  };
}

/** `user@host:port/database`, for messages: never the password. */
export function describeConnection(c: ResolvedConnection): string {
  return `${c.user}@${c.host}:${c.port}/${c.database}`;
}

/**
 * Node's TLS options for an sslmode, as libpq defines them: `require` encrypts without
 * checking the certificate, `verify-ca` checks the chain but not the name, `verify-full`
 * both. `disable` never uses TLS; `allow` and `prefer` are decided by `PostgresDatabase`
 * (prefer tries TLS first and falls back when the server has none).
 */
export function tlsOptions(c: ResolvedConnection): ConnectionOptions | false {
  // Read only where a certificate is checked: `require` and below never use it.
  const ca = () => (c.sslrootcert ? readFileSync(c.sslrootcert, "utf8") : undefined);
  switch (c.sslmode) {
    case "disable":
      return false;
    case "allow":
    case "prefer":
    case "require":
      return { rejectUnauthorized: false };
    case "verify-ca":
      return { rejectUnauthorized: true, ca: ca(), checkServerIdentity: () => undefined };
    default:
      return { rejectUnauthorized: true, ca: ca() };
  }
}
