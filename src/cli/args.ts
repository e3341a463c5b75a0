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
  switchboard --help | --version`;

export type Command =
  | { name: "serve"; config?: string; workerId?: string }
  | { name: "generate-config"; serverName: string; output: string; dataDir: string; openRegistration: boolean }
  | { name: "check-config"; config: string }
  | { name: "register-user"; config: string; user: string; password: string; admin: boolean }
  | { name: "port-db"; config: string; toPostgres: string }
  | { name: "help" }
  | { name: "version" };

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
  if (positionals.length > 1) throw new UsageError(`unexpected argument: ${positionals[1]}`);
  const command = positionals[0] ?? "serve";
  const allowed: Record<string, string[]> = {
    serve: ["config", "worker-id"],
    "generate-config": ["server-name", "output", "data-dir", "enable-registration"],
    "check-config": ["config"],
    "register-user": ["config", "user", "password", "admin"],
    "port-db": ["config", "to-postgres"],
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
    default: {
      const workerId = v["worker-id"];
      if (workerId !== undefined && !WORKER_ID_PATTERN.test(workerId)) {
        throw new UsageError("--worker-id takes 1 to 40 letters, digits, dots, dashes or underscores");
      }
      return { name: "serve", config: v.config, workerId };
    }
  }
}
