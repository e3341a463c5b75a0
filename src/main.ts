#!/usr/bin/env node
/** The `switchboard` command: serve, generate-config, check-config, register-user, port-db, doctor. */
import cluster from "node:cluster";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseCommand, USAGE, UsageError, type Command } from "./cli/args.js";
import { compactHeap } from "./compact_heap.js";
import { READY_MESSAGE, superviseWorkers, WORKER_ID_ENV } from "./cli/supervisor.js";
import { ConfigError } from "./config/errors.js";
import { generateConfig } from "./config/generate.js";
import { loadConfigFile, parseConfig } from "./config/load.js";
import { MatrixError } from "./errors.js";
import { createHomeserver } from "./homeserver.js";
import { createLogger } from "./http/logging.js";
import { systemClock } from "./services/clock.js";
import { createServices } from "./services/index.js";
import { loadOrCreateSigningKey } from "./services/signing_key.js";
import { openStorage } from "./storage/open.js";

const EXIT_USAGE = 2;
const DEFAULT_CONFIG = "switchboard.yaml";

function version(): string {
  const pkg = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "package.json");
  return (JSON.parse(readFileSync(pkg, "utf8")) as { version: string }).version;
}

function writeNewConfig(file: string, text: string): void {
  parseConfig(text, path.resolve(file)); // never write a file that would not load
  mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  writeFileSync(file, text, { flag: "wx", mode: 0o600 });
}

/**
 * Exits once the server has wound down. The log needs no waiting (its pending lines are written
 * when the process exits), but an immediate process.exit() would cut short anything else still
 * finishing. With intake stopped and storage closed the process ends by itself; the unref'd
 * timer only bounds a stray handle.
 */
function exitWhenDone(code: number): void {
  process.exitCode = code;
  setTimeout(() => process.exit(code), 3000).unref();
}

