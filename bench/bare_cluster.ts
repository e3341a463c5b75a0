/**
 * Benchmark child: the trivial yardstick for several processes. A bare node:http server that
 * answers every request with a whoami-shaped JSON body, run as `worker_processes` runs
 * Switchboard: one process for 1, else Node's cluster with N workers on one shared port.
 * Its process-count ratio is what this machine gives any Node server, so Switchboard's ratio
 * can be read against it rather than against the core count alone.
 *
 * Usage: node bare_cluster.js N PORT. Prints one JSON line `{"pids": [...]}` (parent first)
 * once every worker listens; SIGTERM stops it.
 */
import cluster from "node:cluster";
import http from "node:http";

const [processes, port] = process.argv.slice(2, 4).map(Number) as [number, number];
const BODY = Buffer.from(JSON.stringify({ user_id: "@bench:localhost", device_id: "BENCHDEVICE", is_guest: false }));

function serve(onListening: () => void): void {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json", "content-length": BODY.length });
    res.end(BODY);
  });
  server.listen(port, "127.0.0.1", onListening);
  process.on("SIGTERM", () => server.close(() => process.exit(0)));
}

if (processes <= 1) {
  serve(() => console.log(JSON.stringify({ pids: [process.pid] })));
} else if (cluster.isPrimary) {
  const pids: number[] = [];
  for (let i = 0; i < processes; i++) {
    const worker = cluster.fork();
    worker.once("listening", () => {
      pids.push(worker.process.pid!);
      if (pids.length === processes) console.log(JSON.stringify({ pids: [process.pid, ...pids] }));
    });
  }
  process.on("SIGTERM", () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.kill("SIGTERM");
    process.exit(0);
  });
} else {
  serve(() => undefined);
}
