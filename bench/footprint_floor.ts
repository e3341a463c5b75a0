/**
 * Footprint benchmark child: the floor under Switchboard's memory. It loads the libraries every
 * Switchboard process loads on a default config, and uses each once, as Switchboard does at start:
 * a YAML config parsed with `yaml` and checked (defaults filled in) with Ajv, a SQLite file in WAL mode
 * (better-sqlite3), and a Fastify server logging each request with pino, which answers
 * `/versions` and stores each `PUT` body in one transaction. What Switchboard's idle RSS is above
 * this process is what its own code and data cost; what this process is above a bare node:http
 * server is the price of the chosen stack.
 *
 * Prints its port on stdout; SIGTERM stops it. argv[2]: a directory for the database. Forked with
 * an IPC channel (bench/children.ts, as the send benchmark does), it speaks the benchmark's child
 * protocol instead: "ready" with its URL, CPU usage on request, and "stop".
 */
import { Ajv } from "ajv";
import Database from "better-sqlite3";
import Fastify from "fastify";
import path from "node:path";
import pino from "pino";
import { parse } from "yaml";
import { handleCommonMessages, type ReadyMessage } from "./protocol.js";

const dir = process.argv[2] ?? process.env.BENCH_FLOOR_DIR;
if (!dir) throw new Error("usage: footprint_floor.js DIR (or BENCH_FLOOR_DIR=DIR)");

const checkConfig = new Ajv({ allErrors: true, useDefaults: true }).compile<{ server_name: string; log_level: string }>({
  type: "object",
  required: ["server_name"],
  properties: { server_name: { type: "string" }, log_level: { type: "string", default: "info" } },
});
const config: unknown = parse("server_name: localhost\n");
if (!checkConfig(config)) throw new Error("the floor's config does not match its schema");

const db = new Database(path.join(dir, "floor.db"));
db.pragma("journal_mode = WAL");
db.pragma("synchronous = NORMAL");
db.exec("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, room_id TEXT NOT NULL, json TEXT NOT NULL)");
const insert = db.prepare("INSERT INTO events (room_id, json) VALUES (?, ?)");
const store = db.transaction((roomId: string, json: string) => insert.run(roomId, json).lastInsertRowid);

const app = Fastify({ loggerInstance: pino({ level: config.log_level }, pino.destination({ dest: "/dev/null", sync: true })) });
app.get("/_matrix/client/versions", async () => ({ versions: ["v1.16"] }));
app.put<{ Params: { roomId: string } }>("/_matrix/client/v3/rooms/:roomId/send/:type/:txnId", async (req) => {
  const id = store(req.params.roomId, JSON.stringify(req.body));
  return { event_id: `$${String(id).padStart(43, "0")}` };
});
await app.listen({ port: 0, host: "127.0.0.1" });
const address = app.server.address();
const port = typeof address === "object" && address ? address.port : address;
const stop = () => void app.close().then(() => process.exit(0));
if (process.send) {
  handleCommonMessages(stop);
  process.send({ type: "ready", url: `http://127.0.0.1:${port}` } satisfies ReadyMessage);
} else {
  console.log(port);
  process.on("SIGTERM", stop);
}
