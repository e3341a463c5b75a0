/** Reads a YAML config file, validates it against the schema and resolves it. */
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import path from "node:path";
import { LineCounter, parseDocument } from "yaml";
import { DEFAULT_SQLITE_CACHE_MIB, type Config, type DatabaseConfig, type RateLimitConfig } from "./config.js";
import { ConfigError, inFileOrder, Problems, type ConfigPath } from "./errors.js";
import { resolveFederation } from "./federation.js";
import { resolveLiveKit } from "./livekit.js";
import { resolveMedia } from "./media.js";
import { resolvePush } from "./push.js";
import { ConfigSchema, type RawConfig } from "./schema.js";
import { resolveExtraWellKnown, resolveTransports } from "./transports.js";
import { parseDuration, parseSize, Secret } from "./types.js";
import { lineInFile, schemaProblems, validateWithDefaults } from "./validate.js";

export interface LoadResult {
  config: Config;
  /** Things worth a log line at start, but not worth refusing to start. */
  warnings: string[];
}

export function loadConfigFile(file: string): LoadResult {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError([
      code === "ENOENT" ? `config file not found: ${file}` : `cannot read config file ${file}: ${(err as Error).message}`,
    ]);
  }
  return parseConfig(text, path.resolve(file));
}

export function parseConfig(text: string, configPath?: string): LoadResult {
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, uniqueKeys: true, prettyErrors: false });
  const where = configPath ?? "config";
  if (doc.errors.length) {
    throw new ConfigError(
      doc.errors.map((e) => `${where}: line ${e.linePos?.[0]?.line ?? counter.linePos(e.pos[0]).line}: YAML syntax error: ${e.message.split("\n")[0]}`),
    );
  }
  const raw: unknown = doc.toJS() ?? {};
  if (typeof raw !== "object" || Array.isArray(raw) || raw === null) {
    throw new ConfigError([`${where}: the file must be a YAML mapping of keys to values`]);
  }
  const { value: withDefaults, errors } = validateWithDefaults(ConfigSchema, raw);
  const problems = schemaProblems(ConfigSchema, withDefaults, errors, doc, counter);
  if (problems.length) throw new ConfigError(problems.map((p) => `${where}: ${p}`));
  const warnings: string[] = [];
  const config = resolve(withDefaults as RawConfig, configPath, warnings, (at) => lineInFile(doc, counter, at));
  return { config, warnings };
}

/** Builds a config from a plain object, as tests and tools do. */
export function configFromObject(raw: Record<string, unknown>, configPath?: string): LoadResult {
  const { value: withDefaults, errors } = validateWithDefaults(ConfigSchema, raw);
  const problems = schemaProblems(ConfigSchema, withDefaults, errors, undefined, undefined);
  if (problems.length) throw new ConfigError(problems);
  const warnings: string[] = [];
  return { config: resolve(withDefaults as RawConfig, configPath, warnings), warnings };
}

function rate(r: { per_second: number; burst_count: number }): RateLimitConfig {
  return { per_second: r.per_second, burst_count: r.burst_count };
}

/** Refuses the config over the problems found while resolving it, each with its line when known. */
function refuse(problems: Problems, configPath: string | undefined, lineOf: (at: ConfigPath) => number | undefined): never {
  const where = configPath ? `${configPath}: ` : "";
  const located = problems.found.map((p) => ({ line: lineOf(p.path), text: p.text }));
  throw new ConfigError(inFileOrder(located).map((p) => where + p));
}

