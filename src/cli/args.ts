/** Command-line parsing: one place that knows the commands and their flags. */
import { parseArgs } from "node:util";
import { WORKER_ID_PATTERN } from "../storage/cluster.js";

export class UsageError extends Error {}

export const USAGE = `Usage:
  switchboard [--config FILE] [--worker-id NAME]   serve (default config: ./switchboard.yaml); NAME this
                                                   process among several on one PostgreSQL database
  switchboard generate-config --server-name NAME [--output FILE] [--data-dir DIR] [--enable-registration]
  switchboard check-config --config FILE
  switchboard register-user --config FILE --user NAME --password PW [--admin]
  switchboard port-db --config FILE --to-postgres postgres://USER:PASSWORD@HOST:PORT/DATABASE
                                                   copy a stopped server's SQLite data into an empty PostgreSQL database
  switchboard doctor SERVER [--user NAME --password PW | --access-token TOKEN] [--json] [--config FILE]
                     [--insecure-http] [--ca-file PEM]
                                                   check what calls need, as clients do; SERVER is a server
                                                   name (example.com) or a base URL (docs/doctor.md)
  switchboard --help | --version`;

export type Command =
  | { name: "serve"; config?: string; workerId?: string }
  | { name: "generate-config"; serverName: string; output: string; dataDir: string; openRegistration: boolean }
  | { name: "check-config"; config: string }
  | { name: "register-user"; config: string; user: string; password: string; admin: boolean }
  | { name: "port-db"; config: string; toPostgres: string }
  | ({ name: "doctor" } & DoctorCommand)
  | { name: "help" }
  | { name: "version" };

export interface DoctorCommand {
  /** A server name or a base URL. */
  server: string;
  user?: string;
  password?: string;
  accessToken?: string;
  json: boolean;
  /** A local config to compare what is served with. */
  config?: string;
  /** Plain http allowed, for test set-ups; never the default. */
  insecureHttp: boolean;
  /** Extra CA certificates (PEM) to trust. */
  caFile?: string;
}

export function parseCommand(argv: string[]): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: "string", short: "c" },
        "server-name": { type: "string" },
        output: { type: "string", short: "o" },
        "data-dir": { type: "string" },
        "enable-registration": { type: "boolean" },
        user: { type: "string", short: "u" },
        password: { type: "string", short: "p" },
        admin: { type: "boolean" },
        "to-postgres": { type: "string" },
        "worker-id": { type: "string" },
        "access-token": { type: "string" },
        json: { type: "boolean" },
        "insecure-http": { type: "boolean" },
        "ca-file": { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values: v, positionals } = parsed;
  if (v.help) return { name: "help" };
  if (v.version) return { name: "version" };
  const command = positionals[0] ?? "serve";
  const maxPositionals = command === "doctor" ? 2 : 1;
  if (positionals.length > maxPositionals) throw new UsageError(`unexpected argument: ${positionals[maxPositionals]}`);
  const allowed: Record<string, string[]> = {
    serve: ["config", "worker-id"],
    "generate-config": ["server-name", "output", "data-dir", "enable-registration"],
    "check-config": ["config"],
    "register-user": ["config", "user", "password", "admin"],
    "port-db": ["config", "to-postgres"],
    doctor: ["user", "password", "access-token", "json", "config", "insecure-http", "ca-file"],
  };
  if (!allowed[command]) throw new UsageError(`unknown command: ${command}`);
  for (const key of Object.keys(v)) {
    if (!allowed[command]!.includes(key)) throw new UsageError(`--${key} does not apply to ${command}`);
  }
  const need = (key: keyof typeof v): string => {
    const value = v[key];
    if (typeof value !== "string" || value === "") throw new UsageError(`${command} needs --${key}`);
    return value;
  };
  switch (command) {
    case "generate-config":
      return {
        name: "generate-config",
        serverName: need("server-name"),
        output: v.output ?? "switchboard.yaml",
        dataDir: v["data-dir"] ?? "data",
        openRegistration: v["enable-registration"] ?? false,
      };
    case "check-config":
      return { name: "check-config", config: need("config") };
    case "register-user":
      return { name: "register-user", config: need("config"), user: need("user"), password: need("password"), admin: v.admin ?? false };
    case "port-db": {
      const dsn = need("to-postgres");
      if (!/^postgres(ql)?:\/\//.test(dsn) || !URL.canParse(dsn)) {
        throw new UsageError("--to-postgres takes a PostgreSQL URL: postgres://USER:PASSWORD@HOST:PORT/DATABASE");
      }
      return { name: "port-db", config: need("config"), toPostgres: dsn };
    }
    case "doctor":
      return parseDoctor(positionals[1], v);
    default: {
      const workerId = v["worker-id"];
      if (workerId !== undefined && !WORKER_ID_PATTERN.test(workerId)) {
        throw new UsageError("--worker-id takes 1 to 40 letters, digits, dots, dashes or underscores");
      }
      return { name: "serve", config: v.config, workerId };
    }
  }
}

function parseDoctor(
  server: string | undefined,
  v: { user?: string; password?: string; "access-token"?: string; json?: boolean; config?: string; "insecure-http"?: boolean; "ca-file"?: string },
): Command {
  if (!server) throw new UsageError("doctor needs SERVER: a server name (example.com) or a base URL (https://matrix.example.com)");
  const insecureHttp = v["insecure-http"] ?? false;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(server)) {
    if (!URL.canParse(server) || !/^https?:$/.test(new URL(server).protocol)) throw new UsageError(`doctor: ${server} is not an http(s) URL`);
    if (new URL(server).protocol === "http:" && !insecureHttp) {
      throw new UsageError(`doctor: ${server} is plain http; clients need https. Pass --insecure-http to test a plain-http server anyway`);
    }
  } else if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$/.test(server)) {
    throw new UsageError(`doctor: ${server} is neither a server name nor a base URL`);
  }
  if ((v.user === undefined) !== (v.password === undefined)) throw new UsageError("doctor: --user and --password go together");
  if (v["access-token"] !== undefined && v.user !== undefined) throw new UsageError("doctor: give --user/--password or --access-token, not both");
  for (const key of ["user", "password", "access-token", "config", "ca-file"] as const) {
    if (v[key] === "") throw new UsageError(`doctor: --${key} is empty`);
  }
  return {
    name: "doctor",
    server,
    user: v.user,
    password: v.password,
    accessToken: v["access-token"],
    json: v.json ?? false,
    config: v.config,
    insecureHttp,
    caFile: v["ca-file"],
  };
}