async function serve(configFile: string | undefined, workerIdArg: string | undefined): Promise<number> {
  const file = configFile ?? DEFAULT_CONFIG;
  if (configFile === undefined && !existsSync(file)) {
    writeNewConfig(file, generateConfig({ serverName: "localhost", dataDir: "data", openRegistration: true }));
    console.error(`No ${DEFAULT_CONFIG} here, so wrote a new one: ${path.resolve(file)}`);
  }
  const { config, warnings } = loadConfigFile(file);
  const logger = createLogger(config.logLevel);
  if (cluster.isPrimary && config.workerProcesses > 1) {
    // This process only starts and watches the ones that serve; they log for themselves.
    for (const w of warnings) logger.warn(w);
    return superviseWorkers(config.workerProcesses, workerIdArg ?? (hostname().split(".")[0] || "switchboard"), logger);
  }
  if (cluster.isPrimary) for (const w of warnings) logger.warn(w);
  const workerId = process.env[WORKER_ID_ENV] ?? workerIdArg;
  const server = await createHomeserver(config, logger, systemClock, {
    workerId,
    onClusterLost: (err) => {
      // Cut off from the other processes, this one's view of the streams is frozen: serving on
      // would answer stale. Exit at once; a supervisor (or the cluster parent) starts it again.
      logger.fatal({ err }, "lost the PostgreSQL connection that links this process to the others; exiting");
      process.exit(1);
    },
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "stopping: finishing in-flight requests");
    server.stop().then(
      () => {
        logger.info("stopped");
        exitWhenDone(0);
      },
      (err: unknown) => {
        logger.error({ err }, "error while stopping");
        exitWhenDone(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  const urls = await server.start();
  const compacted = compactHeap();
  if (compacted) {
    const mib = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;
    logger.debug({ heap_before_mib: mib(compacted.beforeBytes), heap_after_mib: mib(compacted.afterBytes), took_ms: Math.round(compacted.tookMs) }, "released what starting left on the heap");
  }
  logger.info({ server_name: config.serverName, listening: urls, config: config.configPath, worker: server.storage.cluster.workerId }, "Switchboard is running");
  if (cluster.isWorker) process.send?.(READY_MESSAGE);
  return -1; // keeps running until a signal
}

async function registerUser(cmd: Extract<Command, { name: "register-user" }>): Promise<void> {
  const { config } = loadConfigFile(cmd.config);
  const storage = await openStorage(config.database);
  try {
    // Creating a user signs nothing; the key is made when the server first starts.
    const services = createServices({
      config,
      storage,
      clock: systemClock,
      signingKey: () => loadOrCreateSigningKey(config.signingKeyPath),
      logger: createLogger(config.logLevel),
    });
    const result = await services.accounts.createUser(cmd.user, cmd.password, { admin: cmd.admin, login: false });
    console.log(`Created ${cmd.admin ? "admin " : ""}user ${result.user_id}`);
  } finally {
    await storage.close();
  }
}

/** Copies the config's SQLite database into PostgreSQL, then says what to change in the config. */
async function portDb(cmd: Extract<Command, { name: "port-db" }>): Promise<void> {
  const { config } = loadConfigFile(cmd.config);
  if (config.database.kind !== "sqlite") {
    throw new ConfigError([
      `\`database.name\` in ${cmd.config} is not sqlite3: port-db copies from SQLite, so --config names the config of the server that runs on SQLite`,
    ]);
  }
  // Loaded only for this command: it brings the PostgreSQL driver, which serving on SQLite never needs.
  const { databaseSection, portToPostgres } = await import("./storage/port/index.js");
  const report = await portToPostgres(config.database.path, cmd.toPostgres, (line) => console.log(line));
  const rows = report.tables.reduce((sum, t) => sum + t.rows, 0);
  const streams = Object.entries(report.streams).map(([s, p]) => `${s} ${p}`);
  const section = databaseSection(cmd.toPostgres);
  console.log(
    [
      `Copied ${rows} rows in ${report.tables.length} tables. Verified: every table has as many rows in PostgreSQL as in SQLite,`,
      `and every stream position is the same (${streams.join(", ")}).`,
      "",
      `To serve from PostgreSQL, replace the \`database:\` section of ${config.configPath ?? cmd.config} with this` +
        (section.includes("<password>") ? ", putting the real password in place of <password>:" : ":"),
      "",
      section,
      "",
      `Then start Switchboard. Keep ${report.sqlite} as a backup: nothing writes to it any more.`,
    ].join("\n"),
  );
}

async function run(argv: string[]): Promise<number> {
  const cmd = parseCommand(argv);
  switch (cmd.name) {
    case "help":
      console.log(USAGE);
      return 0;
    case "version":
      console.log(version());
      return 0;
    case "generate-config":
      if (existsSync(cmd.output)) throw new UsageError(`${cmd.output} already exists; not overwriting it`);
      writeNewConfig(cmd.output, generateConfig(cmd));
      console.log(`Wrote ${path.resolve(cmd.output)}`);
      return 0;
    case "check-config": {
      const { warnings } = loadConfigFile(cmd.config);
      for (const w of warnings) console.error(`warning: ${w}`);
      console.log(`${cmd.config}: OK`);
      return 0;
    }
    case "register-user":
      await registerUser(cmd);
      return 0;
    case "port-db":
      await portDb(cmd);
      return 0;
    case "doctor": {
      // Loaded only for this command: a serving process never holds the doctor's code.
      const { doctor } = await import("./cli/doctor/index.js");
      return doctor(cmd);
    }
    case "serve":
      return serve(cmd.config, cmd.workerId);
  }
}

const BAD_INPUT = new Set(["M_INVALID_USERNAME", "M_INVALID_PARAM", "M_BAD_JSON", "M_MISSING_PARAM", "M_WEAK_PASSWORD"]);

run(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      console.error(`switchboard: ${err.message}\n\n${USAGE}`);
      process.exit(EXIT_USAGE);
    }
    if (err instanceof ConfigError) {
      console.error(`switchboard: configuration error:\n  ${err.problems.join("\n  ")}`);
      process.exit(EXIT_USAGE);
    }
    if (err instanceof MatrixError) {
      console.error(`switchboard: ${err.errcode}: ${err.message}`);
      // A name or password the server would never accept is bad usage; a taken name is not.
      process.exit(BAD_INPUT.has(err.errcode) ? EXIT_USAGE : 1);
    }
    console.error(`switchboard: ${(err as Error).message ?? String(err)}`);
    process.exit(1);
  },
);