function resolve(
  raw: RawConfig,
  configPath: string | undefined,
  warnings: string[],
  lineOf: (at: ConfigPath) => number | undefined = () => undefined,
): Config {
  const problems = new Problems();
  const baseDir = configPath ? path.dirname(configPath) : process.cwd();
  const fromBase = (p: string) => path.resolve(baseDir, p);

  let database: DatabaseConfig;
  if (raw.database.name === "sqlite3") {
    database = {
      kind: "sqlite",
      path: fromBase(raw.database.args.database ?? "data/homeserver.db"),
      synchronous: raw.database.args.synchronous ?? "normal",
      cacheMib: raw.database.args.cache_size_mib ?? DEFAULT_SQLITE_CACHE_MIB,
    };
  } else {
    const a = raw.database.args;
    if (a.synchronous !== undefined) {
      problems.add(["database", "args", "synchronous"], "`database.args.synchronous` is for SQLite; PostgreSQL's durability is its own `synchronous_commit` setting");
    }
    if (a.cache_size_mib !== undefined) {
      problems.add(["database", "args", "cache_size_mib"], "`database.args.cache_size_mib` is for SQLite; PostgreSQL's cache is its own `shared_buffers` setting");
    }
    if (a.database !== undefined && a.dbname !== undefined && a.database !== a.dbname) {
      problems.add(["database", "args", "dbname"], "`database.args.database` and `database.args.dbname` name different databases; keep one");
    }
    const poolMax = a.cp_max ?? 10;
    const poolMin = Math.min(a.cp_min ?? 1, poolMax);
    if (a.cp_min !== undefined && a.cp_min > poolMax) {
      problems.add(["database", "args", "cp_min"], `\`database.args.cp_min\` (${a.cp_min}) is more than \`cp_max\` (${poolMax})`);
    }
    database = {
      kind: "postgres",
      dsn: a.dsn === undefined ? undefined : new Secret(a.dsn),
      user: a.user,
      password: a.password === undefined ? undefined : new Secret(a.password),
      host: a.host,
      port: a.port,
      database: a.database ?? a.dbname,
      sslmode: a.sslmode,
      sslrootcert: a.sslrootcert === undefined ? undefined : fromBase(a.sslrootcert),
      poolMin,
      poolMax,
    };
  }

  const workerProcesses = raw.worker_processes === "auto" ? availableParallelism() : raw.worker_processes;
  if (database.kind === "sqlite" && workerProcesses > 1) {
    problems.add(
      ["worker_processes"],
      `\`worker_processes\` is ${raw.worker_processes === "auto" ? `auto (${workerProcesses} cores)` : workerProcesses}, but SQLite serves one process: several processes need PostgreSQL (see docs/workers.md and docs/postgresql.md)`,
    );
  }

  if (raw.enable_registration && !raw.enable_registration_without_verification && !raw.registration_requires_token) {
    problems.add(
      ["enable_registration"],
      "`enable_registration` is true, but nothing verifies who registers: set `enable_registration_without_verification: true` to accept open registration, or `registration_requires_token: true`",
    );
  }
  if (raw.turn_shared_secret && (raw.turn_username || raw.turn_password)) {
    problems.add(["turn_shared_secret"], "`turn_shared_secret` and `turn_username`/`turn_password` exclude each other: use one or the other");
  }
  if (Boolean(raw.turn_username) !== Boolean(raw.turn_password)) {
    problems.add([raw.turn_username ? "turn_username" : "turn_password"], "`turn_username` and `turn_password` go together: set both or neither");
  }

  const transports = resolveTransports(raw.matrix_rtc.transports, problems, warnings);
  const extraWellKnown = resolveExtraWellKnown(raw.extra_well_known_client_content, problems, warnings);
  const livekit = resolveLiveKit(raw, fromBase, problems, warnings);
  const media = resolveMedia(raw, fromBase, problems);
  const { outbound, push } = resolvePush(raw, problems);
  const federation = resolveFederation(raw, fromBase, problems);
  if (!problems.empty) refuse(problems, configPath, lineOf);

  let publicBaseUrl = raw.public_baseurl ?? `https://${raw.server_name}/`;
  if (!publicBaseUrl.endsWith("/")) publicBaseUrl += "/";

  return {
    configPath,
    serverName: raw.server_name,
    publicBaseUrl,
    listeners: raw.listeners.map((l) => ({
      port: l.port,
      bindAddresses: l.bind_addresses,
      xForwarded: l.x_forwarded,
      resources: new Set(l.resources.flatMap((r) => r.names)),
    })),
    serveServerWellKnown: raw.serve_server_wellknown,
    extraWellKnownClientContent: extraWellKnown,
    maxRequestBodyBytes: parseSize(raw.max_request_body_size),
    defaultRoomVersion: String(raw.default_room_version),
    logLevel: raw.log_level,
    database,
    workerProcesses,
    signingKeyPath: fromBase(raw.signing_key_path ?? `data/${raw.server_name.replace(/[^A-Za-z0-9.-]/g, "_")}.signing.key`),
    registration: {
      enabled: raw.enable_registration,
      requiresToken: raw.registration_requires_token,
      sharedSecret: raw.registration_shared_secret === undefined ? undefined : new Secret(raw.registration_shared_secret),
      allowGuests: raw.allow_guest_access,
    },
    rateLimits: {
      message: rate(raw.rc_message),
      loginAddress: rate(raw.rc_login.address),
      loginAccount: rate(raw.rc_login.account),
      loginFailedAttempts: rate(raw.rc_login.failed_attempts),
      registration: rate(raw.rc_registration),
      delayedEventMgmt: rate(raw.rc_delayed_event_mgmt),
      rtcTransports: rate(raw.rc_rtc_transports),
      mediaCreate: rate(raw.rc_media_create),
    },
    delayedEvents: {
      enabled: raw.experimental_features.msc4140_enabled,
      maxDelayMs: parseDuration(raw.max_event_delay_duration),
      maxPerUser: raw.experimental_features.msc4140_max_delayed_events_per_user,
    },
    features: {
      msc4143: raw.experimental_features.msc4143_enabled,
      msc4354: raw.experimental_features.msc4354_enabled,
      msc4075CallRules: raw.experimental_features.msc4075_call_rules,
    },
    matrixRtc: { transports, advertiseInWellKnown: raw.matrix_rtc.advertise_in_well_known },
    livekit,
    media,
    outbound,
    push,
    federation,
    turn: {
      uris: raw.turn_uris,
      sharedSecret: raw.turn_shared_secret === undefined ? undefined : new Secret(raw.turn_shared_secret),
      username: raw.turn_username,
      password: raw.turn_password === undefined ? undefined : new Secret(raw.turn_password),
      lifetimeMs: parseDuration(raw.turn_user_lifetime),
      allowGuests: raw.turn_allow_guests,
    },
  };
}
